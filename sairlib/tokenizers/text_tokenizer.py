"""Text tokenizer: one closed vocabulary of special tokens, image codes and world words.

The vocabulary is laid out as

* ids ``0 .. 15``: :data:`SPECIAL_TOKENS` (``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``,
  ``<boi>``/``<eoi>`` around an image span, then segment tags);
* one contiguous block of image code tokens ``<img_0> .. <img_{n-1}>``;
* the sorted distinct words of the world grammar.

Text is split on whitespace only (punctuation is written as separate words) and
every piece must be a vocabulary word; decoding joins tokens with single spaces,
so ``decode(encode(text)) == text`` for text with single spaces between known words.

Usage::

    from sairlib.tokenizers import build_tokenizer, codes_to_ids, encode_strict, special_id

    tok = build_tokenizer(words, n_image_codes=codec.codebook_size)
    ids = [special_id(tok, "<bos>")] + encode_strict(tok, "draw a red circle .")
    ids += [special_id(tok, "<boi>")] + codes_to_ids(tok, codes) + [special_id(tok, "<eoi>")]
    tok.decode(ids, skip_special_tokens=True)     # "draw a red circle ."
    tok.save_pretrained("outputs/tokenizer")      # AutoTokenizer.from_pretrained loads it back

No BOS/EOS is added by ``tok(text)`` / ``tok.encode(text)``; callers add them.
The tokenizer itself maps unknown words to ``<unk>``; :func:`encode_strict` raises
instead and is what data pipelines should use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import overload

import numpy as np
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "SPECIAL_TOKENS",
    "build_tokenizer",
    "codes_to_ids",
    "encode_strict",
    "ids_to_codes",
    "image_code_range",
    "image_token",
    "special_id",
]

SPECIAL_TOKENS: list[str] = [
    "<pad>",
    "<unk>",
    "<bos>",
    "<eos>",
    "<boi>",
    "<eoi>",
    "<user>",
    "<assistant>",
    "<eval>",
    "</eval>",
    "<reflect>",
    "</reflect>",
    "<step>",
    "</step>",
    "<describe>",
    "</describe>",
]
"""Special tokens, in id order (``<pad>`` is id 0)."""

_IMAGE_TOKEN = "<img_{}>"
# A word may not look like a tag ("<...>") nor contain a special or image token, because
# special tokens are matched inside raw text before whitespace splitting.
_TAG_LIKE = re.compile(r"^<.+>$", re.DOTALL)
_RESERVED_INSIDE = re.compile(r"<img_\d+>|" + "|".join(re.escape(t) for t in SPECIAL_TOKENS))


def image_token(code: int) -> str:
    """Vocabulary string of image code ``code``, e.g. ``image_token(5) == "<img_5>"``."""
    return _IMAGE_TOKEN.format(int(code))


def _check_word(word: object) -> str:
    if not isinstance(word, str):
        raise TypeError(f"words must be strings, got {type(word).__name__}: {word!r}")
    if word == "":
        raise ValueError("words contains an empty string")
    if any(ch.isspace() for ch in word) or word.split() != [word]:
        raise ValueError(f"word {word!r} contains whitespace")
    if _TAG_LIKE.match(word) or _RESERVED_INSIDE.search(word):
        raise ValueError(f"word {word!r} looks like a special token (<...>); such strings are reserved")
    return word


def build_tokenizer(words: Iterable[str], n_image_codes: int) -> PreTrainedTokenizerFast:
    """Build the tokenizer for ``words`` (any order, duplicates allowed) and ``n_image_codes`` codes.

    Raises ``ValueError`` for an empty word, a word containing whitespace, a word that
    looks like a special token (``<...>`` or containing one), or ``n_image_codes <= 0``.
    """
    if isinstance(n_image_codes, bool) or not isinstance(n_image_codes, (int, np.integer)):
        raise TypeError(f"n_image_codes must be an int, got {type(n_image_codes).__name__}")
    if n_image_codes <= 0:
        raise ValueError(f"n_image_codes must be > 0, got {n_image_codes}")
    if isinstance(words, str):
        raise TypeError("words must be an iterable of words, not a single string")
    vocab_words = sorted({_check_word(w) for w in words})

    image_tokens = [image_token(i) for i in range(int(n_image_codes))]
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *image_tokens, *vocab_words]:
        vocab[token] = len(vocab)

    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    # No decoder on purpose: without one, `tokenizers` joins tokens with single spaces.
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in [*SPECIAL_TOKENS, *image_tokens]]
    )
    named = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}
    extra = [t for t in SPECIAL_TOKENS if t not in named.values()] + image_tokens
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        extra_special_tokens=extra,
        clean_up_tokenization_spaces=False,
        add_bos_token=False,
        add_eos_token=False,
        model_input_names=["input_ids", "attention_mask"],
        **named,
    )


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """Id of ``token`` in the vocabulary, or None (never ``<unk>``'s id as a fallback)."""
    return tokenizer.backend_tokenizer.token_to_id(token)


def image_code_range(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """``(first, end)``: image code ``c`` has token id ``first + c`` for ``0 <= c < end - first``.

    Read from the tokenizer's vocabulary (so it survives save/load) with a logarithmic
    number of look-ups; raises ``ValueError`` if the tokenizer has no ``<img_0>``.
    """
    first = _token_id(tokenizer, image_token(0))
    if first is None:
        raise ValueError(f"tokenizer has no image code tokens ({image_token(0)} is not in its vocabulary)")

    def in_block(code: int) -> bool:
        return _token_id(tokenizer, image_token(code)) == first + code

    # Codes are contiguous, so in_block is true exactly on [0, n): find n.
    lo, hi = 1, 1  # in_block(lo - 1) is true
    while in_block(hi):
        lo, hi = hi + 1, hi * 2
    while lo < hi:  # in_block(lo - 1) true, in_block(hi) false
        mid = (lo + hi) // 2
        if in_block(mid):
            lo = mid + 1
        else:
            hi = mid
    return first, first + lo


def _as_int_array(name: str, values: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


@overload
def codes_to_ids(tokenizer: PreTrainedTokenizerBase, codes: np.ndarray) -> np.ndarray: ...
@overload
def codes_to_ids(tokenizer: PreTrainedTokenizerBase, codes: Sequence[int]) -> list[int]: ...
def codes_to_ids(tokenizer: PreTrainedTokenizerBase, codes: Sequence[int] | np.ndarray) -> list[int] | np.ndarray:
    """Token ids of image ``codes`` (an int64 array of the same shape for an array, else a list)."""
    first, end = image_code_range(tokenizer)
    arr = _as_int_array("codes", codes)
    bad = (arr < 0) | (arr >= end - first)
    if bad.any():
        raise ValueError(f"image code {arr[bad].flat[0]} is out of range [0, {end - first})")
    ids = arr + first
    return ids if isinstance(codes, np.ndarray) else ids.tolist()


@overload
def ids_to_codes(tokenizer: PreTrainedTokenizerBase, ids: np.ndarray) -> np.ndarray: ...
@overload
def ids_to_codes(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[int]: ...
def ids_to_codes(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int] | np.ndarray) -> list[int] | np.ndarray:
    """Image codes of token ``ids``; ``ValueError`` naming the first id that is not an image code."""
    first, end = image_code_range(tokenizer)
    arr = _as_int_array("ids", ids)
    bad = (arr < first) | (arr >= end)
    if bad.any():
        value = int(arr[bad].flat[0])
        token = tokenizer.backend_tokenizer.id_to_token(value) if value >= 0 else None
        raise ValueError(f"token id {value} ({token!r}) is not an image code; image codes are ids [{first}, {end})")
    codes = arr - first
    return codes if isinstance(ids, np.ndarray) else codes.tolist()


def encode_strict(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` (no BOS/EOS added); ``ValueError`` naming the first unknown word.

    Same ids as ``tokenizer.encode(text, add_special_tokens=False)`` whenever every word
    is in the vocabulary (a literal ``<unk>`` in the text is allowed).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    unk_id = _token_id(tokenizer, "<unk>")
    encoding = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
        piece = text[start:end]
        if token_id == unk_id and piece != "<unk>":
            raise ValueError(f"unknown word {piece!r} at character {start} of text {text!r}")
    return list(encoding.ids)


def special_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """Id of special token ``token`` (one of :data:`SPECIAL_TOKENS`)."""
    if token not in SPECIAL_TOKENS:
        raise ValueError(f"{token!r} is not a special token; expected one of {SPECIAL_TOKENS}")
    token_id = _token_id(tokenizer, token)
    if token_id is None:
        raise ValueError(f"special token {token!r} is not in the tokenizer's vocabulary")
    return token_id
