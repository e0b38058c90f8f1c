"""Tables of an adaptive-inference evaluation (:func:`sairlib.solve.summarise`) for the SFT notebook.

    s = summarise(solve(policy, analyzer, tasks, samples=1, seed=0))
    by_complexity_frame(s)        # pass rate, score, images and mode mix per complexity
    by_bucket(s)                  # the same pooled into 1-2 / 3-5 / 6+ constraints
    balanced(s)                   # overall numbers with each bucket weighing the same
    compare({"masked": s1, "unmasked": s2})   # side by side

Notebook 03 stores its summaries with the settings that produced them (``save_summaries``);
notebook 04 answers the same held-out requests with the same model and seeds before GRPO, so it
reads the stored summary (``load_summary``) when the settings match instead of computing it
again (on the same device the two are identical).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .metrics import read_json, write_json
from .modes import MODES
from .params import check_section
from .world.tasks import COMPLEXITY_BUCKETS, WorldConfig, complexity_bucket, make_balanced_tasks, make_tasks

# balance: "none" draws the held-out requests in the world's own mix; "complexity" spreads them evenly over
# the complexity buckets (make_balanced_tasks)
BALANCE = ("none", "complexity")
SFT_EVAL_KEYS = {"val_fraction": float, "tasks": int, "samples": int, "temperature": float, "max_new_tokens": int,
                 "unmasked_twin": bool, "balance": BALANCE}


def check_sft_eval(p: Mapping[str, Any], where: str = "sft_eval") -> dict[str, Any]:
    """Validate the evaluation parameters of notebook 03 (unknown keys and wrong types name the key);
    returns them with ``balance`` filled in ("none" when absent)."""
    p = check_section({"balance": "none", **p} if isinstance(p, Mapping) else p, SFT_EVAL_KEYS, where)
    if not 0 <= p.get("val_fraction", 0.0) < 1:
        raise ValueError(f"{where}.val_fraction: must be in [0, 1), got {p['val_fraction']!r}")
    if p.get("samples", 1) < 1 or p.get("tasks", 1) < 1:
        raise ValueError(f"{where}: tasks and samples must be at least 1")
    return p


MIX = MODES + ("invalid",)


def _row(block: dict[str, Any]) -> dict[str, Any]:
    return {"n": block["n"], "pass_rate": block["pass_rate"], "score": block["score"],
            "avg_images": block["avg_images"], **{m: block["mode_mix"].get(m, 0.0) for m in MIX}}


def by_complexity_frame(summary: dict[str, Any], key: str = "by_complexity") -> Any:
    """DataFrame: one row per complexity (or family with ``key="by_family"``)."""
    import pandas as pd

    rows = {k: _row(v) for k, v in summary[key].items()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    if key == "by_complexity" and len(df):
        df.index = df.index.astype(int)
        df = df.sort_index()
    df.index.name = key.removeprefix("by_")
    return df


def by_bucket(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-complexity blocks pooled (weighted by ``n``) into the 1-2 / 3-5 / 6+ buckets."""
    out: dict[str, dict[str, Any]] = {}
    for c, block in summary["by_complexity"].items():
        name, n = complexity_bucket(int(c)), block["n"]
        if not n:
            continue
        acc = out.setdefault(name, {"n": 0, "pass_rate": 0.0, "score": 0.0, "avg_images": 0.0,
                                    "mode_mix": {m: 0.0 for m in MIX}})
        acc["n"] += n
        for k in ("pass_rate", "score", "avg_images"):
            acc[k] += n * block[k]
        for m in MIX:
            acc["mode_mix"][m] += n * block["mode_mix"].get(m, 0.0)
    for acc in out.values():
        for k in ("pass_rate", "score", "avg_images"):
            acc[k] /= acc["n"]
        acc["mode_mix"] = {m: v / acc["n"] for m, v in acc["mode_mix"].items()}
    order = [b for b, _, _ in COMPLEXITY_BUCKETS if b in out] + (["0"] if "0" in out else [])
    return {b: out[b] for b in order}


def balanced(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's pass rate, score, images and mode mix with every complexity bucket present
    weighing the same (the mean of :func:`by_bucket`'s blocks), whatever the requests' own mix.

    On requests drawn with ``balance: complexity`` this equals the plain average; on the world's own
    mix (mostly simple requests) it re-weights the same answers, so a bucket with few requests
    carries as much weight as one with many, and its sampling error too."""
    b = [v for k, v in by_bucket(summary).items() if k != "0"]
    if not b:
        raise ValueError("balanced: the summary has no answers with a complexity bucket")
    mean = lambda key: sum(v[key] for v in b) / len(b)  # noqa: E731
    return {"n": sum(v["n"] for v in b), "buckets": len(b), "pass_rate": mean("pass_rate"), "score": mean("score"),
            "avg_images": mean("avg_images"),
            "mode_mix": {m: sum(v["mode_mix"][m] for v in b) / len(b) for m in MIX}}


def mode_trend(summary: dict[str, Any]) -> dict[str, Any]:
    """Shares of Direct and Multi-step in the simplest and the most complex bucket present, and whether
    the mode choice follows complexity (Direct falls and Multi-step rises from one to the other)."""
    b = by_bucket(summary)
    if len(b) < 2:
        return {"buckets": list(b), "follows_complexity": None}
    lo, hi = b[next(iter(b))], b[list(b)[-1]]
    d = (lo["mode_mix"]["direct"], hi["mode_mix"]["direct"])
    m = (lo["mode_mix"]["multistep"], hi["mode_mix"]["multistep"])
    return {"buckets": [next(iter(b)), list(b)[-1]], "direct_share": list(d), "multistep_share": list(m),
            "follows_complexity": bool(d[1] < d[0] and m[1] > m[0])}


def compare(summaries: dict[str, dict[str, Any]]) -> Any:
    """DataFrame: one column per model, rows overall metrics and pass rate per complexity bucket."""
    import pandas as pd

    cols = {}
    for name, s in summaries.items():
        col = {"pass_rate": s["pass_rate"], "score": s["score"], "avg_images": s["avg_images"],
               **{f"mode_{m}": s["mode_mix"].get(m, 0.0) for m in MIX}}
        col.update({f"pass_rate {k}": v["pass_rate"] for k, v in by_bucket(s).items()})
        cols[name] = col
    return pd.DataFrame(cols)


SUMMARIES_FILE = "eval_summaries.json"
EVAL_SETTINGS = ("tasks", "samples", "temperature", "max_new_tokens")
EVAL_TASK_SEED = 31  # held-out requests: seed + 31, for notebooks 03 and 04 alike


def eval_tasks(p: dict[str, Any], seed: int, cfg: WorldConfig) -> list[Any]:
    """The held-out requests an ``sft_eval`` / ``grpo_eval`` section asks for: ``p["tasks"]`` eval-split
    requests drawn with ``seed + 31``, in the world's mix or (``balance: complexity``) evenly over the
    complexity buckets. Notebooks 03 and 04 both call this, so they answer the same requests."""
    if p.get("balance", "none") == "complexity":
        return make_balanced_tasks(p["tasks"], "eval", seed + EVAL_TASK_SEED, cfg=cfg)
    return make_tasks(p["tasks"], "eval", seed + EVAL_TASK_SEED, cfg=cfg)


def eval_settings(seed: int, world: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """What decides an evaluation's answers besides the model: the seed (requests and sampling),
    the world and the ``sft_eval`` / ``grpo_eval`` fields that choose and sample the requests."""
    return {"seed": seed, "world": dict(world), **{k: p[k] for k in EVAL_SETTINGS},
            "balance": p.get("balance", "none")}


def save_summaries(stage_dir: str | os.PathLike, settings: dict[str, Any], summaries: dict[str, dict[str, Any]],
                   main: str) -> Path:
    """Write the stage's evaluation summaries, its main model's name and their settings."""
    return write_json(Path(stage_dir) / SUMMARIES_FILE, {"settings": settings, "main": main, "summaries": summaries})


def load_summary(stage_dir: str | os.PathLike, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The main model's stored summary when it was made with ``settings``; ``None`` otherwise."""
    path = Path(stage_dir) / SUMMARIES_FILE
    if not path.is_file():
        return None
    stored = read_json(path)
    if stored.get("settings") != json.loads(json.dumps(settings)):
        return None
    return stored["summaries"].get(stored.get("main"))
