"""Ablations: parameter merging, the committed configuration files, and a real run of sub-runs through
the notebook runner on a tiny five-stage chain (links, resume, shared results).

    .venv/bin/pytest -q tests/test_ablations.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

from sairlib import ablations
from sairlib.metrics import read_json
from sairlib.params import load_params
from sairlib.run import run_chain

ROOT = Path(__file__).resolve().parents[1]
CHAIN = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# ---------------------------------------------------------------- merging
def test_deep_merge_and_merged_params():
    assert ablations.deep_merge({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"d": 4}}) == {"a": 1, "b": {"c": 2, "d": 4}}
    assert ablations.deep_merge({"a": [1]}, {"a": [2, 3]}) == {"a": [2, 3]}
    defaults = {"02_x": {"seed": 0, "sft_data": {"masking": "selective", "modes": "full"}}}
    # the main file lacks sft_data: the override is merged over the notebook's default
    p = ablations.merged_params({"seed": 0}, {"sft_data": {"modes": "direct_only"}}, 2, defaults)
    assert p == {"seed": 2, "sft_data": {"masking": "selective", "modes": "direct_only"}}
    with pytest.raises(ValueError, match="'sft_dat'"):
        ablations.merged_params({}, {"sft_dat": {}}, 0, defaults)
    with pytest.raises(ValueError, match="ablation.configs: unknown configuration 'nope'"):
        ablations.config("nope")


def test_configs_are_the_papers_eight():
    assert [c.label for c in ablations.CONFIGS] == [
        "Direct Only", "w/o Reflection", "w/o Multi-step", "Full Mix (SFT)", "SFT Only", "w/o Step-wise Reward",
        "w/o Complexity Penalty", "SFT + RL (Full)"]


@pytest.mark.parametrize("cfg", ablations.CONFIGS, ids=lambda c: c.id)
def test_committed_configuration_files(cfg):
    if cfg.final_stage not in {nb.stem for nb in CHAIN}:
        pytest.skip(f"{cfg.final_stage} is not in the chain yet")
    path = ROOT / "params" / "ablations" / f"{cfg.id}.yaml"
    overrides = load_params(path, CHAIN)  # declared names and types only
    assert overrides
    # every override goes to a stage the configuration runs (up to the evaluated one)
    names = [nb.stem for nb in CHAIN]
    used = ablations.declared_defaults(CHAIN[:names.index(cfg.final_stage) + 1])
    assert all(any(k in d for d in used.values()) for k in overrides), overrides


# ---------------------------------------------------------------- a real tiny chain
def notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    p = nbformat.v4.new_code_cell(params + '\nrun_dir = "x"\nstage_dir = "x"\n')
    p.metadata["tags"] = ["parameters"]
    head = "import json\nfrom pathlib import Path\nfrom sairlib.metrics import save_metrics\nrun, stage = Path(run_dir), Path(stage_dir)\n"
    nb.cells = [p, nbformat.v4.new_code_cell(head + body)]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def tiny_chain(tmp_path_factory):
    """A five-stage chain with the real stage names; each 'model' is a JSON file of what made it."""
    root = tmp_path_factory.mktemp("chain")
    nbs = root / "notebooks"
    nbs.mkdir()
    notebook(nbs / "00_world.ipynb", "seed = 0",
             "(stage / 'base').mkdir(parents=True, exist_ok=True)\n"
             "(stage / 'base' / 'made.json').write_text(json.dumps({'base': seed}))\n"
             "save_metrics(stage, {'ok': 1})")
    notebook(nbs / "01_pipeline.ipynb", "seed = 0", "save_metrics(stage, {'ok': 1})")
    notebook(nbs / "02_masking.ipynb", 'seed = 0\nsft_data = {"masking": "selective", "modes": "full"}',
             "(stage / 'data.json').write_text(json.dumps({'modes': sft_data['modes'], 'seed': seed}))\n"
             "save_metrics(stage, {'ok': 1})")
    notebook(nbs / "03_sft.ipynb", "seed = 0",
             "(stage / 'model').mkdir(parents=True, exist_ok=True)\n"
             "(stage / 'model' / 'made.json').write_text((run / '02_masking' / 'data.json').read_text())\n"
             "save_metrics(stage, {'ok': 1})")
    notebook(nbs / "04_grpo.ipynb", 'seed = 0\nreward = {"step_reward": True, "penalty": True}',
             "made = json.loads((run / '03_sft' / 'model' / 'made.json').read_text())\n"
             "(stage / 'model').mkdir(parents=True, exist_ok=True)\n"
             "(stage / 'model' / 'made.json').write_text(json.dumps({**made, **reward}))\n"
             "save_metrics(stage, {'ok': 1})")
    pdir = root / "ablations"
    pdir.mkdir()
    files = {"direct_only": {"sft_data": {"modes": "direct_only"}}, "full_mix_sft": {"sft_data": {"modes": "full"}},
             "sft_only": {"sft_data": {"modes": "full"}}, "sft_rl_full": {"reward": {"penalty": True}},
             "no_penalty": {"reward": {"penalty": False}}}
    for k, v in files.items():
        (pdir / f"{k}.yaml").write_text(yaml.safe_dump(v))
    (root / "main.yaml").write_text("seed: 0\n")
    assert run_chain(root / "main.yaml", nbs, root / "outputs", run_id="main") == 0
    return root


def fake_bench(model_dir, world, bench, seed):
    """A real evaluation of the toy 'model': its recipe decides the numbers."""
    made = read_json(Path(model_dir) / "made.json")
    g = {"full": 0.8, "direct_only": 0.5}.get(made.get("modes"), 0.1) + (0.1 if made.get("penalty") else 0.0)
    imgs = 2.0 if made.get("penalty") is False else 1.5
    return {"headline": {"geneval": g, "kris": 50.0 + seed, "omni": 5.0, "avg_images": imgs},
            "kris": {"Factual": 50.0, "overall": 50.0 + seed}, "mode_mix": {"direct": 1.0},
            "rows": [{"benchmark": "geneval", "n_images": 1}]}


@pytest.mark.slow
def test_sub_runs_link_run_resume_and_share(tiny_chain):
    root = tiny_chain
    run_dir, nbs = root / "outputs" / "main", root / "notebooks"
    calls = []

    def runner(*a, **k):
        calls.append(k["only"])
        return run_chain(*a, **k)

    configs = ["direct_only", "full_mix_sft", "sft_only", "no_penalty", "sft_rl_full"]
    res = ablations.run_ablations(run_dir, configs, [0], {"n_per_tag": 1}, nbs, root / "ablations",
                                  evaluate=fake_bench, runner=runner, log=lambda m: None)
    by = {c: r["seeds"]["0"] for c, r in res["configs"].items()}
    assert list(by) == ["base"] + configs
    assert by["sft_rl_full"]["ran"] == [] and by["sft_rl_full"]["linked"][-1] == "04_grpo"
    assert by["direct_only"]["ran"] == ["02_masking", "03_sft"]
    assert by["no_penalty"]["ran"] == ["04_grpo"] and "03_sft" in by["no_penalty"]["linked"]
    assert by["sft_only"]["same_as"] == "full_mix_sft"
    assert calls == ["02_masking,03_sft", "04_grpo"]
    assert by["direct_only"]["headline"]["geneval"] == pytest.approx(0.5)
    assert by["no_penalty"]["headline"]["avg_images"] == 2.0 and by["sft_rl_full"]["headline"]["avg_images"] == 1.5
    sub = run_dir / "05_ablations" / "direct_only" / "seed0"
    assert (sub / "00_world").is_symlink() and not (sub / "03_sft").is_symlink()
    assert read_json(sub / "03_sft" / "model" / "made.json") == {"modes": "direct_only", "seed": 0}
    assert read_json(run_dir / "05_ablations" / "results.json") == res
    assert len(ablations.load_rows(run_dir, res)) == len(res["configs"])

    # again: the runner resumes (nothing re-executed) and the stored evaluations are kept
    before = read_json(sub / "03_sft" / "metrics.json")["run"]["finished_at"]
    evaluated = []
    again = ablations.run_ablations(run_dir, configs, [0], {"n_per_tag": 1}, nbs, root / "ablations",
                                    evaluate=lambda *a: evaluated.append(a) or fake_bench(*a), runner=runner,
                                    log=lambda m: None)
    assert again == res and evaluated == []
    assert read_json(sub / "03_sft" / "metrics.json")["run"]["finished_at"] == before

    # another seed re-runs every stage after the shared ones; other benchmark settings re-evaluate
    res1 = ablations.run_ablations(run_dir, ["sft_rl_full"], [1], {"n_per_tag": 2}, nbs, root / "ablations",
                                   evaluate=fake_bench, runner=runner, log=lambda m: None)
    r = res1["configs"]["sft_rl_full"]["seeds"]["1"]
    assert r["ran"] == ["02_masking", "03_sft", "04_grpo"] and r["headline"]["kris"] == 51.0


@pytest.mark.slow
def test_a_failing_stage_names_its_failure(tiny_chain, tmp_path):
    root = tiny_chain
    bad = root / "ablations_bad"
    bad.mkdir(exist_ok=True)
    (bad / "direct_only.yaml").write_text(yaml.safe_dump({"sft_data": {"modes": 3}}))
    sr = ablations.prepare(root / "outputs" / "main", ablations.config("direct_only"), 7,
                           sorted((root / "notebooks").glob("*.ipynb")), bad)
    assert sr.to_run == ["02_masking", "03_sft"]
    with pytest.raises(Exception, match="modes"):  # the runner rejects the mistyped value before running
        ablations.run_subrun(sr, root / "notebooks")
