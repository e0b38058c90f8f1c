"""Analysis: tables (mean ± std over seeds), verdicts with their thresholds, RL logs, plots, and the
tables on the run's index page — all on synthetic results.

    .venv/bin/pytest -q tests/test_analysis.py
"""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402

import pytest  # noqa: E402

from sairlib import analysis  # noqa: E402
from sairlib.metrics import save_metrics, write_json  # noqa: E402
from sairlib.report import analysis_section, load_run, render_index  # noqa: E402


def result(geneval, kris, omni, images, groups=(60.0, 40.0, 20.0)):
    return {"headline": {"geneval": geneval, "kris": kris, "omni": omni, "avg_images": images},
            "kris": dict(zip(analysis.KRIS_GROUPS, groups), overall=kris), "mode_mix": {"direct": 1.0}}


def results(spec):
    """{config: [per-seed (geneval, kris, omni, images)]} -> a results.json-shaped mapping."""
    return {"seeds": [0, 1], "configs": {c: {"label": c.upper(), "table": "t",
                                             "seeds": {str(i): result(*v) for i, v in enumerate(vals)}}
                                         for c, vals in spec.items()}}


def test_mean_std_over_seeds():
    assert analysis.mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "n": 2}
    assert analysis.mean_std([4.0]) == {"mean": 4.0, "std": 0.0, "n": 1}
    assert analysis.mean_std([float("nan")])["n"] == 0
    block = analysis.table_block(results({"a": [(0.5, 50.0, 5.0, 1.0), (0.7, 70.0, 7.0, 3.0)]}))
    a = block["a"]
    assert a["geneval"]["mean"] == pytest.approx(0.6) and a["avg_images"]["std"] == pytest.approx(2 ** 0.5)
    assert a["kris_factual"]["mean"] == 60.0
    assert a["composite"]["mean"] == pytest.approx(0.6)  # (0.6 + 0.6 + 0.6) / 3
    with pytest.raises(ValueError, match="configs"):
        analysis.table_block({"seeds": []})


def test_paper_table_shape_and_reference_column():
    block = analysis.table_block(results({"base": [(0.5, 50.0, 5.0, 1.0)], "sft_rl_full": [(0.8, 60.0, 6.0, 1.5),
                                                                                           (0.6, 60.0, 6.0, 2.5)]}))
    t = analysis.paper_table(block, ["base", "sft_rl_full", "missing"], "main", {"base": "Base"})
    assert list(t.index) == ["Base", "sft_rl_full"]
    assert t.loc["sft_rl_full", "GenEval"] == "0.700 ± 0.141" and t.loc["Base", "GenEval"] == "0.500"
    assert t.loc["Base", "GenEval (paper)"] == "n/a"  # nothing transcribed: never invented
    assert "KRIS Procedural" in t.columns and t.loc["sft_rl_full", "seeds"] == 2
    t = analysis.paper_table(block, ["base"], "ablation", paper={"base": {"geneval": 0.42}})
    assert t.loc["base", "GenEval (paper)"] == "0.42" and "KRIS Factual" not in t.columns
    with pytest.raises(ValueError, match="kind"):
        analysis.paper_table(block, ["base"], "other")


def verdict_of(vs, claim_start):
    (v,) = [v for v in vs if v["claim"].startswith(claim_start)]
    return v


def test_verdicts_follow_the_numbers_and_thresholds():
    spec = {
        "full_mix_sft": [(0.80, 60.0, 6.0, 2.0)], "direct_only": [(0.50, 40.0, 4.0, 1.0)],
        "no_reflection": [(0.81, 61.0, 6.0, 1.8)], "no_multistep": [(0.95, 80.0, 8.0, 1.5)],
        "sft_only": [(0.80, 60.0, 6.0, 2.0)], "sft_rl_full": [(0.85, 65.0, 6.5, 1.5)],
        "no_step_reward": [(0.84, 64.0, 6.4, 1.5)], "no_penalty": [(0.85, 65.0, 6.5, 2.5)],
    }
    vs = analysis.verdicts(analysis.table_block(results(spec)), {"min_delta": 0.02, "min_image_drop": 0.05})
    assert len(vs) == len(analysis.CLAIMS)
    assert verdict_of(vs, "reflection and multi-step")["verdict"] == "supported"
    assert verdict_of(vs, "reflection matters")["verdict"] == "inconclusive"  # 0.01 below the bar
    assert verdict_of(vs, "multi-step matters")["verdict"] == "contradicted"
    assert verdict_of(vs, "RL cuts images")["verdict"] == "supported"  # 1.5 vs 2.0: 25 % fewer
    assert verdict_of(vs, "RL cuts images")["delta"] == pytest.approx(-0.25)
    assert verdict_of(vs, "the step-wise reward")["verdict"] == "inconclusive"
    assert verdict_of(vs, "the complexity penalty cuts")["verdict"] == "supported"
    assert verdict_of(vs, "the complexity penalty costs no score")["verdict"] == "supported"
    # a looser threshold turns the small step-reward gain into support; a stricter one makes RL's gain vanish
    loose = analysis.verdicts(analysis.table_block(results(spec)), {"min_delta": 0.005})
    assert verdict_of(loose, "the step-wise reward")["verdict"] == "supported"
    strict = analysis.verdicts(analysis.table_block(results(spec)), {"min_delta": 0.2})
    assert verdict_of(strict, "RL improves")["verdict"] == "inconclusive"


def test_noise_over_seeds_masks_a_difference_and_missing_configs_are_left_out():
    spec = {"sft_only": [(0.5, 50.0, 5.0, 2.0), (0.9, 90.0, 9.0, 2.0)], "sft_rl_full": [(0.8, 75.0, 7.5, 2.0)] * 2}
    vs = analysis.verdicts(analysis.table_block(results(spec)))
    assert [v["claim"] for v in vs] == ["RL improves the score over SFT", "RL cuts images per request"]
    assert all(v["verdict"] == "inconclusive" for v in vs)  # +0.08 is inside one std (0.28)
    assert vs[0]["noise"] == pytest.approx(0.2828, abs=1e-3)


def test_rl_history_from_metrics_or_trainer_state(tmp_path):
    log = [{"step": 1, "rewards/outcome/mean": 0.2, "rewards/outcome/std": 0.1, "avg_images": 3.0, "raw/composite": 0.5},
           {"step": 2, "rewards/outcome/mean": 0.4, "rewards/outcome/std": 0.1, "avg_images": 2.5},
           {"train_runtime": 9.0}]
    save_metrics(tmp_path, {"train": {"log_history": log}})
    h = analysis.rl_history(tmp_path)
    assert list(h["step"]) == [1, 2]
    assert analysis.curve_columns(h) == {"images": ["avg_images"],
                                             "rewards": ["rewards/outcome/mean", "raw/composite"]}
    other = tmp_path / "other"
    write_json(other / "checkpoints" / "checkpoint-2" / "trainer_state.json", {"log_history": log[:1]})
    assert len(analysis.rl_history(other)) == 1
    assert analysis.rl_history(tmp_path / "none").empty


def test_plots_from_rows():
    rows = analysis.rows_frame([
        {"benchmark": b, "category": "c", "complexity": c, "mode": m, "n_images": n, "passed": True, "score": 1.0,
         "correct": 1.0 if m == "direct" else 0.5, "config": "x", "seed": 0}
        for b in ("geneval", "kris") for c, m, n in ((1, "direct", 1), (1, "direct", 1), (3, "reflection", 2),
                                                     (3, "direct", 1), (5, "multistep", 4))])
    share = analysis.mode_share(rows)
    assert share.loc[3, "direct"] == 0.5 and share.loc[1, "direct"] == 1.0
    assert (share.sum(axis=1) - 1).abs().max() < 1e-9
    assert analysis.plot_score_by_complexity(rows).axes.size == 2
    assert analysis.plot_mode_share(rows).get_ylim() == (0, 1)
    frame = analysis.long_frame(results({"a": [(0.5, 50.0, 5.0, 1.0)] * 2, "b": [(0.7, 50.0, 5.0, 2.0)] * 2}))
    g = analysis.plot_ablation_bars(frame, ["a", "b"], {"a": "A", "b": "B"})
    assert len(g.axes) == 4
    assert set(frame["metric"]) >= {"geneval", "composite", "kris_factual"}
    matplotlib.pyplot.close("all")


def test_index_page_shows_the_two_tables(tmp_path):
    run = tmp_path / "run"
    stage = run / "06_analysis"
    block = analysis.table_block(results({"base": [(0.5, 50.0, 5.0, 1.0)], "sft_rl_full": [(0.8, 60.0, 6.0, 1.5),
                                                                                           (0.6, 60.0, 6.0, 2.5)],
                                          "direct_only": [(0.4, 40.0, 4.0, 1.0)]}))
    table = {c: {m: v[m] for m in analysis.HEADLINE} for c, v in block.items()}
    save_metrics(stage, {"table": table, "main_rows": ["base", "sft_rl_full"], "ablation_rows": ["direct_only",
                                                                                                 "sft_rl_full"],
                         "labels": {"base": "Base <model>", "sft_rl_full": "SFT + RL (Full)"}, "seeds": [0, 1]})
    metrics = json.loads((stage / "metrics.json").read_text())
    metrics["run"] = {"status": "complete"}
    (stage / "metrics.json").write_text(json.dumps(metrics))
    (stage / "06_analysis.html").write_text("<html></html>")
    view = load_run(run)
    html = analysis_section(view)
    assert "Results table" in html and "Ablation table" in html
    assert "0.700 ± 0.141" in html and "Base &lt;model&gt;" in html and "direct_only" in html
    assert 'href="06_analysis/06_analysis.html"' in html
    assert html in render_index(view)
    # no analysis stage: no section
    empty = tmp_path / "empty"
    (empty / "00_world").mkdir(parents=True)
    assert analysis_section(load_run(empty)) == ""
