"""GRPO rewards: outcome, format and step-wise rewards, their composite, and the complexity penalty.

A completion is read from its token ids (never from decoded text) into a :class:`Rollout`:
its segments (:meth:`sairlib.sequence.Layout.parse`) and its images (decoded by the codec).
Each reward maps one rollout to a number in 0..1::

    r = read_rollout(task, completion_ids, policy.layout, policy.codec)
    outcome_reward(r, analyzer, weights)   # Analyzer's score of the final image vs the ORIGINAL request
    format_reward(r)                       # 1 iff the segments follow one of the three modes exactly
    step_reward(r, analyzer)               # mean 0..1 judgement of the text segments E, R, S

    R = composite({"outcome": .., "format": .., "step": ..}, alpha={"outcome": 1, "format": .2, "step": .5})

The intra-group complexity penalty then rescales, within each group of completions sampled for
one request, those within ``epsilon`` of the group's best reward by ``N_img* / N_img_i``
(``N_img*``: the fewest images among them), so that at equal quality fewer images win::

    complexity_penalty([0.9, 0.88, 0.5], n_images=[3, 1, 1], group_size=3, epsilon=0.05)
    # -> [0.3, 0.88, 0.5]

Rewards are looked up by name in :data:`REWARDS` (as in open-r1); :func:`reward_funcs` wraps
them as TRL reward functions (``prompts, completions, completion_ids, **kwargs -> list[float]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .canvas import fresh_step, start_canvas
from .interfaces import DIMENSIONS, Assessment, X2IInput
from .modes import DEFAULT_MAX_ROUNDS, infer_mode
from .sequence import Layout, Parsed

COMPONENTS: tuple[str, ...] = ("outcome", "format", "step")
REWARD_KEYS = {"alpha": list, "weights": dict, "epsilon": float, "penalty": bool, "step_reward": bool,
               "strict_grammar": bool}
DEFAULT_REWARD = {"alpha": [1.0, 0.2, 0.5], "weights": {d: 1.0 for d in DIMENSIONS}, "epsilon": 0.05,
                  "penalty": True, "step_reward": True, "strict_grammar": False}


# ---------------------------------------------------------------------------- reading a completion
@dataclass
class Rollout:
    """One completion to score: its request, its parsed segments and its decoded images (in order)."""

    task: X2IInput
    parsed: Parsed
    images: list[np.ndarray] = field(default_factory=list)

    @property
    def kinds(self) -> str:
        return "".join(s.kind for s in self.parsed.segments)

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def mode(self) -> str | None:
        """The mode the segments follow, or None (not well formed, or no mode's grammar)."""
        if not self.parsed.ok or not self.parsed.ended or not self.kinds or set(self.kinds) - set("GERS"):
            return None
        return infer_mode(self.kinds, max_rounds=DEFAULT_MAX_ROUNDS)


def read_rollout(task: X2IInput, completion_ids: Sequence[int], layout: Layout, codec: Any) -> Rollout:
    """Parse completion ids (image codes read from the ids) and decode each image with ``codec``."""
    parsed = layout.parse(list(completion_ids))
    images = [np.asarray(codec.decode(np.asarray(s.codes, dtype=np.int64))) for s in parsed.segments
              if s.kind == "G"]
    return Rollout(task, parsed, images)


# ---------------------------------------------------------------------------- the three rewards
def outcome_reward(r: Rollout, analyzer: Any, weights: Mapping[str, float] | None = None) -> float:
    """The Analyzer's weighted, 0..1-normalised score of the final image against the original request
    (0 when the completion drew no image)."""
    a = outcome_assessment(r, analyzer)
    return 0.0 if a is None else float(a.normalised(dict(weights) if weights else None))


def outcome_assessment(r: Rollout, analyzer: Any) -> Assessment | None:
    return analyzer.assess(r.task, r.images[-1]) if r.images else None


def format_reward(r: Rollout, strict_grammar: bool = False) -> float:
    """1 iff the completion parsed, ended with ``<eos>`` and its segment kinds follow one of the three
    modes exactly (no partial credit); with ``strict_grammar`` also every text parses in the world grammar."""
    if r.mode is None:
        return 0.0
    if strict_grammar:
        from .world.grammar import GrammarError, parse_evaluation, parse_op, parse_reflection

        read = {"E": parse_evaluation, "R": parse_reflection, "S": parse_op}
        try:
            for s in r.parsed.segments:
                if s.kind in read:
                    read[s.kind](s.text)
        except GrammarError:
            return 0.0
    return 1.0


@dataclass(frozen=True)
class Judged:
    """One text segment's step-wise judgement: its index among the segments, kind, text and score."""

    index: int
    kind: str
    text: str
    score: float


def step_judgements(r: Rollout, analyzer: Any) -> list[Judged]:
    """``analyzer.judge_text`` of every text segment (E, R, S), each with the context its kind needs.

    E and R are judged against the latest image before them; an E after a plan step also gets
    the step's text and the canvas before it (``before``, None for a fresh ``draw`` step); an S
    gets the canvas it applies to (the plan's start canvas for the first step, then the latest
    step image). A text with no image to judge against (E or R before any image) scores 0.
    """
    out: list[Judged] = []
    image: np.ndarray | None = None                 # latest image
    canvas = start_canvas(r.task)                     # what the next plan step applies to
    step: str | None = None                          # the current plan step
    before: np.ndarray | None = None                 # the canvas before the current step
    images = iter(r.images)
    for i, s in enumerate(r.parsed.segments):
        if s.kind == "G":
            image = next(images)
            if step is not None:
                canvas = image
            continue
        if s.kind == "S":
            step, before = s.text, (None if fresh_step(s.text) else canvas)
            score = analyzer.judge_text("S", s.text, {"task": r.task, "image": before})
        elif s.kind in ("E", "R"):
            if image is None:
                score = 0.0
            else:
                ctx: dict[str, Any] = {"task": r.task, "image": image}
                if s.kind == "E" and step is not None:
                    ctx.update(step=step, before=before)
                score = analyzer.judge_text(s.kind, s.text, ctx)
        else:  # a D segment has no place in an answer: judged false
            score = 0.0
        out.append(Judged(i, s.kind, s.text, float(score)))
    return out


def step_reward(r: Rollout, analyzer: Any) -> float:
    """Mean judgement of the completion's text segments (0 when it has none)."""
    js = step_judgements(r, analyzer)
    return float(np.mean([j.score for j in js])) if js else 0.0


# ---------------------------------------------------------------------------- composite and penalty
def check_reward(p: Mapping[str, Any], where: str = "reward") -> dict[str, Any]:
    """Validate the ``reward`` parameters (unknown keys and wrong types name the key); defaults filled."""
    if not isinstance(p, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {type(p).__name__}")
    unknown = set(p) - set(REWARD_KEYS)
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key (known: {', '.join(REWARD_KEYS)})")
    out = {**DEFAULT_REWARD, **p}
    alpha = out["alpha"]
    if (not isinstance(alpha, (list, tuple)) or len(alpha) != 3
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and a >= 0 for a in alpha)):
        raise ValueError(f"{where}.alpha: must be 3 non-negative numbers (outcome, format, step), got {alpha!r}")
    w = out["weights"]
    if not isinstance(w, Mapping) or set(w) - set(DIMENSIONS) or not w:
        raise ValueError(f"{where}.weights: must map some of {DIMENSIONS} to weights, got {w!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise ValueError(f"{where}.weights: must be non-negative numbers with a positive sum, got {w!r}")
    eps = out["epsilon"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{where}.epsilon: must be a non-negative number, got {eps!r}")
    for k in ("penalty", "step_reward", "strict_grammar"):
        if not isinstance(out[k], bool):
            raise ValueError(f"{where}.{k}: must be true or false, got {out[k]!r}")
    out["alpha"] = [float(a) for a in alpha]
    out["weights"] = {d: float(v) for d, v in w.items()}
    out["epsilon"] = float(eps)
    return out


def alphas(reward: Mapping[str, Any]) -> dict[str, float]:
    """The component weights of a checked ``reward`` dict; ``step_reward: false`` zeroes the step term."""
    a = dict(zip(COMPONENTS, reward["alpha"]))
    if not reward["step_reward"]:
        a["step"] = 0.0
    return a


def composite(components: Mapping[str, float], alpha: Mapping[str, float]) -> float:
    """``α1·R_outcome + α2·R_format + α3·R_step`` (components with α = 0 may be missing)."""
    return float(sum(a * components[k] for k, a in alpha.items() if a != 0))


def complexity_penalty(rewards: Sequence[float] | np.ndarray, n_images: Sequence[int] | np.ndarray,
                       group_size: int, epsilon: float) -> np.ndarray:
    """The intra-group complexity penalty over consecutive groups of ``group_size`` completions.

    In each group, completions whose reward is within ``epsilon`` of the group's best are
    multiplied by ``N_img* / N_img_i`` (``N_img*`` the fewest images among them); the others are
    unchanged. A completion without any image counts as one image. Rewards must be >= 0.
    """
    return np.asarray(rewards, dtype=np.float64) * penalty_factors(rewards, n_images, group_size, epsilon)


def penalty_factors(rewards: Sequence[float] | np.ndarray, n_images: Sequence[int] | np.ndarray,
                    group_size: int, epsilon: float) -> np.ndarray:
    """The multiplier of each completion under :func:`complexity_penalty` (1 where unpenalised)."""
    near, ng = _near_best(rewards, n_images, group_size, epsilon)
    fewest = np.where(near, ng, np.inf).min(1, keepdims=True)
    return np.where(near, fewest / ng, 1.0).reshape(-1)


def _near_best(rewards: Sequence[float] | np.ndarray, n_images: Sequence[int] | np.ndarray, group_size: int,
               epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Checked inputs, per group (one row each): which completions are within ``epsilon`` of the
    group's best, and the image counts (no image counts as one)."""
    r = np.asarray(rewards, dtype=np.float64)
    n = np.maximum(np.asarray(n_images, dtype=np.float64), 1.0)
    if r.shape != n.shape or r.ndim != 1:
        raise ValueError(f"n_images: need one per reward ({r.shape}), got {n.shape}")
    if not isinstance(group_size, int) or group_size < 1 or len(r) % group_size:
        raise ValueError(f"group_size: must be a positive integer dividing {len(r)}, got {group_size!r}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon: must be >= 0, got {epsilon!r}")
    if np.any(r[~np.isnan(r)] < 0):
        raise ValueError("rewards: the complexity penalty needs non-negative rewards")
    rg, ng = r.reshape(-1, group_size), n.reshape(-1, group_size)
    finite = ~np.isnan(rg)
    best = np.where(finite, rg, -np.inf).max(1, keepdims=True)
    return finite & (rg >= best - epsilon), ng


def penalty_reach(rewards: Sequence[float] | np.ndarray, n_images: Sequence[int] | np.ndarray,
                  group_size: int, epsilon: float) -> dict[str, float]:
    """How much of a batch the complexity penalty can touch, whether or not it is applied.

    ``near_best``: the share of completions within ``epsilon`` of their group's best (at least
    one per group); ``mixed_groups``: the share of groups whose near-best completions differ in
    their image counts, the only groups the penalty changes. When rewards are fine-grained and
    ``epsilon`` small, the best stands alone in most groups and the penalty idles.
    """
    near, ng = _near_best(rewards, n_images, group_size, epsilon)
    counts = np.where(near, ng, np.nan)
    mixed = np.nanmax(counts, 1) > np.nanmin(counts, 1)
    return {"near_best": float(near.mean()), "mixed_groups": float(mixed.mean())}


# ---------------------------------------------------------------------------- registry and TRL wrappers
@dataclass
class RewardContext:
    """What the rewards need besides a completion: the requests by id, the Analyzer, the token layout,
    the codec and the checked ``reward`` parameters. Caches each completion's rollout and scores, so
    that the three reward functions of one batch perceive each image once."""

    tasks: Mapping[str, X2IInput]
    analyzer: Any
    layout: Layout
    codec: Any
    reward: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REWARD))
    _cache: dict[tuple, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.reward = check_reward(self.reward)

    def rollout(self, task_id: str, completion_ids: Sequence[int]) -> Rollout:
        return self._entry(task_id, completion_ids)["rollout"]

    def score(self, name: str, task_id: str, completion_ids: Sequence[int]) -> float:
        e = self._entry(task_id, completion_ids)
        if name not in e:
            e[name] = float(REWARDS[name](e["rollout"], self))
        return e[name]

    def _entry(self, task_id: str, completion_ids: Sequence[int]) -> dict[str, Any]:
        key = (task_id, tuple(int(t) for t in completion_ids))
        if key not in self._cache:
            if task_id not in self.tasks:
                raise KeyError(f"task_id: unknown request {task_id!r}")
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = {"rollout": read_rollout(self.tasks[task_id], key[1], self.layout, self.codec)}
        return self._cache[key]


REWARDS: dict[str, Callable[[Rollout, RewardContext], float]] = {
    "outcome": lambda r, c: outcome_reward(r, c.analyzer, c.reward["weights"]),
    "format": lambda r, c: format_reward(r, c.reward["strict_grammar"]),
    "step": lambda r, c: step_reward(r, c.analyzer),
}


def score_all(r: Rollout, ctx: RewardContext) -> dict[str, float]:
    """Every registered reward of one rollout, by name."""
    return {name: float(fn(r, ctx)) for name, fn in REWARDS.items()}


def reward_funcs(names: Sequence[str], ctx: RewardContext) -> list[Callable[..., list[float]]]:
    """TRL reward functions for ``names`` (each named after its reward, so TRL logs ``rewards/<name>``).

    Each reads ``completion_ids`` and the ``task_id`` column (the request's id, from the dataset
    or the rollout function) and returns one float per completion.
    """
    out = []
    for name in names:
        if name not in REWARDS:
            raise ValueError(f"reward: unknown reward {name!r} (known: {', '.join(REWARDS)})")

        def fn(prompts: list, completions: list, completion_ids: list, task_id: list | None = None,
               _name: str = name, **kwargs: Any) -> list[float]:
            ids = task_id if task_id is not None else prompts
            return [ctx.score(_name, t, c) for t, c in zip(ids, completion_ids)]

        fn.__name__ = name
        fn.__qualname__ = name
        out.append(fn)
    return out


__all__ = ["COMPONENTS", "REWARDS", "REWARD_KEYS", "DEFAULT_REWARD", "Rollout", "Judged", "RewardContext",
           "read_rollout", "outcome_reward", "outcome_assessment", "format_reward", "step_judgements", "step_reward",
           "check_reward", "alphas", "composite", "complexity_penalty", "penalty_factors", "penalty_reach",
           "reward_funcs", "score_all"]
