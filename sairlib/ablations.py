"""The paper's eight ablation configurations, run through the notebook runner, per seed.

A configuration is data: a row of ``CONFIGS`` (id, label, which table it belongs to, the stage
whose model is evaluated) plus a parameter file ``params/ablations/<id>.yaml`` holding only the
parameters that differ from the main run. For each configuration and seed, ``run_config``:

1. merges the main run's parameters (``run_dir/params.yaml``), the overrides (nested mappings
   merged key by key over the notebooks' defaults) and ``seed``;
2. prepares ``run_dir/05_ablations/<id>/seed<k>/`` whose ``00_world`` and ``01_pipeline`` are
   links to the main run's, and links every later stage too while its effective parameters
   (and those of all earlier stages) equal the main run's, so nothing is computed twice;
3. runs the remaining stages with ``sairlib.run.run_chain`` (``--only``), which resumes: a
   finished sub-run is skipped;
4. evaluates the final model on the mini benchmarks (``bench.json``, kept while the model and
   the benchmark settings are unchanged).

Two configurations with the same effective parameters and evaluated stage (``Full Mix (SFT)``
and ``SFT Only``) share one result. The base model is evaluated as the ``base`` row.

    from sairlib.ablations import run_ablations
    results = run_ablations("outputs/default", ["direct_only", "sft_rl_full"], seeds=[0],
                            bench={"n_per_tag": 4, "samples": 2, "task_seed": 0})
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from .metrics import METRICS_FILE, RUN_KEY, read_json, write_json
from .params import RESERVED, UNKNOWN, deep_merge, notebook_parameters, read_yaml

STAGE_DIR = "05_ablations"
RESULTS_FILE = "results.json"
BENCH_FILE = "bench.json"
SHARED = ("00_world", "01_pipeline")
MODEL_DIRS: dict[str, str] = {"00_world": "base", "03_sft": "model", "04_grpo": "model"}


@dataclass(frozen=True)
class AblationConfig:
    id: str
    label: str
    table: str        # "modes" (SFT data) or "training" (SFT / RL)
    final_stage: str  # the stage whose model is evaluated


CONFIGS: tuple[AblationConfig, ...] = (
    AblationConfig("direct_only", "Direct Only", "modes", "03_sft"),
    AblationConfig("no_reflection", "w/o Reflection", "modes", "03_sft"),
    AblationConfig("no_multistep", "w/o Multi-step", "modes", "03_sft"),
    AblationConfig("full_mix_sft", "Full Mix (SFT)", "modes", "03_sft"),
    AblationConfig("sft_only", "SFT Only", "training", "03_sft"),
    AblationConfig("no_step_reward", "w/o Step-wise Reward", "training", "04_grpo"),
    AblationConfig("no_penalty", "w/o Complexity Penalty", "training", "04_grpo"),
    AblationConfig("sft_rl_full", "SFT + RL (Full)", "training", "04_grpo"),
)
BASE = AblationConfig("base", "Base model", "main", "00_world")
BY_ID: dict[str, AblationConfig] = {c.id: c for c in (BASE, *CONFIGS)}
# the results table: the base model, the SFT model and the full method
MAIN_ROWS: tuple[str, ...] = ("base", "full_mix_sft", "sft_rl_full")


def config(config_id: str) -> AblationConfig:
    try:
        return BY_ID[config_id]
    except KeyError:
        raise ValueError(f"ablation.configs: unknown configuration {config_id!r} (known: {', '.join(BY_ID)})") from None


def load_overrides(params_dir: str | os.PathLike, config_id: str) -> dict[str, Any]:
    """``<params_dir>/<id>.yaml`` (``{}`` for the base row)."""
    if config(config_id) is BASE:
        return {}
    path = Path(params_dir) / f"{config_id}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no parameter file for ablation {config_id!r}")
    return read_yaml(path)


def declared_defaults(notebooks: Iterable[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """stage name -> {parameter: default} (runner-owned names left out)."""
    return {Path(nb).stem: {k: v for k, v in notebook_parameters(nb).items() if k not in RESERVED}
            for nb in notebooks}


def merged_params(main: dict[str, Any], overrides: dict[str, Any], seed: int,
                  defaults: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sub-run's parameter file: main, then overrides (over the defaults where main lacks a key), then seed."""
    first_default = {}
    for stage_defaults in defaults.values():
        for k, v in stage_defaults.items():
            first_default.setdefault(k, v)
    out = copy.deepcopy(main)
    for k, v in overrides.items():
        if k not in first_default:
            raise ValueError(f"override {k!r}: declared by no notebook")
        start = out.get(k, first_default[k])
        out[k] = deep_merge(start if start is not UNKNOWN else None, v)
    out["seed"] = seed
    return out


def effective(params: dict[str, Any], stage_defaults: dict[str, Any]) -> dict[str, Any]:
    """What a stage actually receives: its declared names, from the file or the default."""
    return {k: params.get(k, d) for k, d in stage_defaults.items()}


def stage_names(notebooks: Sequence[str | os.PathLike]) -> list[str]:
    return [Path(nb).stem for nb in notebooks]


def _complete(stage_dir: Path) -> dict[str, Any] | None:
    try:
        block = read_json(stage_dir / METRICS_FILE).get(RUN_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    return block if isinstance(block, dict) and block.get("status") == "complete" else None


def _link(target: Path, link: Path) -> None:
    if link.is_symlink():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    elif link.exists():
        return  # computed here earlier: the runner's resume decides
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link, target_is_directory=True)


@dataclass
class SubRun:
    config: AblationConfig
    seed: int
    dir: Path
    params_file: Path
    linked: list[str]
    to_run: list[str]
    key: str  # identity of the evaluated model's inputs (configurations sharing it share a result)

    @property
    def model_dir(self) -> Path:
        return self.dir / self.config.final_stage / MODEL_DIRS[self.config.final_stage]


def prepare(run_dir: str | os.PathLike, cfg: AblationConfig, seed: int, notebooks: Sequence[str | os.PathLike],
            params_dir: str | os.PathLike) -> SubRun:
    """Write the sub-run's parameter file and links; say which stages remain to run."""
    run_dir = Path(run_dir)
    names = stage_names(notebooks)
    if cfg.final_stage not in names:
        raise ValueError(f"ablation {cfg.id}: stage {cfg.final_stage!r} is not in the chain ({', '.join(names)})")
    defaults = declared_defaults(notebooks)
    main = read_yaml(run_dir / "params.yaml")
    params = merged_params(main, load_overrides(params_dir, cfg.id), seed, defaults)
    upto = names[:names.index(cfg.final_stage) + 1]
    key = hashlib.sha256(json.dumps({"final": cfg.final_stage, "params": {s: effective(params, defaults[s])
                                     for s in upto if s not in SHARED}}, sort_keys=True, default=str)
                         .encode()).hexdigest()[:16]
    if cfg is BASE:
        return SubRun(cfg, seed, run_dir, run_dir / "params.yaml", ["00_world"], [], key)
    sub = run_dir / STAGE_DIR / cfg.id / f"seed{seed}"
    sub.mkdir(parents=True, exist_ok=True)
    params_file = sub.parent / f"seed{seed}.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    linked, to_run, same = [], [], True
    for s in upto:
        main_done = _complete(run_dir / s) is not None
        if s in SHARED:
            if not main_done:
                raise RuntimeError(f"ablation {cfg.id}: the main run's {s} is not complete; run it first")
            same_here = True
        else:
            same_here = effective(params, defaults[s]) == effective(main, defaults[s])
        same = same and same_here and main_done
        if same:
            _link(run_dir / s, sub / s)
            linked.append(s)
        else:
            to_run.append(s)
    return SubRun(cfg, seed, sub, params_file, linked, to_run, key)


def run_subrun(sr: SubRun, notebooks_dir: str | os.PathLike,
               runner: Callable[..., int] | None = None) -> None:
    """Run (or resume) the stages the sub-run does not link; raise naming the failed stage."""
    if not sr.to_run:
        return
    if runner is None:
        from .run import run_chain as runner
    status = runner(sr.params_file, Path(notebooks_dir), sr.dir.parent, run_id=sr.dir.name,
                    only=",".join(sr.to_run))
    if status != 0:
        failed = [s for s in sr.to_run if (sr.dir / s / "failed.json").exists()]
        where = sr.dir / failed[0] / "failed.json" if failed else sr.dir
        raise RuntimeError(f"ablation {sr.config.id} seed {sr.seed}: the chain failed (see {where})")


def evaluate_model(model_dir: str | os.PathLike, world: dict[str, Any], bench: dict[str, Any], seed: int) -> dict:
    """The mini benchmarks on a saved policy (seed: the sampling seed)."""
    from .evaluation.world_bench import run_world_benchmarks
    from .policy import Policy, best_device
    from .world import WorldAnalyzer

    policy = Policy.load(model_dir, device=best_device())
    opts = {k: v for k, v in bench.items() if k not in ("n_per_tag", "samples", "task_seed")}
    if not opts.get("max_new_tokens"):
        opts.pop("max_new_tokens", None)
    return run_world_benchmarks(policy, WorldAnalyzer(grid=world.get("grid", 4)), world,
                                n_per_tag=bench["n_per_tag"], samples=bench["samples"], seed=seed,
                                task_seed=bench.get("task_seed", 0), **opts)


def evaluate_subrun(sr: SubRun, world: dict[str, Any], bench: dict[str, Any],
                    evaluate: Callable[..., dict] = evaluate_model) -> dict[str, Any]:
    """``bench.json`` of the sub-run, computed unless the model and the settings are unchanged."""
    block = _complete(sr.dir / sr.config.final_stage) or {}
    identity = {"model_finished_at": block.get("finished_at"), "model_params_hash": block.get("params_hash"),
                "bench": bench, "seed": sr.seed, "world": world}
    path = (sr.dir / STAGE_DIR / "base" / f"seed{sr.seed}" if sr.config is BASE else sr.dir) / BENCH_FILE
    if path.is_file():
        stored = read_json(path)
        if stored.get("identity") == json.loads(json.dumps(identity, default=str)):
            return stored["result"]
    result = evaluate(sr.model_dir, world, bench, sr.seed)
    write_json(path, {"identity": identity, "result": result})
    return result


def run_ablations(run_dir: str | os.PathLike, configs: Sequence[str], seeds: Sequence[int], bench: dict[str, Any],
                  notebooks_dir: str | os.PathLike = "notebooks", params_dir: str | os.PathLike = "params/ablations",
                  include_base: bool = True, evaluate: Callable[..., dict] = evaluate_model,
                  runner: Callable[..., int] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every configuration x seed, resumable; writes and returns ``05_ablations/results.json``.

    Result: ``{"configs": {id: {"label", "table", "final_stage", "seeds": {seed: result}}}}``,
    a result being ``run_world_benchmarks``' output without its per-sample rows (those stay in
    each ``bench.json``) plus ``dir``, ``linked``, ``ran`` and ``same_as`` (a shared result).
    """
    run_dir = Path(run_dir)
    notebooks = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    chosen = [config(c) for c in configs]
    if include_base:
        chosen = [BASE] + [c for c in chosen if c is not BASE]
    if not seeds:
        raise ValueError("ablation.seeds: empty")
    world = read_yaml(run_dir / "params.yaml").get("world") or {}
    out: dict[str, Any] = {"seeds": list(seeds), "bench": bench, "configs": {}}
    for c in chosen:
        out["configs"][c.id] = {"label": c.label, "table": c.table, "final_stage": c.final_stage, "seeds": {}}
    done: dict[tuple[str, int], str] = {}
    for seed in seeds:
        for c in chosen:
            sr = prepare(run_dir, c, seed, notebooks, params_dir)
            if (sr.key, seed) in done:
                first = done[(sr.key, seed)]
                res = dict(out["configs"][first]["seeds"][str(seed)], same_as=first)
                log(f"{c.id} seed {seed}: same parameters as {first}, result shared")
            else:
                log(f"{c.id} seed {seed}: linked {','.join(sr.linked) or '-'}; running {','.join(sr.to_run) or '-'}")
                run_subrun(sr, notebooks_dir, runner)
                full = evaluate_subrun(sr, world, bench, evaluate)
                res = {k: v for k, v in full.items() if k != "rows"}
                res.update(dir=str(sr.dir.relative_to(run_dir)), linked=sr.linked, ran=sr.to_run, same_as=None)
                done[(sr.key, seed)] = c.id
            out["configs"][c.id]["seeds"][str(seed)] = res
            write_json(run_dir / STAGE_DIR / RESULTS_FILE, out)
    return out


def load_rows(run_dir: str | os.PathLike, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every per-sample row of every evaluated configuration and seed, tagged with both."""
    run_dir = Path(run_dir)
    rows = []
    for cid, c in results["configs"].items():
        for seed, res in c["seeds"].items():
            src = res.get("same_as") or cid
            sub = run_dir / STAGE_DIR / "base" / f"seed{seed}" if src == "base" else \
                run_dir / STAGE_DIR / src / f"seed{seed}"
            path = sub / BENCH_FILE
            if path.is_file():
                rows += [{**r, "config": cid, "seed": int(seed)} for r in read_json(path)["result"].get("rows", [])]
    return rows
