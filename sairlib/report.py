"""The run's front page: ``<outputs>/<run-id>/index.html``.

The runner calls ``write_index(run_dir)`` after every chain (also after a
failure). To rebuild the page by hand::

    python -c "from sairlib.report import write_index; print(write_index('outputs/default'))"

The page is built from files only: ``run.json`` (written by the runner: params
file, seed, git SHA, each stage's status in the last invocation) and each
stage's ``metrics.json`` / ``failed.json``. It is a list of sections; to add
a table, write a function ``(RunView) -> str`` that returns HTML (build it
with ``table``, which escapes every cell) and append it to ``SECTIONS``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sairlib.metrics import METRICS_FILE, RUN_KEY, write_text

RUN_FILE = "run.json"
FAILED_FILE = "failed.json"


@dataclass
class StageView:
    """What the index shows of one stage."""

    name: str
    status: str
    wall_s: float | None
    peak_mb: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    html: str | None = None  # link relative to the run folder
    ipynb: str | None = None


@dataclass
class RunView:
    """What the index shows of one run."""

    run_dir: Path
    info: dict[str, Any]
    stages: list[StageView]


def _read(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _stage_view(run_dir: Path, name: str, status: str | None, wall_s: float | None) -> StageView:
    stage_dir = run_dir / name
    metrics = _read(stage_dir / METRICS_FILE)
    metrics = metrics if isinstance(metrics, dict) else {}
    run_block = metrics.get(RUN_KEY) if isinstance(metrics.get(RUN_KEY), dict) else {}
    failure = _read(stage_dir / FAILED_FILE)
    failure = failure if isinstance(failure, dict) else None
    complete = run_block.get("status") == "complete"
    if status is None:  # no run.json: judge from the files
        status = "failed" if failure else "complete" if complete else "not run"
    if wall_s is None:
        wall_s = (failure or {}).get("wall_s") if status == "failed" else run_block.get("wall_s")
    peak_mb = ((failure or {}) if status == "failed" else run_block).get("peak_mb")
    links = {}
    for suffix in ("html", "ipynb"):
        if (stage_dir / f"{name}.{suffix}").exists():
            links[suffix] = f"{quote(name)}/{quote(name)}.{suffix}"
    return StageView(
        name=name,
        status=status,
        wall_s=wall_s,
        peak_mb=peak_mb,
        metrics={k: v for k, v in metrics.items() if k != RUN_KEY} if complete else {},
        failure=failure if status == "failed" else None,
        html=links.get("html"),
        ipynb=links.get("ipynb"),
    )


def load_run(run_dir: str | os.PathLike) -> RunView:
    """Collect ``run.json`` and the stages' result files of ``run_dir``."""
    run_dir = Path(run_dir)
    info = _read(run_dir / RUN_FILE)
    info = info if isinstance(info, dict) else {}
    listed = info.get("stages")
    if isinstance(listed, list):
        rows = [(s["name"], s.get("status"), s.get("wall_s")) for s in listed]
    else:
        names = sorted(p.name for p in run_dir.iterdir() if p.is_dir())
        rows = [(n, None, None) for n in names]
    return RunView(run_dir, info, [_stage_view(run_dir, *row) for row in rows])


def esc(value: Any) -> str:
    """Escaped text of a value for HTML (floats to 6 significant digits)."""
    if value is None:
        return ""
    if isinstance(value, float):
        value = f"{value:.6g}"
    return html.escape(str(value), quote=True)


def link(href: str | None, text: str) -> str:
    """An ``<a>`` element, or nothing when there is no target."""
    if not href:
        return ""
    return f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>'


def table(
    headers: Iterable[str], rows: Iterable[Iterable[Any]], raw_columns: Iterable[int] = ()
) -> str:
    """An HTML table; every cell is escaped except those in ``raw_columns``
    (for cells already built with ``link``/``esc``)."""
    raw = set(raw_columns)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{c if i in raw else esc(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Top-level numbers, strings and bools (nested values are left out)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def summary_section(run: RunView) -> str:
    info = run.info
    sha = info.get("git_sha")
    if sha and info.get("git_dirty"):
        sha = f"{sha} (uncommitted changes)"
    rows = [
        ("params file", info.get("params_file")),
        ("seed", info.get("seed")),
        ("git SHA", sha if sha else "unknown"),
        ("started (UTC)", info.get("started_at")),
        ("finished (UTC)", info.get("finished_at")),
    ]
    return "<h2>Run</h2>" + table(("item", "value"), rows)


def stages_section(run: RunView) -> str:
    rows = [
        (s.name, s.status, s.wall_s, None if s.peak_mb is None else round(s.peak_mb / 1024, 2),
         link(s.html, "HTML"), link(s.ipynb, "notebook"))
        for s in run.stages
    ]
    return "<h2>Stages</h2>" + table(
        ("stage", "status", "wall s", "peak memory GiB", "report", "executed"), rows, raw_columns=(4, 5)
    )


def failures_section(run: RunView) -> str:
    rows = [
        (s.name, s.failure.get("cell"), s.failure.get("ename"), s.failure.get("evalue"))
        for s in run.stages
        if s.failure
    ]
    if not rows:
        return ""
    return "<h2>Failures</h2>" + table(("stage", "cell", "error", "message"), rows)


def metrics_section(run: RunView) -> str:
    parts = []
    for s in run.stages:
        scalars = scalar_metrics(s.metrics)
        if scalars:
            parts.append(f"<h3>{esc(s.name)}</h3>" + table(("metric", "value"), scalars.items()))
    return "<h2>Metrics</h2>" + "".join(parts) if parts else ""


ANALYSIS_STAGE = "06_analysis"
HEADLINE_COLUMNS = (("geneval", "mini-GenEval", 3), ("kris", "mini-KRIS", 1), ("omni", "mini-OmniContext", 2),
                    ("avg_images", "avg images", 2))


def mean_std_text(cell: Any, digits: int) -> str:
    """A {"mean", "std", "n"} cell as "mean ± std" ("n/a" when it is not one)."""
    if not isinstance(cell, dict) or not isinstance(cell.get("mean"), (int, float)):
        return "n/a"
    text = f"{cell['mean']:.{digits}f}"
    if cell.get("n", 1) > 1 and isinstance(cell.get("std"), (int, float)):
        text += f" ± {cell['std']:.{digits}f}"
    return text


def analysis_section(run: RunView) -> str:
    """The results and ablation tables of the analysis stage (mean ± std over seeds), when it ran."""
    stage = next((s for s in run.stages if s.name == ANALYSIS_STAGE and s.metrics), None)
    block = stage.metrics.get("table") if stage else None
    if not isinstance(block, dict) or not block:
        return ""
    labels = stage.metrics.get("labels") if isinstance(stage.metrics.get("labels"), dict) else {}
    seeds = stage.metrics.get("seeds")
    parts = [f"<h2>Results</h2><p>mean ± std over seeds {esc(seeds)}; details in "
             f"{link(stage.html, ANALYSIS_STAGE + ' report')}</p>"]
    for key, title in (("main_rows", "Results table"), ("ablation_rows", "Ablation table")):
        names = [c for c in stage.metrics.get(key) or [] if c in block]
        if not names:
            continue
        rows = [[labels.get(c, c)] + [mean_std_text(block[c].get(m), d) for m, _, d in HEADLINE_COLUMNS]
                for c in names]
        parts.append(f"<h3>{esc(title)}</h3>" + table(["configuration"] + [t for _, t, _ in HEADLINE_COLUMNS], rows))
    return "".join(parts)


SECTIONS: list[Callable[[RunView], str]] = [
    summary_section,
    stages_section,
    analysis_section,
    failures_section,
    metrics_section,
]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
"""


def render_index(run: RunView) -> str:
    """The whole page as a string."""
    title = f"SAIR run {run.run_dir.name}"
    body = "\n".join(part for part in (section(run) for section in SECTIONS) if part)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


def write_index(run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/index.html`` from the run's files; return its path."""
    run = load_run(run_dir)
    return write_text(Path(run_dir) / "index.html", render_index(run))
