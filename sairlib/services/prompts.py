"""The judge's prompts and the strict parsing of its answers, shared by every VLM backend.

A prompt is a list of chat messages in the OpenAI format; images are content parts of type
``image_url`` holding a base64 PNG data URL, each preceded by a text part that says which image
it is (``Input image 1 (given with the request)``, ``Output image (the image to judge)``...).

Answers must be one JSON object (a fenced ```json block is accepted). :func:`parse_answer` checks
it against a schema and raises :class:`AnswerError` naming what is wrong; the caller then sends
ONE repair request (:func:`repair_messages`) and gives up with a ``JudgeError`` if that fails
too. No digit is ever fished out of prose, and no score is ever made up.

    msgs = assess_messages(x, image)
    data = parse_answer(text, ASSESS_SCHEMA)   # {"instruction_score": 4, "instruction_reasoning": ...}
"""
from __future__ import annotations

import base64
import io
import json
import re
from typing import Any, Sequence

import numpy as np

from ..interfaces import DIMENSIONS, X2IInput

SYSTEM = ("You are a meticulous judge of generated images. You compare an image with the request it "
          "was made for and answer with exactly one JSON object, no other text.")

DIMENSION_HELP = {
    "instruction": "does the image do what the request asks (objects, attributes, counts, positions, edits)?",
    "consistency": "is everything the request does not ask to change kept as in the input images, and "
                   "nothing unasked-for added?",
    "quality": "is the image cleanly drawn, without artifacts or noise?",
    "knowledge": "are facts and common sense the request relies on applied correctly?",
}


class AnswerError(ValueError):
    """A judge's answer that does not fit the expected JSON schema."""


# ------------------------------------------------------------------ images
def png_data_url(image: np.ndarray) -> str:
    """An RGB uint8 array as a ``data:image/png;base64,...`` URL."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image: must be an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_parts(labelled: Sequence[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for label, im in labelled:
        parts.append({"type": "text", "text": f"{label}:"})
        parts.append({"type": "image_url", "image_url": {"url": png_data_url(im)}})
    return parts


def _inputs(x: X2IInput) -> list[tuple[str, np.ndarray]]:
    return [(f"Input image {i + 1} (given with the request)", im) for i, im in enumerate(x.images)]


def _messages(text_before: str, labelled: Sequence[tuple[str, np.ndarray]], text_after: str) -> list[dict[str, Any]]:
    content = [{"type": "text", "text": text_before}, *_image_parts(labelled), {"type": "text", "text": text_after}]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


# ------------------------------------------------------------------ prompts
def assess_messages(x: X2IInput, image: np.ndarray) -> list[dict[str, Any]]:
    dims = "\n".join(f"- {d}: {DIMENSION_HELP[d]}" for d in DIMENSIONS)
    keys = ", ".join(f'"{d}_score": <integer 1-5>, "{d}_reasoning": "<one sentence>"' for d in DIMENSIONS)
    return _messages(f"Request: {x.instruction}\n\nScore the output image on four dimensions, each an integer "
                     f"from 1 (fails completely) to 5 (perfect):\n{dims}",
                     _inputs(x) + [("Output image (the image to judge)", image)],
                     f"Answer with one JSON object: {{{keys}}}")


def reflect_messages(x: X2IInput, image: np.ndarray) -> list[dict[str, Any]]:
    return _messages(f"Request: {x.instruction}\n\nThe output image does not fully satisfy the request. Say what "
                     "is wrong with it and write one edit instruction that fixes it when applied to the output image.",
                     _inputs(x) + [("Output image (the image to fix)", image)],
                     'Answer with one JSON object: {"failure_analysis": "<what is wrong>", '
                     '"improvement_plan": "<one edit instruction for the output image>"}')


def diagnose_messages(x: X2IInput, image: np.ndarray) -> list[dict[str, Any]]:
    return _messages(f"Request: {x.instruction}\n\nRepeated attempts failed to satisfy this request. Decide why: "
                     '"complex" if the request has too many parts to draw at once (a step-by-step plan would '
                     'help), "knowledge" if it relies on a fact or concept the image gets wrong.',
                     _inputs(x) + [("Output image (the last attempt)", image)],
                     'Answer with one JSON object: {"diagnosis": "complex" or "knowledge", "reason": "<one sentence>"}')


def decompose_messages(x: X2IInput) -> list[dict[str, Any]]:
    return _messages(f"Request: {x.instruction}\n\nSplit the request into a short plan of simple steps, each one "
                     "edit or drawing instruction that adds or changes a single thing, to be carried out in order "
                     "on the current canvas (the first input image, or an empty canvas when there is none).",
                     _inputs(x),
                     'Answer with one JSON object: {"steps": ["<step 1>", "<step 2>", ...]}')


def step_done_messages(x: X2IInput, step: str, before: np.ndarray | None, after: np.ndarray) -> list[dict[str, Any]]:
    shown = ([("Canvas before the step", before)] if before is not None else []) + [("Canvas after the step", after)]
    start = "" if before is not None else " (the step starts from an empty canvas)"
    return _messages(f"Overall request: {x.instruction}\nStep: {step}{start}\n\nWas the step carried out exactly "
                     "and cleanly, changing nothing else?", shown,
                     'Answer with one JSON object: {"done": true or false, "reason": "<one sentence>"}')


TEXT_KIND_QUESTION = {
    "E": "Is this evaluation of the image true (its scores, the errors it names, its decision)?",
    "R": "Does this reflection name the image's real errors, and would its fix correct them?",
    "S": "Is this plan step a valid part of the request that the image does not show yet?",
}


def judge_text_messages(kind: str, text: str, context: dict[str, Any]) -> list[dict[str, Any]]:
    if kind not in TEXT_KIND_QUESTION:
        raise ValueError(f"kind: must be one of {sorted(TEXT_KIND_QUESTION)}, got {kind!r}")
    x = context.get("task")
    if not isinstance(x, X2IInput):
        raise ValueError("context.task: an X2IInput is required")
    shown = _inputs(x)
    if context.get("before") is not None:
        shown.append(("Canvas before the step", context["before"]))
    if context.get("image") is not None:
        shown.append(("Current image (the image the text is about)", context["image"]))
    step = f"\nStep: {context['step']}" if context.get("step") else ""
    return _messages(f"Request: {x.instruction}{step}\n{kind} text: {text}\n\n{TEXT_KIND_QUESTION[kind]}", shown,
                     'Answer with one JSON object: '
                     '{"score": <integer 1-5, 5 = fully correct>, "reason": "<one sentence>"}')


def repair_messages(messages: list[dict[str, Any]], answer: str, problem: str) -> list[dict[str, Any]]:
    """The one repair request: the conversation, the unusable answer, and what was wrong with it."""
    return [*messages, {"role": "assistant", "content": answer},
            {"role": "user", "content": f"Your answer could not be used: {problem}. Answer again with only the "
                                        "JSON object in the requested format."}]


# ------------------------------------------------------------------ strict parsing
def _int_in(lo: int, hi: int):
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer {lo}-{hi}, got {json.dumps(v)}"
        return None if lo <= v <= hi else f"must be an integer {lo}-{hi}, got {v}"
    return check


def _text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else f"must be a non-empty string, got {json.dumps(v)}"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {json.dumps(v)}"


def _choice(*options: str):
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(map(json.dumps, options))}, got {json.dumps(v)}"
    return check


def _steps(v: Any) -> str | None:
    if not isinstance(v, list) or not v:
        return f"must be a non-empty list of strings, got {json.dumps(v)[:80]}"
    bad = [i for i, s in enumerate(v) if not isinstance(s, str) or not s.strip()]
    return f"item {bad[0]} must be a non-empty string" if bad else None


ASSESS_SCHEMA = {**{f"{d}_score": _int_in(1, 5) for d in DIMENSIONS}, **{f"{d}_reasoning": _text for d in DIMENSIONS}}
REFLECT_SCHEMA = {"failure_analysis": _text, "improvement_plan": _text}
DIAGNOSE_SCHEMA = {"diagnosis": _choice("complex", "knowledge")}
DECOMPOSE_SCHEMA = {"steps": _steps}
STEP_DONE_SCHEMA = {"done": _bool}
JUDGE_TEXT_SCHEMA = {"score": _int_in(1, 5)}

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.S)


def parse_answer(text: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """The answer's JSON object, checked key by key against ``schema``; :class:`AnswerError` otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise AnswerError("the answer is empty")
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1).strip()
    try:
        data = json.loads(s)
    except json.JSONDecodeError as e:
        raise AnswerError(f"the answer is not valid JSON ({e.msg} at position {e.pos})") from None
    if not isinstance(data, dict):
        raise AnswerError(f"the answer must be a JSON object, got {type(data).__name__}")
    for key, check in schema.items():
        if key not in data:
            raise AnswerError(f"missing key {key!r}")
        problem = check(data[key])
        if problem:
            raise AnswerError(f"{key} {problem}")
    return data
