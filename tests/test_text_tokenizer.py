"""Tests for sairlib.tokenizers.text_tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sairlib.tokenizers import (
    SPECIAL_TOKENS,
    build_tokenizer,
    codes_to_ids,
    encode_strict,
    ids_to_codes,
    image_code_range,
    image_token,
    special_id,
)

WORDS = (
    "draw a red green blue circle square triangle ; the is left right of above below . , "
    "yes no step 1 2 3 < > = ( ) 'quote' naïve"
).split()
N_CODES = 40
SENTENCE = "draw a red circle ; the red circle is left of the blue square ."


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return build_tokenizer(WORDS, N_CODES)


@pytest.fixture(scope="module")
def reloaded(tok: PreTrainedTokenizerFast, tmp_path_factory) -> dict[str, PreTrainedTokenizerFast]:
    directory = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(directory)
    return {
        "auto": AutoTokenizer.from_pretrained(directory),
        "fast": PreTrainedTokenizerFast.from_pretrained(directory),
    }


def test_vocabulary_layout(tok: PreTrainedTokenizerFast) -> None:
    vocab = tok.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(16))
    assert image_code_range(tok) == (16, 16 + N_CODES)
    assert [vocab[image_token(c)] for c in range(N_CODES)] == list(range(16, 16 + N_CODES))
    words = sorted(set(WORDS))
    assert [vocab[w] for w in words] == list(range(16 + N_CODES, 16 + N_CODES + len(words)))
    assert len(tok) == len(vocab) == 16 + N_CODES + len(words)
    assert (tok.pad_token, tok.unk_token, tok.bos_token, tok.eos_token) == ("<pad>", "<unk>", "<bos>", "<eos>")
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert [special_id(tok, t) for t in SPECIAL_TOKENS] == list(range(16))


def test_text_round_trip_and_no_automatic_bos_eos(tok: PreTrainedTokenizerFast) -> None:
    ids = tok.encode(SENTENCE)
    assert len(ids) == len(SENTENCE.split())
    assert tok(SENTENCE)["input_ids"] == ids
    assert tok.decode(ids) == SENTENCE
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids
    assert encode_strict(tok, SENTENCE) == ids
    # Extra whitespace is not significant: it normalises to single spaces.
    assert tok.decode(tok.encode("  draw\ta   red\n circle ")) == "draw a red circle"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(sorted(set(WORDS))), min_size=1, max_size=30))
def test_round_trip_property(tok: PreTrainedTokenizerFast, words: list[str]) -> None:
    text = " ".join(words)
    ids = encode_strict(tok, text)
    assert ids == tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text


def test_special_and_image_tokens_are_skipped(tok: PreTrainedTokenizerFast) -> None:
    ids = (
        [special_id(tok, "<bos>"), special_id(tok, "<user>")]
        + encode_strict(tok, "draw a red circle")
        + [special_id(tok, "<boi>")]
        + codes_to_ids(tok, [0, 7, N_CODES - 1])
        + [special_id(tok, "<eoi>"), special_id(tok, "<assistant>"), special_id(tok, "<reflect>")]
        + encode_strict(tok, "yes .")
        + [special_id(tok, "</reflect>"), special_id(tok, "<eos>"), special_id(tok, "<pad>")]
    )
    assert tok.decode(ids, skip_special_tokens=True) == "draw a red circle yes ."
    full = tok.decode(ids)
    assert "<img_7>" in full and "<boi>" in full
    every_special = list(range(16 + N_CODES))
    assert tok.decode(every_special, skip_special_tokens=True) == ""
    assert set(tok.all_special_ids) == set(every_special)


def test_text_with_tags_encodes_to_special_ids(tok: PreTrainedTokenizerFast) -> None:
    text = "<describe> a red circle </describe> <boi> <img_3> <img_39> <eoi>"
    ids = encode_strict(tok, text)
    assert ids[0] == special_id(tok, "<describe>") and ids[4] == special_id(tok, "</describe>")
    assert ids_to_codes(tok, ids[6:8]) == [3, 39]
    assert tok.decode(ids) == text


def test_codes_ids_conversions(tok: PreTrainedTokenizerFast) -> None:
    first, end = image_code_range(tok)
    assert codes_to_ids(tok, [0, 1, N_CODES - 1]) == [first, first + 1, end - 1]
    arr = np.array([[0, 5], [6, 39]])
    ids = codes_to_ids(tok, arr)
    assert isinstance(ids, np.ndarray) and ids.shape == (2, 2) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids_to_codes(tok, ids), arr)
    assert ids_to_codes(tok, [first, end - 1]) == [0, N_CODES - 1]
    assert tok.convert_ids_to_tokens(codes_to_ids(tok, [12])) == ["<img_12>"]
    assert codes_to_ids(tok, []) == []
    with pytest.raises(ValueError, match=f"image code {N_CODES} is out of range"):
        codes_to_ids(tok, [0, N_CODES])
    with pytest.raises(ValueError, match="image code -1"):
        codes_to_ids(tok, np.array([-1]))
    with pytest.raises(ValueError, match="integers"):
        codes_to_ids(tok, [0.5])
    word_id = tok.convert_tokens_to_ids("draw")
    with pytest.raises(ValueError, match=rf"token id {word_id} \('draw'\) is not an image code"):
        ids_to_codes(tok, [first, word_id])
    with pytest.raises(ValueError, match="token id 4 .*<boi>"):
        ids_to_codes(tok, [4])


def test_encode_strict_names_unknown_word(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="unknown word 'zebra'"):
        encode_strict(tok, "draw a zebra and a blue square")
    with pytest.raises(ValueError, match="unknown word 'Red'"):
        encode_strict(tok, "draw a Red circle")
    with pytest.raises(ValueError, match="unknown word 'ü'"):
        encode_strict(tok, "naïve ü")
    # The plain tokenizer maps the same text to <unk>; encode_strict never does.
    assert tok.unk_token_id in tok.encode("draw a zebra")
    assert encode_strict(tok, "draw <unk>") == [tok.convert_tokens_to_ids("draw"), tok.unk_token_id]
    assert encode_strict(tok, "") == []
    with pytest.raises(TypeError):
        encode_strict(tok, ["draw"])  # type: ignore[arg-type]


def test_special_id_errors(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="'<img_0>' is not a special token"):
        special_id(tok, "<img_0>")
    with pytest.raises(ValueError, match="'draw' is not a special token"):
        special_id(tok, "draw")


@pytest.mark.parametrize("kind", ["auto", "fast"])
def test_save_load_round_trip(tok: PreTrainedTokenizerFast, reloaded: dict, kind: str) -> None:
    other = reloaded[kind]
    assert other.get_vocab() == tok.get_vocab()
    assert image_code_range(other) == image_code_range(tok)
    text = "<user> draw a red circle <assistant> <boi> <img_1> <img_2> <eoi> yes ."
    assert other.encode(text) == tok.encode(text) == encode_strict(other, text)
    assert other.decode(other.encode(SENTENCE)) == SENTENCE
    assert codes_to_ids(other, [0, 39]) == codes_to_ids(tok, [0, 39])
    assert other.all_special_tokens == tok.all_special_tokens
    assert set(other.all_special_ids) == set(range(16 + N_CODES))
    assert [special_id(other, t) for t in SPECIAL_TOKENS] == list(range(16))
    assert (other.pad_token_id, other.unk_token_id, other.bos_token_id, other.eos_token_id) == (0, 1, 2, 3)
    assert other.decode(other.encode(text), skip_special_tokens=True) == "draw a red circle yes ."
    assert other.bos_token_id not in other.encode(SENTENCE)


def test_build_is_order_independent_and_deduplicates() -> None:
    a = build_tokenizer(["b", "a", "c", "a"], 3)
    b = build_tokenizer(iter(["c", "b", "a"]), 3)
    assert a.get_vocab() == b.get_vocab()
    assert [a.get_vocab()[w] for w in "abc"] == [19, 20, 21]


@pytest.mark.parametrize(
    "bad_word, message",
    [
        ("", "empty"),
        ("two words", "whitespace"),
        ("tab\tword", "whitespace"),
        ("new\nline", "whitespace"),
        ("<eos>", "special"),
        ("<img_3>", "special"),
        ("<my_tag>", "special"),
        ("pre<boi>", "special"),
        ("x<img_12>y", "special"),
    ],
)
def test_build_rejects_bad_words(bad_word: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_tokenizer(["draw", bad_word], 4)


def test_build_rejects_bad_arguments() -> None:
    for n in (0, -1):
        with pytest.raises(ValueError, match="n_image_codes"):
            build_tokenizer(["a"], n)
    with pytest.raises(TypeError, match="n_image_codes"):
        build_tokenizer(["a"], 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="words"):
        build_tokenizer("abc", 2)
    with pytest.raises(TypeError, match="strings"):
        build_tokenizer(["a", 3], 2)  # type: ignore[list-item]


def test_image_code_range_requires_image_tokens(tok: PreTrainedTokenizerFast) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")))
    with pytest.raises(ValueError, match="no image code tokens"):
        image_code_range(plain)
    big = build_tokenizer(["a"], 1000)
    assert image_code_range(big) == (16, 1016)
    assert image_code_range(build_tokenizer(["a"], 1)) == (16, 17)
