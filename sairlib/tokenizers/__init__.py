"""Tokenizers of the unified model: an image VQ codec and a closed-vocabulary text tokenizer.

Usage::

    from sairlib.tokenizers import ImageCodec, build_tokenizer, codes_to_ids, encode_strict

    codec = ImageCodec.fit(images, patch_size=8, codebook_size=512)
    tok = build_tokenizer(words, n_image_codes=codec.codebook_size)
    ids = encode_strict(tok, "draw a red circle .") + codes_to_ids(tok, codec.encode(image).tolist())

See :mod:`sairlib.tokenizers.image_codec` and :mod:`sairlib.tokenizers.text_tokenizer`.
"""

from sairlib.tokenizers.image_codec import ImageCodec
from sairlib.tokenizers.text_tokenizer import (
    SPECIAL_TOKENS,
    build_tokenizer,
    codes_to_ids,
    encode_strict,
    ids_to_codes,
    image_code_range,
    image_token,
    special_id,
)

__all__ = [
    "SPECIAL_TOKENS",
    "ImageCodec",
    "build_tokenizer",
    "codes_to_ids",
    "encode_strict",
    "ids_to_codes",
    "image_code_range",
    "image_token",
    "special_id",
]
