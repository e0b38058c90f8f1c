"""The SFT set: kept, reviewed, mode-filtered trajectories, masked into ``input_ids`` + ``labels``.

    trajs = load_pipeline_trajectories(run_dir)                       # run_dir/01_pipeline/dataset
    ds, report = build_sft_dataset(trajs, policy.layout, policy.codec, masking="selective",
                                   modes="full", reviews=load_reviews(run_dir / "01_pipeline/reviews.jsonl"),
                                   max_len=policy.model.config.max_position_embeddings)
    ds.save_to_disk(stage_dir / "sft_dataset")

Columns: ``input_ids``, ``labels``, ``id``, ``mode``, ``complexity``, ``family``, ``category``,
``masking``, ``n_tokens``, ``n_loss``. Mode filters (the ablations' data mixes):

==================  ==============================
``modes``           trajectories kept
==================  ==============================
``full``            direct, reflection, multistep
``direct_only``     direct
``no_reflection``   direct, multistep
``no_multistep``    direct, reflection
==================  ==============================
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from .masking import IGNORE, MaskedExample, assistant_labels, check_masking, mask_trajectory
from .review import apply_reviews
from .sequence import Layout

MODE_FILTERS: dict[str, tuple[str, ...]] = {
    "full": ("direct", "reflection", "multistep"),
    "direct_only": ("direct",),
    "no_reflection": ("direct", "multistep"),
    "no_multistep": ("direct", "reflection"),
}
PROMPT_SPANS = ("prompt", "input", "assistant")  # span kinds before the answer
SFT_DATA_KEYS = {"masking": str, "modes": str}


def check_sft_data(p: dict[str, Any], where: str = "sft_data") -> dict[str, Any]:
    unknown = set(p) - set(SFT_DATA_KEYS)
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key (known: {', '.join(SFT_DATA_KEYS)})")
    check_masking(p.get("masking", "selective"))
    modes_of(p.get("modes", "full"), f"{where}.modes")
    return p


def modes_of(name: str, where: str = "modes") -> tuple[str, ...]:
    """The modes a data filter keeps."""
    if name not in MODE_FILTERS:
        raise ValueError(f"{where}: must be one of {tuple(MODE_FILTERS)}, got {name!r}")
    return MODE_FILTERS[name]


def load_pipeline_trajectories(run_dir: str | Path) -> list[Any]:
    """Every trajectory of ``run_dir/01_pipeline/dataset`` (kept or not)."""
    from datasets import load_from_disk

    from .trajectory import from_dataset

    path = Path(run_dir) / "01_pipeline" / "dataset"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no trajectory dataset (run notebook 01 first)")
    return from_dataset(load_from_disk(str(path)))


def select_for_sft(trajectories: Sequence[Any], modes: str = "full",
                   reviews: dict[str, dict[str, Any]] | None = None) -> tuple[list[Any], dict[str, int]]:
    """Kept trajectories, minus those a reviewer rejected, of the filter's modes; and the counts."""
    keep = modes_of(modes, "sft_data.modes")
    kept = [t for t in trajectories if t.status == "kept"]
    reviewed = apply_reviews(kept, reviews or {})
    chosen = [t for t in reviewed if t.mode in keep]
    return chosen, {"trajectories": len(trajectories), "kept": len(kept),
                    "rejected_by_review": len(kept) - len(reviewed), "filtered_by_mode": len(reviewed) - len(chosen),
                    "selected": len(chosen)}


def sft_features() -> Any:
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")), "id": Value("string"),
                     "mode": Value("string"), "complexity": Value("int32"), "family": Value("string"),
                     "category": Value("string"), "masking": Value("string"), "n_tokens": Value("int32"),
                     "n_loss": Value("int32")})


def example_row(t: Any, ex: MaskedExample) -> dict[str, Any]:
    return {"input_ids": ex.input_ids, "labels": ex.labels, "id": t.id, "mode": t.mode,
            "complexity": t.complexity, "family": str(t.meta.get("family", "")),
            "category": str(t.meta.get("category", "")), "masking": ex.masking,
            "n_tokens": len(ex.input_ids), "n_loss": ex.n_loss}


def build_sft_dataset(trajectories: Sequence[Any], layout: Layout, codec: Any, masking: str = "selective",
                      modes: str = "full", reviews: dict[str, dict[str, Any]] | None = None,
                      max_len: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The HF dataset of masked examples and a report (counts, tokens with and without loss by kind).

    Sequences longer than ``max_len`` (the model's context) are left out and counted, never
    truncated: a cut trajectory would teach the model to stop mid-answer.
    """
    from datasets import Dataset

    chosen, report = select_for_sft(trajectories, modes, reviews)
    rows, too_long = [], []
    tokens: dict[str, Counter] = {}
    by_mode: dict[str, dict[str, Counter]] = {}
    for t in chosen:
        ex = mask_trajectory(t, layout, codec, masking)
        if max_len is not None and len(ex.input_ids) > max_len:
            too_long.append(t.id)
            continue
        rows.append(example_row(t, ex))
        for kind, c in ex.counts().items():
            tokens.setdefault(kind, Counter()).update(c)
            by_mode.setdefault(t.mode, {}).setdefault(kind, Counter()).update(c)
    answer = sum(sum(c.values()) for k, c in tokens.items() if k not in PROMPT_SPANS)
    report.update({"too_long": len(too_long), "examples": len(rows), "masking": masking, "modes": modes,
                   "by_mode": dict(sorted(Counter(r["mode"] for r in rows).items())),
                   "tokens": {k: dict(v) for k, v in sorted(tokens.items())},
                   "tokens_by_mode": {m: {k: dict(v) for k, v in sorted(ks.items())} for m, ks in sorted(by_mode.items())},
                   "loss_tokens": sum(r["n_loss"] for r in rows),
                   "answer_tokens": answer,
                   "loss_share_of_answer": sum(r["n_loss"] for r in rows) / max(answer, 1),
                   "total_tokens": sum(r["n_tokens"] for r in rows),
                   "max_tokens": max((r["n_tokens"] for r in rows), default=0)})
    if not rows:
        return Dataset.from_dict({k: [] for k in sft_features()}, features=sft_features()), report
    return Dataset.from_list(rows, features=sft_features()), report


def relabel_unmasked(ds: Any, layout: Layout) -> Any:
    """The same examples with masking ``"none"`` (loss on every answer token): the ablation's twin."""
    def fn(row: dict[str, Any]) -> dict[str, Any]:
        labels = assistant_labels(row["input_ids"], layout)
        return {"labels": labels, "masking": "none", "n_loss": sum(1 for l in labels if l != IGNORE)}

    return ds.map(fn, features=ds.features)
