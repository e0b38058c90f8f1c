"""The base model's capability profile on held-out world tasks (the paper's two bottlenecks).

    profile = capability_profile(policy, WorldAnalyzer(), n_tasks=200, samples=2, seed=0)

- ``t2i``: one-pass text-to-image pass rate (all four dimensions pass) by complexity;
- ``edit``: one-pass pass rate of single factual edits (add, remove, recolour, resize, count, move),
  also by category;
- ``step``: pass rate of explicit single-object plan steps (what multi-step planning executes);
- ``understanding``: scene descriptions read back exactly, and evaluation verdicts (pass/fail)
  that agree with the Analyzer (also by the candidate's kind: target, wrong colour, missing, moved, noise;
  and wrong colours by where the right colour can be read: the same cell of an input, elsewhere in an
  input, or only the request);
- ``compare``: the same verdicts against a request to change nothing (is the candidate the input image?),
  which isolates the comparison of two images from reading the request.

Every generation goes through ``sairlib.generation.generate`` (the constrained decoder).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from .generation import generate
from .interfaces import X2IInput
from .policy import Policy
from .pretrain import allowed_for_base, keep_task, random_plan_step
from .world.analyzer import WorldAnalyzer
from .world.corpus import colour_source, draw_candidate, recoloured_object
from .world.grammar import GrammarError, parse_evaluation, parse_scene, say_op
from .world.render import render
from .world.scene import Scene
from .world.spec import constraints_for_step
from .world.tasks import WorldConfig, make_tasks

FACTUAL = ("add", "remove", "recolour", "resize", "count", "move")
# Budget of an evaluation's words: the longest world evaluation written "seen_first" (the scene first)
# has about 150 (the 99th percentile 126, over 1,500 drawn candidates); the other orders under 80.
EVALUATION_TOKENS = 224


def _rate_by(keys: Sequence[str], ok: Sequence[bool]) -> dict[str, dict[str, float]]:
    """Pass rate and count per key (an edit's category, a candidate's perturbation), keys sorted."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for k, v in zip(keys, ok):
        groups[str(k)].append(bool(v))
    return {k: {"rate": float(np.mean(v)), "n": len(v)} for k, v in sorted(groups.items())}


def _first_image(gen: Any) -> np.ndarray | None:
    return gen.images[0] if gen.images else None


def one_pass_images(policy: Policy, prompts: Sequence[list[int]], seed: int, temperature: float,
                    batch_size: int) -> list[np.ndarray | None]:
    """The first image each prompt's completion draws (None when it draws none)."""
    budget = policy.layout.tokens_per_image + 3
    gens = generate(policy.model, policy.layout, list(prompts), budget, temperature=temperature, seed=seed,
                    batch_size=batch_size, codec=policy.codec)
    return [_first_image(g) for g in gens]


def _pass_rates(analyzer: WorldAnalyzer, tasks: Sequence[X2IInput], images: Sequence[np.ndarray | None],
                image_size: int) -> list[bool]:
    blank = render(Scene((), analyzer.grid), image_size)
    imgs = [im if im is not None else blank for im in images]
    passed = [a.passed for a in analyzer.assess_many(list(tasks), imgs)]
    return [p and im is not None for p, im in zip(passed, images)]


def capability_profile(policy: Policy, analyzer: WorldAnalyzer, n_tasks: int, samples: int, seed: int,
                       cfg: WorldConfig = WorldConfig(), temperature: float = 1.0,
                       batch_size: int = 256) -> dict[str, Any]:
    """Measure the profile on held-out (eval split) tasks; returns plain numbers for metrics."""
    size = cfg.image_size
    prompt = policy.prompt
    out: dict[str, Any] = {"n_tasks": n_tasks, "samples": samples, "temperature": temperature}
    # one-pass text-to-image, by complexity
    t2i = make_tasks(n_tasks, "eval", seed, family="t2i", cfg=cfg)
    reps = [t for t in t2i for _ in range(samples)]
    ok = _pass_rates(analyzer, reps, one_pass_images(policy, [prompt(t) for t in reps], seed, temperature,
                                                     batch_size), size)
    by_c: dict[int, list[bool]] = defaultdict(list)
    for t, p in zip(reps, ok):
        by_c[t.complexity].append(p)
    out["t2i_by_complexity"] = {str(c): float(np.mean(v)) for c, v in sorted(by_c.items())}
    out["t2i_n_by_complexity"] = {str(c): len(v) for c, v in sorted(by_c.items())}
    for name, lo, hi in (("t2i_1_2", 1, 2), ("t2i_3_5", 3, 5), ("t2i_6_plus", 6, 99)):
        v = [p for c, ps in by_c.items() if lo <= c <= hi for p in ps]
        out[name] = float(np.mean(v)) if v else float("nan")
    # single factual edits
    edits = [t for t in make_tasks(n_tasks, "eval", seed + 1, family="edit", categories=FACTUAL, cfg=cfg)]
    reps = [t for t in edits for _ in range(samples)]
    ok = _pass_rates(analyzer, reps, one_pass_images(policy, [prompt(t) for t in reps], seed + 1, temperature,
                                                     batch_size), size)
    out["edit_single"] = float(np.mean(ok))
    out["edit_by_category"] = _rate_by([t.meta.get("category", "?") for t in reps], ok)
    # explicit plan steps
    step_tasks, step_prompts = _steps(policy, make_tasks(n_tasks, "eval", seed + 2, cfg=cfg), analyzer, seed)
    ok = _pass_rates(analyzer, step_tasks, one_pass_images(policy, step_prompts, seed + 2, temperature,
                                                           batch_size), size)
    out["step_single"] = float(np.mean(ok)) if ok else float("nan")
    # understanding
    out.update(_understanding(policy, analyzer, make_tasks(n_tasks, "eval", seed + 3, cfg=cfg), seed, batch_size, size))
    return out


def _steps(policy: Policy, tasks: Sequence[X2IInput], analyzer: WorldAnalyzer,
           seed: int) -> tuple[list[X2IInput], list[list[int]]]:
    """One plan step per task, as a request of its own, with a spec checking exactly that step."""
    rng = np.random.default_rng(seed)
    L, enc = policy.layout, policy.codec.encode
    xs, prompts = [], []
    for t in tasks:
        if not allowed_for_base(t):
            continue
        step = random_plan_step(t, analyzer, rng)
        if step is None:
            continue
        images = tuple(render(s) for s in step.shown)
        spec = constraints_for_step(step.before, step.after)
        text = say_op(step.op)
        xs.append(X2IInput(f"{t.id}-step{step.index}", text, images, {"family": "step", "complexity": 1}, spec))
        prompts.append(L.prompt(text, [enc(im) for im in images]))
    return xs, prompts


def _understanding(policy: Policy, analyzer: WorldAnalyzer, tasks: Sequence[X2IInput], seed: int, batch_size: int,
                   image_size: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    L, enc = policy.layout, policy.codec.encode
    # descriptions
    scenes = [t.target.target for t in tasks]
    prompts = [L.prompt("", [enc(render(s, image_size))]) + [L.open_tag["D"]] for s in scenes]
    gens = generate(policy.model, L, prompts, 160, temperature=0.0, seed=seed, batch_size=batch_size, start_in="D")
    exact = []
    for g, s in zip(gens, scenes):
        texts = [seg.text for seg in g.parsed.segments if seg.kind == "D"]
        try:
            exact.append(bool(texts) and parse_scene(texts[0], s.grid) == s)
        except GrammarError:
            exact.append(False)
    # evaluation verdicts on targets and perturbed images
    ev = _verdicts(policy, analyzer, tasks, rng, seed, batch_size, image_size)
    # the same judgement against a request to change nothing (spot the difference), its own draws
    keeps = [keep_task(t.target.target, image_size) for t in tasks]
    same = _verdicts(policy, analyzer, keeps, np.random.default_rng(seed + 17), seed, batch_size, image_size)
    d, v = float(np.mean(exact)), ev["verdict"]
    return {"describe_exact": d, "evaluate_verdict": v, "understanding": (d + v) / 2,
            "evaluate_verdict_by_kind": ev["by_kind"], "evaluate_parsed": ev["parsed"],
            "evaluate_said_done": ev["said_done"], "evaluate_truly_passed": ev["truly_passed"],
            "evaluate_samples": ev["samples"], "evaluate_wrong_colour_by_source": ev["wrong_colour_by_source"],
            "compare_verdict": same["verdict"], "compare_verdict_by_kind": same["by_kind"]}


def _verdicts(policy: Policy, analyzer: WorldAnalyzer, tasks: Sequence[X2IInput], rng: np.random.Generator,
              seed: int, batch_size: int, image_size: int) -> dict[str, Any]:
    """Each task judged on one candidate (its target or a one-error version, drawn uniformly): how
    often the model's decision ("done" or not) agrees with the Analyzer's, overall, by kind, and for
    wrong colours by where the right colour can be read (``world.corpus.colour_source``)."""
    L, enc = policy.layout, policy.codec.encode
    cands, sources = [], []
    for t in tasks:
        kind, img = draw_candidate(t, rng, image_size)
        if kind == "wrong_colour":  # where the right colour can be read (world.corpus.colour_source)
            obj = recoloured_object(t, img, image_size)
            sources.append(colour_source(t, obj) if obj is not None else "?")
        else:
            sources.append(None)
        codes = enc(img)
        seen = policy.codec.decode(codes)
        cands.append((t, seen, policy.prompt(t) + L.image(codes) + [L.open_tag["E"]], kind))
    # Ask for the evaluation: after an image the model may also just end, as generation examples do.
    gens = generate(policy.model, L, [c[2] for c in cands], EVALUATION_TOKENS, temperature=0.0, seed=seed,
                    batch_size=batch_size, start_in="E")
    truth = analyzer.assess_many([c[0] for c in cands], [c[1] for c in cands])
    verdicts, parsed, said_done, samples = [], [], [], []
    for g, a in zip(gens, truth):
        texts = [seg.text for seg in g.parsed.segments if seg.kind == "E"]
        try:
            ev = parse_evaluation(texts[0], analyzer.grid) if texts else None
        except GrammarError:
            ev = None
        parsed.append(ev is not None)
        said_done.append(ev is not None and ev.decision == "done")
        verdicts.append(ev is not None and (ev.decision == "done") == a.passed)
        if len(samples) < 6:
            samples.append({"model": texts[0] if texts else "", "truth": analyzer.evaluation_text(
                a, "done" if a.passed else "reflect")})
    wrong = [(src, v) for src, v in zip(sources, verdicts) if src is not None]
    return {"verdict": float(np.mean(verdicts)), "by_kind": _rate_by([c[3] for c in cands], verdicts),
            "wrong_colour_by_source": _rate_by([w[0] for w in wrong], [w[1] for w in wrong]),
            "parsed": float(np.mean(parsed)), "said_done": float(np.mean(said_done)),
            "truly_passed": float(np.mean([a.passed for a in truth])), "samples": samples}
