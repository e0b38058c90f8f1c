"""The policy: a transformers causal LM over the joint vocabulary, with its tokenizer, image codec
and token layout, saved and loaded as one folder.

    policy = Policy.create(tokenizer, codec, {"hidden": 128, "layers": 4, "heads": 4})
    policy.save("outputs/run/00_world/base")
    policy = Policy.load("outputs/run/00_world/base")

The architecture is Llama-style (``LlamaForCausalLM`` built from a config: RMSNorm, rotary
positions, SwiGLU, SDPA attention), sized by parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from .interfaces import X2IInput
from .sequence import Layout
from .tokenizers import ImageCodec

MODEL_KEYS = {"hidden": int, "layers": int, "heads": int, "kv_heads": int, "intermediate": int, "max_len": int}


def model_config(tokenizer: Any, size: dict[str, int]) -> LlamaConfig:
    """A Llama config for the joint vocabulary; ``size`` names hidden/layers/heads[/kv_heads/intermediate/max_len]."""
    unknown = set(size) - set(MODEL_KEYS)
    if unknown:
        raise ValueError(f"model.{sorted(unknown)[0]}: unknown key (known: {', '.join(MODEL_KEYS)})")
    for k in ("hidden", "layers", "heads"):
        if k not in size:
            raise ValueError(f"model.{k}: required")
    for k, v in size.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"model.{k}: must be a positive integer, got {v!r}")
    if size["hidden"] % size["heads"]:
        raise ValueError(f"model.heads: {size['heads']} must divide model.hidden={size['hidden']}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<bos>", "<eos>")}
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size["hidden"],
        intermediate_size=size.get("intermediate", 4 * size["hidden"]),
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size.get("kv_heads", size["heads"]),
        max_position_embeddings=size.get("max_len", 1024),
        pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"],
        tie_word_embeddings=False,
    )


@dataclass
class Policy:
    model: LlamaForCausalLM
    tokenizer: Any
    codec: ImageCodec
    layout: Layout

    @staticmethod
    def create(tokenizer: Any, codec: ImageCodec, size: dict[str, int], seed: int = 0) -> "Policy":
        torch.manual_seed(seed)
        cfg = model_config(tokenizer, size)
        cfg._attn_implementation = "sdpa"
        model = LlamaForCausalLM(cfg)
        return Policy(model, tokenizer, codec, Layout.from_tokenizer(tokenizer, codec.tokens_per_image))

    def prompt(self, x: X2IInput) -> list[int]:
        """The prompt ids of a request: its instruction and its input images, encoded by the codec."""
        return self.layout.prompt(x.instruction, [self.codec.encode(im) for im in x.images])

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(d)
        self.tokenizer.save_pretrained(d)
        self.codec.save(d / "codec")
        return d

    @staticmethod
    def load(directory: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Policy":
        d = Path(directory)
        if not (d / "config.json").is_file():
            raise FileNotFoundError(f"{d}: no saved policy here (config.json missing)")
        model = AutoModelForCausalLM.from_pretrained(d, attn_implementation="sdpa", dtype=dtype or torch.float32)
        if device is not None:
            model.to(device)
        tok = AutoTokenizer.from_pretrained(d)
        codec = ImageCodec.load(d / "codec")
        return Policy(model, tok, codec, Layout.from_tokenizer(tok, codec.tokens_per_image))


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
