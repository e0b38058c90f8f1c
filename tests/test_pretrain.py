"""Pretraining data: labels only on answers, the mix is validated, results do not depend on workers."""
import numpy as np
import pytest
from datasets import Dataset

from sairlib.policy import Policy, model_config
from sairlib.pretrain import CANDIDATES, IGNORE, check_candidates, check_mix, keep_task, pretrain_examples
from sairlib.training import check_hparams, train_lm
from sairlib.world import WorldAnalyzer, WorldConfig
from sairlib.world.corpus import perturbations
from sairlib.world.grammar import check_evaluation_order, parse_scene
from sairlib.world.tasks import make_tasks
from sairlib.world_setup import build_tokenizers

CFG = WorldConfig()
CODEC, TOK, _ = build_tokenizers(CFG, 16, 1024, 100, 50, 0)
MIX = {"t2i": 1, "edit": 1, "compose": 1, "single_edit": 1, "describe": 1, "evaluate": 1, "compare": 1}


def small_policy():
    return Policy.create(TOK, CODEC, {"hidden": 32, "layers": 1, "heads": 2})


def test_labels_cover_answers_only():
    pol = small_policy()
    L = pol.layout
    ex = pretrain_examples(L, CODEC, WorldAnalyzer(), 60, MIX, seed=0, cfg=CFG)
    assert {e["kind"] for e in ex} == set(MIX)
    for e in ex:
        ids, labels = e["input_ids"], e["labels"]
        assert len(ids) == len(labels)
        start = ids.index(L.assistant) + 1
        assert all(l == IGNORE for l in labels[:start])
        assert labels[-1] == L.eos
        if e["kind"] in ("evaluate", "compare"):  # the candidate image is context, only the evaluation is learned
            assert all(l == IGNORE for l in labels[start:start + L.tokens_per_image + 2])
            assert labels[start + L.tokens_per_image + 2] == L.open_tag["E"]
        else:
            assert labels[start:] == ids[start:]


def test_same_examples_for_any_worker_count(monkeypatch):
    import sairlib.pretrain as pt

    monkeypatch.setattr(pt, "CHUNK", 16)
    pol = small_policy()
    a = pretrain_examples(pol.layout, CODEC, WorldAnalyzer(), 40, MIX, seed=3, cfg=CFG, workers=1)
    b = pretrain_examples(pol.layout, CODEC, WorldAnalyzer(), 40, MIX, seed=3, cfg=CFG, workers=2)
    assert a == b


def test_held_out_facts_never_reach_the_base_model():
    from sairlib.world import facts

    pol = small_policy()
    ex = pretrain_examples(pol.layout, CODEC, WorldAnalyzer(), 200, {"edit": 1}, seed=1, cfg=CFG)
    words = {TOK.convert_ids_to_tokens(i) for e in ex for i in e["input_ids"]}
    assert not words & facts.HELD_OUT


def test_bad_mix_and_hparams_and_sizes():
    with pytest.raises(ValueError, match="mix.video"):
        check_mix({"video": 1})
    with pytest.raises(ValueError, match="mix"):
        check_mix({"t2i": 0})
    with pytest.raises(ValueError, match="train.lr"):
        check_hparams({"lr": "fast"})
    with pytest.raises(ValueError, match="train.epoch"):
        check_hparams({"epoch": 1})
    with pytest.raises(ValueError, match="model.heads"):
        model_config(TOK, {"hidden": 30, "layers": 1, "heads": 4})
    with pytest.raises(ValueError, match="model.width"):
        model_config(TOK, {"hidden": 32, "layers": 1, "heads": 4, "width": 3})


def test_training_lowers_the_loss_and_the_policy_round_trips(tmp_path):
    pol = small_policy()
    ex = pretrain_examples(pol.layout, CODEC, WorldAnalyzer(), 64, {"t2i": 1}, seed=0, cfg=CFG)
    hist = train_lm(pol.model, TOK, Dataset.from_list(ex), None,
                    {"batch_size": 16, "lr": 0.01, "epochs": 3.0, "logging_steps": 1, "save_steps": 1000},
                    tmp_path / "ckpt", seed=0)
    losses = [h["loss"] for h in hist if "loss" in h]
    assert losses[-1] < losses[0] * 0.8
    pol.save(tmp_path / "base")
    back = Policy.load(tmp_path / "base")
    ids = ex[0]["input_ids"]
    import torch

    x = torch.tensor([ids])
    pol.model.cpu().eval()  # the Trainer left it on the GPU, where there is one; the copy loads on CPU
    assert torch.allclose(pol.model(x).logits, back.model(x).logits, atol=1e-5)
    assert back.layout == pol.layout
    with pytest.raises(FileNotFoundError, match="no saved policy"):
        Policy.load(tmp_path / "nothing")


def test_evaluate_candidates_are_drawn_as_the_profile_draws_them():
    """Uniform over the target and its one-error versions: about a third pass on this codec, as in the
    capability profile; boosting the target (the old draw) taught a "done" prior of over a half."""
    pol = small_policy()
    ex = pretrain_examples(pol.layout, CODEC, WorldAnalyzer(), 400, {"evaluate": 1}, seed=5, cfg=CFG)
    said_done = ["done" in TOK.convert_ids_to_tokens([i for i in e["labels"] if i != IGNORE]) for e in ex]
    assert 0.2 < sum(said_done) / len(said_done) < 0.45


def test_evaluate_candidate_weights():
    """Equal weights are the default draw, example for example; weights move the draw; bad names fail."""
    pol, an = small_policy(), WorldAnalyzer()
    base = pretrain_examples(pol.layout, CODEC, an, 60, {"evaluate": 1}, seed=5, cfg=CFG)
    equal = pretrain_examples(pol.layout, CODEC, an, 60, {"evaluate": 1}, seed=5, cfg=CFG,
                              candidates={k: 2 for k in CANDIDATES})
    assert [e["input_ids"] for e in equal] == [e["input_ids"] for e in base]
    tasks = make_tasks(20, "train", 3, cfg=CFG)
    drawn = [k for t in tasks for k, _ in perturbations(t, np.random.default_rng(0), CFG.image_size)]
    assert set(drawn) == set(CANDIDATES)  # the weights name exactly the kinds the world draws

    def done_share(weights):
        ex = pretrain_examples(pol.layout, CODEC, an, 120, {"evaluate": 1}, seed=5, cfg=CFG, candidates=weights)
        return sum("done" in TOK.convert_ids_to_tokens([i for i in e["labels"] if i != IGNORE]) for e in ex) / len(ex)

    only_target = done_share({"target": 1, "wrong_colour": 0, "missing": 0, "moved": 0, "noise": 0})
    no_target = done_share({"target": 1e-9, "wrong_colour": 1})
    assert only_target > 0.9 and no_target < only_target - 0.4
    with pytest.raises(ValueError, match="candidates.recolored"):
        check_candidates({"recolored": 1})
    with pytest.raises(ValueError, match="candidates.target"):
        check_candidates({"target": 0})


def test_compare_judges_a_request_to_change_nothing():
    """Spot the difference: the input image passes, a recoloured object is "changed" plus "extra", and
    the examples show an image, no text, a candidate (no loss) and the Analyzer's evaluation."""
    an = WorldAnalyzer()
    scene = next(t.target.target for t in make_tasks(20, "train", 4, cfg=CFG) if len(t.target.target.objects) >= 2)
    keep = keep_task(scene, CFG.image_size)
    assert keep.instruction == "" and keep.id == keep_task(scene, CFG.image_size).id
    kinds = dict(perturbations(keep, np.random.default_rng(0), CFG.image_size))
    assert an.assess(keep, kinds["target"]).passed
    wrong = an.check(keep, kinds["wrong_colour"])
    assert {type(e).__name__ for e in wrong.errors} == {"ChangedError", "ExtraError"}
    assert wrong.scores["consistency"] < 5 and wrong.scores["instruction"] == 5
    assert not an.assess(keep, kinds["missing"]).passed

    pol = small_policy()
    L = pol.layout
    ex = pretrain_examples(L, CODEC, an, 200, {"compare": 1}, seed=2, cfg=CFG)
    assert {e["kind"] for e in ex} == {"compare"}
    for e in ex:
        ids, start = e["input_ids"], e["input_ids"].index(L.assistant) + 1
        assert ids[2] == L.boi and ids.count(L.boi) == 2  # no request text, image then candidate
        assert e["labels"][start + L.tokens_per_image + 2] == L.open_tag["E"]
    done = sum("done" in TOK.convert_ids_to_tokens([i for i in e["labels"] if i != IGNORE]) for e in ex) / len(ex)
    assert 0.1 < done < 0.5  # the unchanged image is one candidate kind of up to five
    # a kind at weight 0 changes nothing: the other kinds' examples are drawn as before
    base = {"t2i": 2, "edit": 1, "evaluate": 3}
    assert pretrain_examples(L, CODEC, an, 50, base, seed=1, cfg=CFG) == \
        pretrain_examples(L, CODEC, an, 50, base | {"compare": 0}, seed=1, cfg=CFG)


def evaluation_words(order: str, n: int) -> list[list[str]]:
    """The evaluation words (after the E tag) of ``n`` evaluate and compare examples written in
    ``order``; every order draws the same candidates (seed 3)."""
    L = small_policy().layout
    ex = pretrain_examples(L, CODEC, WorldAnalyzer(evaluation_order=order), n, {"evaluate": 1, "compare": 1},
                           seed=3, cfg=CFG)
    e_open = TOK.convert_ids_to_tokens(L.open_tag["E"])
    out = []
    for e in ex:
        words = TOK.convert_ids_to_tokens([i for i in e["labels"] if i != IGNORE])
        out.append(words[words.index(e_open) + 1:])
    return out


def test_seen_first_examples_describe_the_candidate_before_judging_it():
    for text, plain in zip(evaluation_words("seen_first", 40), evaluation_words("scores_first", 40)):
        assert text[0] == "image" and text[-len(plain):] == plain  # the scene seen, then the usual evaluation
        parse_scene(" ".join(text[1:text.index(".")]), CFG.grid)  # a scene description the parser reads


def test_reasons_first_examples_name_the_errors_before_the_scores():
    wrong = 0
    for text, plain in zip(evaluation_words("reasons_first", 60), evaluation_words("scores_first", 60)):
        assert sorted(text) == sorted(plain)  # the same draws, the evaluation's words in the other order
        if "error" in text:
            wrong += 1
            assert text[0] == "error" and text.index("instruction") > max(i for i, w in enumerate(text) if w == "error")
    assert wrong > 10
    with pytest.raises(ValueError, match="pretrain_evaluation_order: unknown 'sideways'"):
        check_evaluation_order("sideways", "pretrain_evaluation_order")


def test_loader_workers_change_speed_not_results(tmp_path, monkeypatch):
    """Collating in worker processes (what CUDA runs do) gives the same batches, so the same losses."""
    import sairlib.training as tr

    monkeypatch.setattr(tr.torch.cuda, "is_available", lambda: False)
    assert tr.loader_workers() == 0
    monkeypatch.setattr(tr.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tr.os, "cpu_count", lambda: 16)
    assert tr.loader_workers() == 4
    monkeypatch.setattr(tr.os, "cpu_count", lambda: 1)
    assert tr.loader_workers() == 0
    monkeypatch.undo()

    ex = pretrain_examples(small_policy().layout, CODEC, WorldAnalyzer(), 48, MIX, seed=0, cfg=CFG)
    h = {"batch_size": 8, "lr": 0.01, "epochs": 1.0, "logging_steps": 1, "save_steps": 1000}
    runs = {}
    for workers in (0, 2):
        monkeypatch.setattr(tr, "loader_workers", lambda w=workers: w)
        assert tr.trainer_fields(h, tmp_path, 0)["dataloader_num_workers"] == workers
        pol = Policy.create(TOK, CODEC, {"hidden": 32, "layers": 1, "heads": 2}, seed=0)
        hist = train_lm(pol.model, TOK, Dataset.from_list(ex), None, h, tmp_path / f"w{workers}", seed=0)
        runs[workers] = [x["loss"] for x in hist if "loss" in x]
    assert len(runs[0]) == 6 and runs[0] == runs[2]
