"""Padding-free packing (hparam ``packing``) gives the padded batches' loss and gradients exactly.

A packed batch is one row: the sequences back to back, ``position_ids`` restarting at 0 for each,
no attention mask, -100 on each sequence's first label. Each test compares it with the padded path
on the same sequences and weights, so a leak between sequences or a moved label fails it:

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_packing.py
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import LlamaForCausalLM, LlamaModel
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

import sairlib.training as training
from sairlib.masking import IGNORE
from sairlib.policy import Policy, model_config
from sairlib.pretrain import pretrain_examples
from sairlib.sft import SFTJob, build_trainer, check_sft, launch_sft, sft_config
from sairlib.training import (PACK_MULTIPLE_CUDA, PAD_MULTIPLE_CUDA, PackedCollator, check_hparams,
                              check_packable, lm_collator, pack_multiple, pad_multiple, train_lm,
                              training_arguments, training_attention)
from sairlib.world import WorldAnalyzer, WorldConfig
from sairlib.world_setup import build_tokenizers
from sft_examples import reference_sft_dataset

CODEC, TOK, _ = build_tokenizers(WorldConfig(), 16, 64, 20, 10, 0)
SIZE = {"hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "max_len": 1024}

# check_packable's warning that SDPA packing may be slower is tested once, below
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:packing with sdpa")]


def tiny_model(attn: str = "sdpa", seed: int = 0) -> LlamaForCausalLM:
    """The policy's architecture (sairlib.policy.model_config), random, with attention ``attn``."""
    torch.manual_seed(seed)
    cfg = model_config(TOK, SIZE)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg)


def tiny_policy(seed: int = 0) -> Policy:
    return Policy.create(TOK, CODEC, SIZE, seed=seed)


@pytest.fixture(scope="module")
def sft_ds() -> Dataset:
    """Selectively masked SFT examples of several lengths (prompt and tool output carry -100)."""
    return reference_sft_dataset(3, tiny_policy().layout, CODEC)


def four_rows(ds: Dataset) -> list[dict[str, list[int]]]:
    """Four rows of different lengths, each with masked and unmasked labels; the second row's
    first label is made a real target, which neither path may train (nothing precedes it)."""
    by_len = sorted(range(len(ds)), key=lambda i: len(ds[i]["input_ids"]))
    pick = [by_len[0], by_len[len(by_len) // 3], by_len[2 * len(by_len) // 3], by_len[-1]]
    rows = [{"input_ids": list(ds[i]["input_ids"]), "labels": list(ds[i]["labels"])} for i in pick]
    rows[1]["labels"][0] = rows[1]["input_ids"][0]
    assert len({len(r["input_ids"]) for r in rows}) == 4
    assert all(IGNORE in r["labels"] and any(lab != IGNORE for lab in r["labels"]) for r in rows)
    return rows


def loss_and_grads(model: LlamaForCausalLM, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own loss (mean over the labelled, shifted tokens) and the flat gradient."""
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) or k.startswith("max_length")}
    loss = model(**inputs, use_cache=False).loss  # as in training: the Trainer and TRL turn the cache off
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


def targets(batch: dict) -> int:
    """What the Trainer divides the summed loss by (``num_items_in_batch``): labels after the shift."""
    return int(batch["labels"][..., 1:].ne(IGNORE).sum())


def trl_collator(packing: bool, pad_to: int | None = None) -> DataCollatorForLanguageModeling:
    """TRL's SFT collator as ``sairlib.sft.build_trainer`` gets it (``pad_to``: the CUDA multiple)."""
    return DataCollatorForLanguageModeling(pad_token_id=TOK.pad_token_id, padding_free=packing,
                                           pad_to_multiple_of=pad_to)


COLLATORS = {
    # pretraining (sairlib.training.train_lm): DataCollatorForSeq2Seq vs DataCollatorWithFlattening
    "pretrain": lambda packing: lm_collator(TOK, packing),
    # pretraining on CUDA: the packed row's tail padded to FlexAttention's block by one sequence of pads
    "pretrain_pack128": lambda packing: (PackedCollator(TOK.pad_token_id, PACK_MULTIPLE_CUDA) if packing
                                         else lm_collator(TOK, False)),
    # SFT (TRL): padded vs padding_free, on CPU and with the CUDA pad multiple (the packed row's tail)
    "sft": lambda packing: trl_collator(packing),
    "sft_pad64": lambda packing: trl_collator(packing, PAD_MULTIPLE_CUDA),
}


@pytest.mark.parametrize("kind", list(COLLATORS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_has_the_padded_loss_and_gradients(sft_ds, attn, kind):
    rows = four_rows(sft_ds)
    padded, packed = COLLATORS[kind](False)(rows), COLLATORS[kind](True)(rows)
    assert padded["input_ids"].shape[0] == 4 and "attention_mask" in padded
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    n = sum(len(r["input_ids"]) for r in rows)
    # the labels are the rows' own, with -100 on each sequence's first token (and on any tail padding)
    want = [lab for r in rows for lab in [IGNORE] + r["labels"][1:]]
    assert packed["labels"][0, :n].tolist() == want and packed["labels"][0, n:].eq(IGNORE).all()
    starts = np.cumsum([0] + [len(r["input_ids"]) for r in rows[:-1]]).tolist()
    assert [i for i, p in enumerate(packed["position_ids"][0, :n].tolist()) if p == 0] == starts
    assert targets(packed) == targets(padded)  # same normalisation under the Trainer's num_items_in_batch
    if kind == "pretrain_pack128":
        assert packed["input_ids"].shape[1] % PACK_MULTIPLE_CUDA == 0 and packed["input_ids"].shape[1] > n
        assert packed["position_ids"][0, n:].tolist() == list(range(packed["input_ids"].shape[1] - n))

    model = tiny_model(attn)
    want_loss, want_grad = loss_and_grads(model, padded)
    got_loss, got_grad = loss_and_grads(model, packed)
    assert abs(got_loss - want_loss) < 1e-5
    assert torch.allclose(got_grad, want_grad, rtol=0, atol=1e-5), (got_grad - want_grad).abs().max()
    assert want_grad.abs().max() > 1e-3  # the comparison is not between zeros

    # the comparison can fail: the same row as one causal sequence (no restarts) leaks across rows
    leaky = {"input_ids": packed["input_ids"], "labels": packed["labels"]}
    leaky_loss, leaky_grad = loss_and_grads(model, leaky)
    assert abs(leaky_loss - want_loss) > 1e-4 and (leaky_grad - want_grad).abs().max() > 1e-4


def test_a_kv_cache_would_join_packed_sequences(sft_ds):
    """Why training must run without a cache: transformers looks for packed sequences in the
    position_ids only when there is neither an attention mask nor a cache."""
    rows = four_rows(sft_ds)
    model = tiny_model("sdpa")
    padded, packed = lm_collator(TOK, False)(rows), lm_collator(TOK, True)(rows)
    with torch.no_grad():
        want = model(**padded, use_cache=False).loss
        assert abs(model(**packed, use_cache=False).loss - want) < 1e-5
        assert abs(model(**packed, use_cache=True).loss - want) > 1e-4


def test_sft_job_with_packing_trains_like_the_padded_job(sft_ds, tmp_path, monkeypatch):
    base = str(tiny_policy().save(tmp_path / "base"))
    sft_ds.select(range(8)).save_to_disk(str(tmp_path / "train"))  # two full batches a epoch
    h = {"batch_size": 4, "lr": 0.01, "max_steps": 3, "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0}
    seen = []  # the shape of every batch the backbone gets (TRL's fused head calls it directly)
    fwd = LlamaModel.forward
    monkeypatch.setattr(LlamaModel, "forward",
                        lambda self, *a, **kw: seen.append(tuple(kw["input_ids"].shape)) or fwd(self, *a, **kw))
    runs = {}
    for packing in (False, True):
        seen.clear()
        job = SFTJob(base_dir=base, train_dir=str(tmp_path / "train"), model_dir=str(tmp_path / f"{packing}" / "m"),
                     output_dir=str(tmp_path / f"{packing}" / "ckpt"), hparams={**h, "packing": packing}, seed=3)
        runs[packing] = [x["loss"] for x in launch_sft(job).losses]
        assert [s[0] for s in seen] == [1 if packing else 4] * 3, seen
    assert len(runs[True]) == 3
    assert abs(runs[True][0] - runs[False][0]) < 1e-4
    assert runs[True] == pytest.approx(runs[False], rel=1e-3)  # the same updates, up to float order


def test_pretraining_with_packing_trains_like_padded(tmp_path, monkeypatch):
    layout = tiny_policy().layout
    ex = pretrain_examples(layout, CODEC, WorldAnalyzer(), 24, {"t2i": 1, "edit": 1, "evaluate": 1}, seed=0)
    ds = Dataset.from_list(ex)
    assert len({len(e["input_ids"]) for e in ex}) > 3
    h = {"batch_size": 8, "lr": 0.01, "max_steps": 3, "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0}
    shapes = []

    def spy(tokenizer, packing=False):
        collate = lm_collator(tokenizer, packing)
        return lambda feats: (lambda b: shapes.append((tuple(b["input_ids"].shape), "position_ids" in b)) or b)(
            collate(feats))

    monkeypatch.setattr(training, "lm_collator", spy)
    # collate in this process, where the spy records (CUDA runs collate in 4 worker processes)
    monkeypatch.setattr(training, "loader_workers", lambda: 0)
    losses = {}
    for packing in (False, True):
        shapes.clear()
        model = tiny_policy().model
        assert model.config.use_cache  # the Trainer turns it off; train_lm checks that it did
        hist = train_lm(model, TOK, ds, None, {**h, "packing": packing}, tmp_path / f"{packing}", seed=0)
        losses[packing] = [x["loss"] for x in hist if "loss" in x]
        assert shapes and all(s[0][0] == (1 if packing else 8) and s[1] == packing for s in shapes)
    assert abs(losses[True][0] - losses[False][0]) < 1e-4
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_packing_is_a_checked_bool_and_sets_only_padding_free(tmp_path):
    assert check_hparams({"packing": True}) and check_sft({"packing": False}) == {"packing": False}
    with pytest.raises(ValueError, match="train.packing"):
        check_hparams({"packing": 1})
    with pytest.raises(ValueError, match="sft.packing"):
        check_sft({"packing": "yes"})
    on, off = sft_config({"packing": True}, tmp_path, 0), sft_config({}, tmp_path, 0)
    assert on.padding_free and not off.padding_free
    assert not on.packing and on.max_length is None  # never cut or regrouped into blocks
    model = tiny_model()
    with pytest.warns(UserWarning, match="dense block-diagonal mask"):
        check_packable(model)
    one = Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[1, 2]]})
    with pytest.warns(UserWarning, match="packing with sdpa"):
        collator = build_trainer(model, TOK, one, None, {"packing": True}, tmp_path, 0).data_collator
    assert isinstance(collator, DataCollatorForLanguageModeling) and collator.padding_free  # what test 1 uses
    assert collator.pad_to_multiple_of == pack_multiple()  # FlexAttention's block on CUDA, none on CPU
    assert sft_config({}, tmp_path, 0).pad_to_multiple_of == pad_multiple()
    model.config._attn_implementation = "some_kernel"
    with pytest.raises(ValueError, match="packing: attention 'some_kernel'"):
        check_packable(model)
    with pytest.raises(ValueError, match="packing: attention"):
        build_trainer(model, TOK, one, None, {"packing": True}, tmp_path, 0)


def doc_causal(position_ids: torch.Tensor) -> torch.Tensor:
    """The mask packed rows must get: causal within each run of positions that counts up from 0."""
    doc = (position_ids[0] == 0).cumsum(0)
    q = torch.arange(len(doc))
    return (doc[:, None] == doc[None, :]) & (q[:, None] >= q[None, :])


def test_flex_attention_keeps_padded_packed_sequences_apart(sft_ds):
    """The attention packed CUDA runs train under: transformers' FlexAttention mask of a packed row
    whose tail was padded to the block size is exactly the per-sequence causal mask, token by token
    (its mask function over every query/key pair) and block by block (blocks of two sequences are skipped)."""
    from transformers.masking_utils import create_causal_mask

    packed = PackedCollator(TOK.pad_token_id, PACK_MULTIPLE_CUDA)(four_rows(sft_ds))
    model = tiny_model("flex_attention")
    with torch.no_grad():
        mask = create_causal_mask(model.config, model.model.embed_tokens(packed["input_ids"]), None, None,
                                  position_ids=packed["position_ids"])
    n = packed["input_ids"].shape[1]
    q = torch.arange(n)
    zero = torch.zeros((), dtype=torch.long)
    got = mask.mask_mod(zero, zero, q[:, None], q[None, :])
    want = doc_causal(packed["position_ids"])
    assert got.shape == (n, n) and torch.equal(got, want)
    assert not torch.equal(want, q[:, None] >= q[None, :])  # the rows really are several sequences
    blocks = mask.to_dense()[0, 0].bool()  # which 128 x 128 blocks are computed at all
    per_block = want.reshape(n // 128, 128, n // 128, 128).any(3).any(1)
    assert torch.equal(blocks, per_block)


def test_packed_cuda_runs_train_under_flex_and_give_the_attention_back(monkeypatch):
    wide = LlamaForCausalLM(model_config(TOK, {**SIZE, "hidden": 64}))  # heads of 16, FlexAttention's least
    wide.config._attn_implementation = "sdpa"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with training_attention(wide, True) as used:  # CPU: FlexAttention has no backward there
        assert used == "sdpa" == wide.config._attn_implementation
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="stop"):
        with training_attention(wide, True) as used:
            assert used == "flex_attention" == wide.config._attn_implementation
            raise RuntimeError("stop")
    assert wide.config._attn_implementation == "sdpa"
    with training_attention(wide, False) as used:
        assert used == "sdpa"
    narrow = tiny_model("sdpa")  # heads of 8: FlexAttention's kernels refuse them
    with pytest.warns(UserWarning, match="head dimension 8 is below FlexAttention's 16"):
        with training_attention(narrow, True) as used:
            assert used == "sdpa" == narrow.config._attn_implementation


def test_compile_is_the_trainers_own_torch_compile(tmp_path):
    assert check_hparams({"compile": True, "packing": True})
    with pytest.raises(ValueError, match="train.compile"):
        check_hparams({"compile": "yes"})
    args = training_arguments({"compile": True}, tmp_path, 0)
    assert args.torch_compile and args.torch_compile_backend == "inductor"
    assert not training_arguments({}, tmp_path, 0).torch_compile
    assert sft_config({"compile": True}, tmp_path, 0).torch_compile  # SFT shares the trainer fields
