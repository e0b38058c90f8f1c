"""Run the notebook chain with one parameter file, resuming where it left off.

    python -m sairlib.run --params params/default.yaml [--run-id ID]
        [--outputs outputs] [--notebooks notebooks] [--only 00,01] [--force]

(``sair`` is the same command once the package is installed.)

The chain is ``notebooks/[0-9][0-9]_*.ipynb`` in name order; a stage is named
after its notebook's stem. Each stage runs through papermill, with the project
root (the folder holding ``notebooks/``) as working directory, and receives
the parameters its ``parameters`` cell declares plus two absolute paths:
``run_dir = <outputs>/<run-id>/`` and ``stage_dir = <run_dir>/<stage>/``. It
leaves in ``stage_dir``:

* ``<stage>.ipynb`` and ``<stage>.html``: the executed notebook and its HTML;
* ``metrics.json``: written by the notebook's ``save_metrics(stage_dir, ...)``,
  then given a ``"run"`` block here (parameters, hash, seed, provenance,
  wall time) that marks the stage complete;
* ``failed.json`` instead when the stage failed (cell, error, traceback).

Branching: ``--reuse BASE`` starts (or continues) a run from another run in the
same outputs folder. Each stage this run does not have yet, whose result in
``<outputs>/BASE/`` is complete with the same inputs (same hash), is linked
(a relative symbolic link) instead of computed. A sweep over a late stage's
parameters then costs only that stage:

    python -m sairlib.run --params params/gpu_30min.yaml --only 00,01,02,03
    python -m sairlib.run --params params/experiments/grpo/epsilon_0.4.yaml \
        --reuse gpu_30min --only 04

A linked stage that has to run again (``--force``, or changed inputs) gets a
folder of its own first; the base run is never written to.

``run_dir`` gets ``index.html`` (see ``sairlib.report``), ``run.json`` and a
copy of the parameter file.

Resume: the run id defaults to the parameter file's stem, so the same command
continues the same run. A stage is skipped when its ``metrics.json`` is
complete and its ``params_hash`` equals the hash of its parameters, its
notebook's sha256 and the identity of each earlier stage's result (its hash
and completion time). A stage that runs again therefore re-runs every later
stage. ``--force`` re-runs every selected stage; ``--only 00,02`` selects
stages by number or name.

Exit status: 0 success, 1 a stage failed (the chain stops there), 2 a bad
parameter file or command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sairlib.memory import PeakMemory
from sairlib.metrics import METRICS_FILE, RUN_KEY, read_json, utc_now, write_json, write_text
from sairlib.params import RESERVED, ParamsError, load_params, notebook_parameters
from sairlib.report import FAILED_FILE, RUN_FILE, write_index

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMPLETE, SKIPPED, FAILED, NOT_RUN = "complete", "skipped (resumed)", "failed", "not run"
KERNEL = "python3"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class UsageError(Exception):
    """A command line that cannot be run (exit status 2)."""


@dataclass
class Stage:
    name: str
    notebook: Path
    stage_dir: Path
    params: dict[str, Any]
    notebook_sha256: str
    params_hash: str = ""
    status: str = NOT_RUN
    wall_s: float | None = None
    peak_mb: float | None = None  # peak resident memory of the stage's processes (sairlib.memory)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stage_hash(params: dict[str, Any], notebook_sha256: str, upstream: Sequence[str]) -> str:
    """Identity of a stage's inputs: parameters, notebook, earlier results."""
    blob = json.dumps(
        {"params": params, "notebook_sha256": notebook_sha256, "upstream": list(upstream)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def discover(notebooks_dir: Path) -> list[Path]:
    """The chain: ``NN_*.ipynb`` in ``notebooks_dir``, sorted by name."""
    return sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def select(names: list[str], only: str | None) -> set[str]:
    """Stage names picked by ``--only`` (numbers like ``00`` or full names)."""
    if not only:
        return set(names)
    picked: set[str] = set()
    for token in filter(None, (t.strip() for t in only.split(","))):
        hits = [n for n in names if n == token or n.split("_", 1)[0] == token]
        if not hits:
            raise UsageError(f"--only: no stage {token!r} (stages: {', '.join(names)})")
        picked.update(hits)
    return picked


def _run_block(stage_dir: Path) -> dict[str, Any]:
    try:
        data = read_json(stage_dir / METRICS_FILE)
    except (OSError, ValueError):
        return {}
    block = data.get(RUN_KEY) if isinstance(data, dict) else None
    return block if isinstance(block, dict) else {}


def is_complete(stage: Stage) -> bool:
    """Whether the stage's stored result matches its current inputs."""
    block = _run_block(stage.stage_dir)
    return block.get("status") == COMPLETE and block.get("params_hash") == stage.params_hash


def fingerprint(stage: Stage) -> str:
    """What later stages hash of this one: its inputs and, when complete, its completion time."""
    finished = _run_block(stage.stage_dir).get("finished_at") if is_complete(stage) else None
    return f"{stage.name}:{stage.params_hash}:{finished or ''}"


def link_from_base(stage: Stage, base_dir: Path) -> bool:
    """Link ``stage``'s folder to the base run's when that result is complete with the same inputs."""
    if os.path.lexists(stage.stage_dir):
        return False
    base_stage = base_dir / stage.stage_dir.name
    block = _run_block(base_stage)
    if block.get("status") != COMPLETE or block.get("params_hash") != stage.params_hash:
        return False
    stage.stage_dir.parent.mkdir(parents=True, exist_ok=True)
    stage.stage_dir.symlink_to(os.path.relpath(base_stage.resolve(), stage.stage_dir.parent.resolve()),
                               target_is_directory=True)
    return True


def _kernel_can_import_sairlib() -> None:
    """Let the notebook kernel import the same ``sairlib`` as this process."""
    here = str(Path(__file__).resolve().parent.parent)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, paths)])


def render_html(ipynb: Path, source_dir: Path) -> Path:
    """Write ``<ipynb stem>.html`` next to the executed notebook (images embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    exporter = HTMLExporter(embed_images=True)
    resources = {"metadata": {"path": str(source_dir), "name": ipynb.stem}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return write_text(ipynb.with_suffix(".html"), body)


def _source_cell_number(notebook: Path, executed_index: int) -> int | None:
    """1-based position in the source notebook of a cell of the executed one,
    which has papermill's injected-parameters cell after the ``parameters``
    cell (``None`` for the injected cell itself)."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    tags = [c.get("metadata", {}).get("tags", []) for c in cells]
    if any("injected-parameters" in t for t in tags):
        return executed_index + 1
    injected = next((i + 1 for i, t in enumerate(tags) if "parameters" in t), 0)
    if executed_index == injected:
        return None
    return executed_index + (0 if executed_index < injected else -1) + 1


def _first_line(text: str, limit: int = 300) -> str:
    line = _ANSI.sub("", str(text)).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failure(stage: Stage, exc: BaseException | None, out_ipynb: Path) -> dict[str, Any]:
    """failed.json content for an exception (or a missing metrics.json)."""
    from papermill.exceptions import PapermillExecutionError

    info: dict[str, Any] = {"stage": stage.name, "status": FAILED}
    if isinstance(exc, PapermillExecutionError):
        cell = _source_cell_number(stage.notebook, exc.cell_index)
        info.update(
            cell=cell,
            cell_index=exc.cell_index,
            execution_count=exc.exec_count,
            ename=exc.ename,
            evalue=exc.evalue,
            source=exc.source,
            traceback=[_ANSI.sub("", t) for t in exc.traceback],
        )
        where = "the injected parameters cell" if cell is None else f"cell {cell}"
        line = f"failed in {where} (execution count {exc.exec_count})"
    elif exc is not None:
        info.update(ename=type(exc).__name__, evalue=_first_line(str(exc)))
        line = "failed"
    else:
        info.update(
            ename="MissingMetrics",
            evalue=f"the notebook did not write {stage.stage_dir / METRICS_FILE}; "
            "end it with save_metrics(stage_dir, {...})",
        )
        line = "failed"
    info["message"] = f"stage {stage.name} {line}: {info['ename']}: {_first_line(info['evalue'])}"
    info["notebook"] = str(out_ipynb)
    info["html"] = str(out_ipynb.with_suffix(".html"))
    return info


def run_stage(stage: Stage, run_dir: Path, root: Path, seed: Any) -> bool:
    """Execute one stage; write its result files; return whether it completed."""
    import papermill

    from sairlib.provenance import provenance

    if stage.stage_dir.is_symlink():  # linked from a base run (--reuse): never write there
        stage.stage_dir.unlink()
    stage.stage_dir.mkdir(parents=True, exist_ok=True)
    (stage.stage_dir / METRICS_FILE).unlink(missing_ok=True)
    out_ipynb = stage.stage_dir / f"{stage.name}.ipynb"
    passed = {**stage.params, "run_dir": str(run_dir), "stage_dir": str(stage.stage_dir)}
    error: BaseException | None = None
    start = time.perf_counter()
    peak = PeakMemory()
    try:
        with peak:
            papermill.execute_notebook(
                str(stage.notebook),
                str(out_ipynb),
                parameters=passed,
                kernel_name=KERNEL,
                cwd=str(root),
                log_output=False,
                progress_bar=False,
                # the kernel's own log (TCP transport notice, shutdown interrupts) is noise here;
                # errors in cells are reported from the executed notebook
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
    except Exception as e:  # papermill errors, dead kernels, timeouts
        error = e
    stage.wall_s = round(time.perf_counter() - start, 3)
    stage.peak_mb = peak.peak_mb
    if out_ipynb.exists():
        try:
            render_html(out_ipynb, stage.notebook.parent)
        except Exception as e:
            print(f"  warning: could not render {out_ipynb.name} to HTML: {e}", file=sys.stderr)
    failed = None
    if error is not None or not (stage.stage_dir / METRICS_FILE).exists():
        failed = _failure(stage, error, out_ipynb)
    common = {
        "params": stage.params,
        "params_hash": stage.params_hash,
        "seed": seed,
        "provenance": provenance(root),
        "wall_s": stage.wall_s,
        "peak_mb": stage.peak_mb,
        "notebook_sha256": stage.notebook_sha256,
        "finished_at": utc_now(),
    }
    if failed is not None:
        write_json(stage.stage_dir / FAILED_FILE, {**failed, **common})
        print(failed["message"], file=sys.stderr)
        if out_ipynb.exists():
            print(f"  partially executed notebook: {out_ipynb}", file=sys.stderr)
        return False
    metrics = read_json(stage.stage_dir / METRICS_FILE)
    if not isinstance(metrics, dict):
        metrics = {"value": metrics}
    metrics[RUN_KEY] = {"stage": stage.name, "status": COMPLETE, **common}
    write_json(stage.stage_dir / METRICS_FILE, metrics)
    (stage.stage_dir / FAILED_FILE).unlink(missing_ok=True)
    return True


def run_chain(
    params_file: Path,
    notebooks_dir: Path,
    outputs: Path,
    run_id: str | None = None,
    only: str | None = None,
    force: bool = False,
    reuse: str | None = None,
) -> int:
    """Run (or resume) the chain; return the exit status. Raises ParamsError/UsageError."""
    from sairlib.provenance import git_state

    notebooks_dir = notebooks_dir.resolve()
    if not notebooks_dir.is_dir():
        raise UsageError(f"no notebooks folder {notebooks_dir}")
    chain = discover(notebooks_dir)
    if not chain:
        raise UsageError(f"no notebooks named NN_*.ipynb in {notebooks_dir}")
    run_id = run_id or params_file.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id):
        raise UsageError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    base_dir = None
    if reuse is not None:
        base_dir = (outputs / reuse).resolve()
        if reuse == run_id or not (base_dir / RUN_FILE).is_file():
            raise UsageError(f"--reuse {reuse}: no other run at {base_dir} (its {RUN_FILE} is missing)")
    params = load_params(params_file, chain)
    names = [nb.stem for nb in chain]
    selected = select(names, only)
    root = notebooks_dir.parent
    run_dir = (outputs / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "params.yaml", yaml.safe_dump(params, sort_keys=False))  # extends resolved
    _kernel_can_import_sairlib()

    stages = []
    for nb in chain:
        declared = notebook_parameters(nb)
        stage_params = {k: v for k, v in params.items() if k in declared and k not in RESERVED}
        stages.append(Stage(nb.stem, nb, run_dir / nb.stem, stage_params, file_sha256(nb)))
    git = git_state(root)
    info: dict[str, Any] = {
        "params_file": str(params_file),
        "params": params,
        "seed": params.get("seed"),
        "git_sha": git["sha"],
        "git_dirty": git["dirty"],
        "started_at": utc_now(),
        "finished_at": None,
        "stages": [],
    }

    def save_run_info() -> None:
        info["stages"] = [{"name": s.name, "status": s.status, "wall_s": s.wall_s, "peak_mb": s.peak_mb}
                          for s in stages]
        write_json(run_dir / RUN_FILE, info)

    print(f"run {run_id}: {len(selected)} of {len(stages)} stages -> {run_dir}", flush=True)
    status = EXIT_OK
    try:
        upstream: list[str] = []
        for stage in stages:
            stage.params_hash = stage_hash(stage.params, stage.notebook_sha256, upstream)
            if base_dir is not None and link_from_base(stage, base_dir):
                print(f"[{stage.name}] linked to {reuse}/{stage.stage_dir.name}: same inputs", flush=True)
            if stage.name in selected:
                if not force and is_complete(stage):
                    stage.status = SKIPPED
                    block = _run_block(stage.stage_dir)
                    stage.wall_s, stage.peak_mb = block.get("wall_s"), block.get("peak_mb")
                    print(f"[{stage.name}] skipped: complete with these inputs", flush=True)
                else:
                    print(f"[{stage.name}] running ...", flush=True)
                    stage.status = "running"
                    save_run_info()
                    ok = run_stage(stage, run_dir, root, params.get("seed"))
                    stage.status = COMPLETE if ok else FAILED
                    print(f"[{stage.name}] {stage.status} in {stage.wall_s:.1f} s, "
                          f"peak memory {stage.peak_mb / 1024:.2f} GiB", flush=True)
                    if not ok:
                        status = EXIT_FAILED
                        break
            upstream.append(fingerprint(stage))
    finally:
        for stage in stages:
            if stage.status == "running":  # interrupted
                stage.status = NOT_RUN
        info["finished_at"] = utc_now()
        save_run_info()
        index = write_index(run_dir)
        print(f"index: {index}", flush=True)
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sair",
        description="Run the SAIR notebooks in order with one parameter file (resumes by default).",
    )
    p.add_argument(
        "--params", required=True, type=Path, help="parameter file, e.g. params/default.yaml"
    )
    p.add_argument(
        "--run-id", help="run folder name under --outputs (default: the params file's stem)"
    )
    p.add_argument(
        "--outputs", type=Path, default=Path("outputs"), help="outputs folder (default: outputs)"
    )
    p.add_argument(
        "--notebooks",
        type=Path,
        default=Path("notebooks"),
        help="notebooks folder (default: notebooks)",
    )
    p.add_argument("--only", help="comma-separated stages to run, by number or name (e.g. 00,01)")
    p.add_argument("--force", action="store_true", help="re-run selected stages even when complete")
    p.add_argument(
        "--reuse",
        metavar="RUN_ID",
        help="link this run's missing stages to another run's results with the same inputs",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m sairlib.run`` / ``sair``)."""
    args = build_parser().parse_args(argv)
    try:
        return run_chain(
            args.params, args.notebooks, args.outputs, args.run_id, args.only, args.force, args.reuse
        )
    except (ParamsError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
