"""SFT with TRL: the loss is exactly the masked cross-entropy, jobs are deterministic, LoRA trains
the embeddings, and the ``accelerate launch`` path gives the in-process result.

    .venv/bin/pytest -q tests/test_sft.py            # add -m "not slow" to skip the subprocess run
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate.commands.config.config_args import load_config_from_file

from sairlib.masking import IGNORE
from sairlib.policy import Policy
from sairlib.sft import (ACCELERATE_DIR, SFTJob, accelerate_command, build_trainer, check_lora, check_sft,
                         launch_sft, launch_sft_all, sft_config)
from sairlib.world import WorldConfig
from sairlib.world_setup import build_tokenizers
from sft_examples import reference_sft_dataset
from state_dicts import distance

CODEC, TOK, _ = build_tokenizers(WorldConfig(), 16, 64, 20, 10, 0)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_policy(seed: int = 0) -> Policy:
    return Policy.create(TOK, CODEC, {"hidden": 32, "layers": 1, "heads": 2, "max_len": 1024}, seed=seed)


@pytest.fixture(scope="module")
def sft_ds():
    return reference_sft_dataset(4, tiny_policy().layout, CODEC)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return str(tiny_policy().save(tmp_path_factory.mktemp("base") / "base"))


def manual_ce(model, input_ids, attention_mask, labels) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)


def test_trainer_loss_is_cross_entropy_over_exactly_the_unmasked_positions(sft_ds, tmp_path):
    pol = tiny_policy()
    h = {"batch_size": len(sft_ds), "lr": 0.0, "max_steps": 1, "logging_steps": 1, "save_steps": 1000,
         "warmup_ratio": 0.0}
    trainer = build_trainer(pol.model, TOK, sft_ds, None, h, tmp_path, seed=0)
    # the trainer keeps our ids and labels as they are: no re-tokenization, truncation or re-masking
    assert trainer.train_dataset["input_ids"] == sft_ds["input_ids"]
    assert trainer.train_dataset["labels"] == sft_ds["labels"]
    batch = next(iter(trainer.get_train_dataloader()))
    by_len = {tuple(ids): lab for ids, lab in zip(sft_ds["input_ids"], sft_ds["labels"])}
    for ids, lab, am in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
        n = sum(am)
        assert lab[:n] == by_len[tuple(ids[:n])] and all(l == IGNORE for l in lab[n:])  # padding keeps labels

    pol.model.eval()
    want = manual_ce(pol.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    everything = batch["labels"].clone()
    everything[batch["attention_mask"] == 1] = batch["input_ids"][batch["attention_mask"] == 1]
    assert abs(want - manual_ce(pol.model, batch["input_ids"], batch["attention_mask"], everything)) > 1e-3
    got = trainer.compute_loss(trainer.model, dict(batch))
    assert torch.allclose(got.detach().float(), want, atol=1e-5)

    # the logged loss of a real (lr 0) training step over the whole set is the same number
    trainer.train()
    logged = [x["loss"] for x in trainer.state.log_history if "loss" in x]
    assert logged and abs(logged[0] - want.item()) < 2e-4


def test_job_is_deterministic_and_learns(sft_ds, base_dir, tmp_path):
    sft_ds.save_to_disk(str(tmp_path / "train"))
    h = {"batch_size": 4, "lr": 0.01, "epochs": 4.0, "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0}
    runs = []
    for k in ("a", "b"):
        job = SFTJob(base_dir=base_dir, train_dir=str(tmp_path / "train"), model_dir=str(tmp_path / k / "model"),
                     output_dir=str(tmp_path / k / "ckpt"), hparams=h, seed=3)
        runs.append(launch_sft(job))
    losses = [x["loss"] for x in runs[0].losses]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    a, b = (Policy.load(r.model_dir).model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = Policy.load(base_dir).model.state_dict()
    assert not torch.equal(a["lm_head.weight"], base["lm_head.weight"])


def test_lora_trains_new_token_rows_and_merges(sft_ds, base_dir, tmp_path):
    sft_ds.save_to_disk(str(tmp_path / "train"))
    job = SFTJob(base_dir=base_dir, train_dir=str(tmp_path / "train"), model_dir=str(tmp_path / "model"),
                 output_dir=str(tmp_path / "ckpt"), seed=0, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                 hparams={"batch_size": 4, "lr": 0.01, "max_steps": 3, "logging_steps": 1, "save_steps": 1000})
    run = launch_sft(job)
    base = Policy.load(base_dir)
    tuned = Policy.load(run.model_dir)  # a plain causal LM: the adapters are merged
    assert not any("lora" in k for k in tuned.model.state_dict())
    tags = [base.layout.open_tag["E"], base.layout.close_tag["E"], base.layout.boi, base.layout.eos]
    emb0, emb1 = base.model.get_input_embeddings().weight, tuned.model.get_input_embeddings().weight
    assert not torch.allclose(emb0[tags], emb1[tags])  # the segment tags' rows trained
    assert not torch.allclose(base.model.lm_head.weight[tags], tuned.model.lm_head.weight[tags])
    q0 = base.model.model.layers[0].self_attn.q_proj.weight
    q1 = tuned.model.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q0, q1)  # the merged adapter changed the projection


def test_config_does_not_touch_the_sequences_and_checks_keys(tmp_path):
    c = sft_config({"batch_size": 2}, tmp_path, seed=0)
    assert c.max_length is None and not c.packing and not c.padding_free
    assert not c.completion_only_loss and not c.assistant_only_loss
    assert c.bf16 == torch.cuda.is_available()
    with pytest.raises(ValueError, match="sft.lr"):
        check_sft({"lr": "fast"})
    with pytest.raises(ValueError, match="sft.epoch"):
        check_sft({"epoch": 1.0})
    with pytest.raises(ValueError, match="sft_lora.rank"):
        check_lora({"rank": 8})
    with pytest.raises(ValueError, match="train dataset"):
        build_trainer(tiny_policy().model, TOK, _NoLabels(), None, {}, tmp_path, 0)


class _NoLabels:
    column_names = ["input_ids"]


@pytest.mark.parametrize("gpus", [0, 4])
def test_accelerate_configs(monkeypatch, gpus):
    from sairlib import launch

    kinds = {p.stem: load_config_from_file(str(p)) for p in ACCELERATE_DIR.glob("*.yaml")}
    assert {k: v.distributed_type.value for k, v in kinds.items()} == {
        "single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP"}
    assert all(v.mixed_precision == "bf16" for v in kinds.values())
    monkeypatch.setattr(launch, "visible_gpus", lambda: gpus)
    cmd = accelerate_command("job.json", 4)
    if gpus:
        assert cmd[cmd.index("--config_file") + 1].endswith("multi_gpu.yaml")
        assert cmd[cmd.index("--num_processes") + 1] == "4"
    else:  # accelerate launches one process with --cpu: several CPU ranks go through torchrun
        assert cmd[2] == "torch.distributed.run" and cmd[cmd.index("--nproc_per_node") + 1] == "4"
    assert cmd[-2:] == ["sairlib.sft_launch", "job.json"]


@pytest.mark.slow
def test_twin_jobs_at_once_train_like_one_after_the_other(sft_ds, base_dir, tmp_path):
    """What notebook 03 does on one GPU (the masked run and its twin in two processes at once),
    here on CPU: each launched job gives the losses and updates it gives alone, in this process."""
    sft_ds.save_to_disk(str(tmp_path / "train"))
    h = {"batch_size": 4, "lr": 0.01, "max_steps": 4, "logging_steps": 1, "save_steps": 1000}
    mk = lambda k, seed: SFTJob(base_dir=base_dir, train_dir=str(tmp_path / "train"),
                                model_dir=str(tmp_path / k / "model"), output_dir=str(tmp_path / k / "ckpt"),
                                hparams=h, seed=seed)
    alone = launch_sft_all({"a": mk("a1", 1), "b": mk("b1", 2)}, concurrent=False)  # in this process
    together = launch_sft_all({"a": mk("a2", 1), "b": mk("b2", 2)}, concurrent=True)  # accelerate launch, at once
    base = Policy.load(base_dir).model.state_dict()
    for k in ("a", "b"):
        assert [x["loss"] for x in together[k].losses] == pytest.approx([x["loss"] for x in alone[k].losses], rel=1e-3)
        # Same data order, same updates; the processes differ only in float summation order (threads,
        # kernels), which Adam amplifies where gradients are near zero: compare the updates, not bits.
        x, y = (Policy.load(r[k].model_dir).model.state_dict() for r in (alone, together))
        moved, apart = distance(x, base), distance(x, y)
        assert moved > 0.1 and apart < 0.05 * moved
    assert alone["a"].losses != alone["b"].losses  # the seeds matter, so the pairing is checked


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_on_the_same_batches(sft_ds, base_dir, tmp_path, cpu_ranks):
    """Two CPU ranks (one gloo group, 2 rows each) against one process with 4 rows per step, on a
    4-row dataset so that every step's global batch is the same: the loss is the same token mean
    over both ranks and the updates agree."""
    sft_ds.select(range(4)).save_to_disk(str(tmp_path / "train"))
    mk = lambda k, b: SFTJob(base_dir=base_dir, train_dir=str(tmp_path / "train"),
                             model_dir=str(tmp_path / k / "model"), output_dir=str(tmp_path / k / "ckpt"),
                             hparams={"batch_size": b, "lr": 0.01, "max_steps": 4, "logging_steps": 1,
                                      "save_steps": 1000}, seed=1)
    one = launch_sft(mk("one", 4), processes=1, subprocess_=True)
    two = launch_sft(mk("two", 2), processes=2)
    assert [x["loss"] for x in two.losses] == pytest.approx([x["loss"] for x in one.losses], rel=1e-4)
    a, b = (Policy.load(r.model_dir).model.state_dict() for r in (one, two))
    base = Policy.load(base_dir).model.state_dict()
    moved, apart = distance(a, base), distance(a, b)
    assert moved > 0.1 and apart < 0.05 * moved  # float summation order differs, as in the test above


def test_evaluation_tables_pool_by_complexity():
    from sairlib.sft_eval import by_bucket, check_sft_eval, compare, mode_trend

    def block(n, p, direct, multi, images):
        return {"n": n, "pass_rate": p, "score": p, "avg_images": images,
                "mode_mix": {"direct": direct, "reflection": 1 - direct - multi, "multistep": multi, "invalid": 0.0}}

    s = {**block(6, 0.5, 0.5, 0.25, 2.0),
         "by_complexity": {"1": block(1, 1.0, 1.0, 0.0, 1.0), "2": block(3, 1.0, 0.5, 0.0, 1.0),
                           "7": block(2, 0.0, 0.0, 1.0, 5.0)}, "by_family": {}}
    b = by_bucket(s)
    assert list(b) == ["1-2", "6+"] and b["1-2"]["n"] == 4
    assert b["1-2"]["mode_mix"]["direct"] == pytest.approx((1.0 + 3 * 0.5) / 4)
    assert b["6+"]["avg_images"] == 5.0
    assert mode_trend(s)["follows_complexity"] is True
    flat = {**s, "by_complexity": {"1": block(2, 1.0, 0.5, 0.5, 1.0), "7": block(2, 1.0, 0.5, 0.5, 1.0)}}
    assert mode_trend(flat)["follows_complexity"] is False
    table = compare({"masked": s, "unmasked": flat})
    assert list(table.columns) == ["masked", "unmasked"] and table.loc["pass_rate 6+", "masked"] == 0.0
    with pytest.raises(ValueError, match="sft_eval.task"):
        check_sft_eval({"task": 3})
    with pytest.raises(ValueError, match="sft_eval.unmasked_twin"):
        check_sft_eval({"unmasked_twin": 1})
    with pytest.raises(ValueError, match="sft_eval.val_fraction"):
        check_sft_eval({"val_fraction": 1.5})


def test_balanced_view_weighs_each_complexity_bucket_the_same():
    from sairlib.sft_eval import balanced, check_sft_eval

    def block(n, score, images, direct):
        return {"n": n, "pass_rate": score, "score": score, "avg_images": images,
                "mode_mix": {"direct": direct, "reflection": 0.0, "multistep": 1 - direct, "invalid": 0.0}}

    # 9 simple answers (score 1, one image) and 1 hard one (score 0.4, 7 images): the plain mean is 1.6
    # images, the balanced one (1 + 7) / 2 = 4
    s = {**block(10, 0.94, 1.6, 0.9), "by_complexity": {"1": block(6, 1.0, 1.0, 1.0), "2": block(3, 1.0, 1.0, 1.0),
                                                         "8": block(1, 0.4, 7.0, 0.0)}, "by_family": {}}
    b = balanced(s)
    assert b["n"] == 10 and b["buckets"] == 2
    assert b["avg_images"] == pytest.approx(4.0) and b["score"] == pytest.approx(0.7)
    assert b["mode_mix"]["direct"] == pytest.approx(0.5) and b["mode_mix"]["multistep"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="balanced"):
        balanced({"by_complexity": {}})
    assert check_sft_eval({"tasks": 3})["balance"] == "none"
    assert check_sft_eval({"tasks": 3, "balance": "complexity"})["balance"] == "complexity"
    with pytest.raises(ValueError, match="sft_eval.balance"):
        check_sft_eval({"balance": "even"})


def test_balanced_evaluations_answer_other_requests_than_the_worlds_mix(tmp_path):
    from sairlib.grpo import check_grpo_eval
    from sairlib.sft_eval import eval_settings, eval_tasks, load_summary, save_summaries
    from sairlib.world import WorldConfig, complexity_bucket

    g = check_grpo_eval({"tasks": 6, "samples": 1, "temperature": 1.0, "max_new_tokens": 0, "no_penalty_twin": False})
    assert g["balance"] == "none"
    with pytest.raises(ValueError, match="grpo_eval.balance"):
        check_grpo_eval({**g, "balance": 1})
    even = {**g, "balance": "complexity"}
    plain, spread = eval_tasks(g, 0, WorldConfig()), eval_tasks(even, 0, WorldConfig())
    assert sorted(complexity_bucket(t.complexity) for t in spread) == ["1-2", "1-2", "3-5", "3-5", "6+", "6+"]
    assert [t.id for t in plain] != [t.id for t in spread]
    world = {"grid": 4}
    save_summaries(tmp_path, eval_settings(0, world, g), {"m": {"n": 6}}, "m")
    assert load_summary(tmp_path, eval_settings(0, world, g)) == {"n": 6}
    assert load_summary(tmp_path, eval_settings(0, world, even)) is None  # other requests: not reused


def test_stored_summaries_are_read_back_only_with_the_same_settings(tmp_path):
    from sairlib.sft_eval import eval_settings, load_summary, save_summaries

    world = {"grid": 4, "image_size": 64}
    p = {"tasks": 40, "samples": 1, "temperature": 1.0, "max_new_tokens": 0, "unmasked_twin": True}
    summary = {"n": 40, "pass_rate": 0.25, "by_complexity": {"3": {"n": 40}}}
    assert load_summary(tmp_path, eval_settings(0, world, p)) is None  # nothing stored yet
    save_summaries(tmp_path, eval_settings(0, world, p), {"masked": summary, "unmasked": {"n": 1}}, "masked")
    # the GRPO notebook's own settings (no unmasked_twin, a no_penalty_twin) choose the same answers
    g = {"tasks": 40, "samples": 1, "temperature": 1.0, "max_new_tokens": 0, "no_penalty_twin": False}
    assert load_summary(tmp_path, eval_settings(0, world, g)) == summary
    for changed in (eval_settings(1, world, g), eval_settings(0, {**world, "grid": 5}, g),
                    eval_settings(0, world, {**g, "tasks": 41}), eval_settings(0, world, {**g, "temperature": 0.7})):
        assert load_summary(tmp_path, changed) is None
