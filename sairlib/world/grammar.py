"""The world's one small language: what requests, operations, evaluations, reflections, plan
steps and scene descriptions look like as text, and the parsers that read them back exactly.

Text is lower-case words separated by single spaces; punctuation is a word of its own. The
Analyzer writes this language, the policy learns to write it, and ``parse_*`` reads it back
(``parse_x(say_x(v)) == v`` for every value, which the tests check).

    >>> from sairlib.world.spec import Desc
    >>> from sairlib.world.ops import Add, Cell
    >>> say_op(Add(Desc("circle", "red", "big"), Cell(0, 2)))
    'add a big red circle at row 1 column 3'
    >>> parse_op('add a big red circle at row 1 column 3') == Add(Desc("circle", "red", "big"), Cell(0, 2))
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

from .facts import THINGS
from .ops import (Add, Cell, Redraw, Colour, ColourRef, Draw, FactColour, ImageRef, MixColour, Move, Op, Place, Recolour,
                  RelTo, Remove, Resize, SetCount, Target, Where)
from .palette import COLOURS, DIMENSIONS, DIRECTIONS, NUMBER_WORDS, PLURAL, RELATION_WORDS, SHAPES, SINGULAR, SIZES
from .scene import Obj, Part, Scene
from .spec import (AtError, ChangedError, CountError, Desc, Error, ExtraError, MalformedError, NoiseError,
                   RelError)

DECISIONS: tuple[str, ...] = ("done", "reflect", "plan", "stop", "next", "retry")
MAX_GRID_IN_TEXT = 9


class GrammarError(ValueError):
    """Text that is not in the world's language; the message names the position and the word."""


# ====================================================================== values of whole texts
@dataclass(frozen=True)
class TextToImage:
    """A text-to-image request: objects with counts, then relations between single objects."""

    items: tuple[tuple[Desc, int], ...]
    relations: tuple[tuple[Desc, str, Desc], ...] = ()


@dataclass(frozen=True)
class OpsRequest:
    """An editing or composition request: operations in order, optionally on the scene of an input image."""

    ops: tuple[Op, ...]
    scene_from: int | None = None  # "in the scene from image k , ..."


@dataclass(frozen=True)
class Evaluation:
    """An evaluation segment (E): what the image shows (``seen_first`` only), four scores or a step
    check, the errors, the decision."""

    scores: dict[str, int] | None  # None for a step check
    errors: tuple[Error, ...]
    decision: str
    step_ok: bool | None = None  # for a step check: "step done" / "step failed"
    seen: Scene | None = None  # the objects in the image, written first by the order "seen_first"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Evaluation) and (self.scores, self.errors, self.decision, self.step_ok,
                                                  self.seen) == (other.scores, other.errors, other.decision,
                                                                 other.step_ok, other.seen)

    def __hash__(self) -> int:
        return hash((tuple(sorted((self.scores or {}).items())), self.errors, self.decision, self.step_ok, self.seen))


@dataclass(frozen=True)
class Reflection:
    """A reflection segment (R): what is wrong, and the fix as operations."""

    errors: tuple[Error, ...]
    fix: tuple[Op, ...] = field(default_factory=tuple)


# ====================================================================== writing
def _join(words: Sequence[str]) -> str:
    return " ".join(words)


def _cell(row: int, col: int) -> list[str]:
    return ["row", str(row + 1), "column", str(col + 1)]


def _num(n: int) -> str:
    if not 0 <= n < len(NUMBER_WORDS):
        raise GrammarError(f"count: {n} is outside 0..{len(NUMBER_WORDS) - 1}")
    return NUMBER_WORDS[n]


def desc_words(d: Desc, plural: bool = False) -> list[str]:
    w: list[str] = []
    if d.size:
        w.append(d.size)
    if d.colour:
        w.append(d.colour)
    noun = d.shape or "object"
    w.append((PLURAL.get(noun, "objects") if d.shape else "objects") if plural else noun)
    if d.inner is not None:
        w += ["with", "a", d.inner.colour, d.inner.shape, "inside"]
    if d.cell is not None:
        w += ["at"] + _cell(*d.cell)
    return w


def np_words(d: Desc, n: int) -> list[str]:
    if d.cell is not None:
        raise GrammarError("an indefinite description cannot name a cell")
    if n == 1:
        return ["a"] + desc_words(d)
    return (["no"] if n == 0 else [_num(n)]) + desc_words(d, plural=True)


def _target(t: Target) -> list[str]:
    if isinstance(t, ImageRef):
        return ["the", "character" if t.character else "object", "from", "image", str(t.k)]
    return ["the"] + desc_words(t)


def _where(w: Where) -> list[str]:
    if isinstance(w, Cell):
        return ["at"] + _cell(w.row, w.col)
    return list(RELATION_WORDS[w.rel]) + _target(w.target)


def _colour(c: ColourRef) -> list[str]:
    if isinstance(c, Colour):
        return [c.name]
    if isinstance(c, FactColour):
        return ["the", "colour", "of", c.thing]
    return ["the", "mix", "of", c.a, "and", c.b]


def op_words(op: Op) -> list[str]:
    if isinstance(op, Draw):
        return ["draw"] + np_words(op.desc, 1) + ["at"] + _cell(op.where.row, op.where.col)
    if isinstance(op, Add):
        return ["add"] + np_words(op.desc, 1) + _where(op.where)
    if isinstance(op, Place):
        return ["place"] + _target(op.subject) + _where(op.where)
    if isinstance(op, Remove):
        return ["remove", "every" if op.every else "the"] + desc_words(op.desc)
    if isinstance(op, Recolour):
        return ["make", "every" if op.every else "the"] + desc_words(op.desc) + _colour(op.colour)
    if isinstance(op, Resize):
        return ["make", "the"] + desc_words(op.desc) + [op.size]
    if isinstance(op, Move):
        to = op.to
        tail = [to] if isinstance(to, str) else (["to"] + _cell(to.row, to.col) if isinstance(to, Cell) else _where(to))
        return ["move", "the"] + desc_words(op.desc) + tail
    if isinstance(op, Redraw):
        return ["redraw"] + _cell(op.where.row, op.where.col)
    if isinstance(op, SetCount):
        return ["change", "the", "number", "of"] + desc_words(op.desc, plural=True) + ["to", _num(op.n)]
    raise GrammarError(f"op: cannot say {type(op).__name__}")


def _located(o: Obj) -> Desc:
    return Desc(o.shape, o.colour, o.size, o.inner, o.cell)


def say_op(op: Op) -> str:
    return _join(op_words(op))


def _ops_words(ops: Sequence[Op]) -> list[str]:
    w: list[str] = []
    for i, op in enumerate(ops):
        if i:
            w += [",", "then"]
        w += op_words(op)
    return w


def say_request(req: TextToImage | OpsRequest) -> str:
    if isinstance(req, TextToImage):
        w = ["draw"]
        for i, (d, n) in enumerate(req.items):
            if i:
                w.append("and" if i == len(req.items) - 1 else ",")
            w += np_words(d, n)
        w.append(".")
        for a, rel, b in req.relations:
            w += ["the"] + desc_words(a) + ["is"] + list(RELATION_WORDS[rel]) + ["the"] + desc_words(b) + ["."]
        return _join(w)
    w = []
    if req.scene_from is not None:
        w += ["in", "the", "scene", "from", "image", str(req.scene_from), ","]
    return _join(w + _ops_words(req.ops) + ["."])


def error_words(e: Error) -> list[str]:
    k = ["knowledge"] if getattr(e, "knowledge", False) else []
    if isinstance(e, CountError):
        return k + ["want"] + np_words(e.desc, e.want) + ["found", _num(e.found)]
    if isinstance(e, RelError):
        return k + ["the"] + desc_words(e.a) + ["is", "not"] + list(RELATION_WORDS[e.rel]) + ["the"] + desc_words(e.b)
    if isinstance(e, AtError):
        return k + ["want"] + np_words(e.desc, 1) + ["at"] + _cell(e.row, e.col)
    if isinstance(e, ChangedError):
        return ["changed", "the"] + desc_words(_located(e.obj))
    if isinstance(e, ExtraError):
        return ["extra"] + np_words(Desc.of(e.obj), 1) + ["at"] + _cell(e.obj.row, e.obj.col)
    if isinstance(e, MalformedError):
        return ["malformed", "object", "at"] + _cell(e.row, e.col)
    if isinstance(e, NoiseError):
        return ["noise", "at"] + _cell(e.row, e.col)
    raise GrammarError(f"error: cannot say {type(e).__name__}")


def say_error(e: Error) -> str:
    return _join(error_words(e))


def _errors_words(errors: Sequence[Error]) -> list[str]:
    w: list[str] = []
    for e in errors:
        w += ["error"] + error_words(e) + ["."]
    return w


# The order of an evaluation's parts: scores (or the step check) before the errors; the errors first,
# so that a model writing the evaluation names what is wrong before it scores it; or, first of all,
# what the image shows ("image <scene description> ."), so that the judgement compares the request
# with words the model has just written rather than with image codes.
EVALUATION_ORDERS: tuple[str, ...] = ("scores_first", "reasons_first", "seen_first")


def check_evaluation_order(order: str, where: str = "order") -> str:
    """``order`` if it is one of :data:`EVALUATION_ORDERS`; else a GrammarError naming ``where``."""
    if order not in EVALUATION_ORDERS:
        raise GrammarError(f"{where}: unknown {order!r} (known: {', '.join(EVALUATION_ORDERS)})")
    return order


def say_evaluation(ev: Evaluation, order: str = "scores_first") -> str:
    """The evaluation's text: ``scores_first`` (scores, errors, decision), ``reasons_first`` (errors,
    scores, decision) or ``seen_first`` ("image", the scene seen, ".", then as ``scores_first``; a step
    check has no scene and is written as ``scores_first``); :func:`parse_evaluation` reads all three.
    ``ev.seen`` is written only by ``seen_first``, which needs it for scored evaluations."""
    if ev.decision not in DECISIONS:
        raise GrammarError(f"decision: unknown {ev.decision!r}")
    check_evaluation_order(order)
    seen: list[str] = []
    if order == "seen_first" and ev.scores is not None:
        if ev.seen is None:
            raise GrammarError("seen: the order 'seen_first' needs the scene seen in the image")
        seen = ["image"] + _scene_words(ev.seen) + ["."]
    if ev.scores is None:
        head = ["step", "done" if ev.step_ok else "failed", "."]
    else:
        head = []
        for d in DIMENSIONS:
            head += [d, str(ev.scores[d])]
        head.append(".")
    errs = _errors_words(ev.errors)
    body = errs + head if order == "reasons_first" else head + errs
    return _join(seen + body + ["decision", ev.decision])


def say_reflection(r: Reflection) -> str:
    return _join(_errors_words(r.errors) + ["fix"] + _ops_words(r.fix))


def _scene_words(scene: Scene) -> list[str]:
    if not scene.objects:
        return ["nothing"]
    w: list[str] = []
    for i, o in enumerate(scene.objects):
        if i:
            w.append(",")
        w += np_words(Desc.of(o), 1) + ["at"] + _cell(o.row, o.col)
    return w


def say_scene(scene: Scene) -> str:
    """A description of a whole scene (the understanding task's answer)."""
    return _join(_scene_words(scene))


# ====================================================================== reading
class _Cursor:
    def __init__(self, text: str):
        if not isinstance(text, str):
            raise GrammarError(f"text: must be a string, got {type(text).__name__}")
        self.text = text
        self.toks = text.split(" ") if text else []
        if "" in self.toks:
            raise GrammarError(f"at word {self.toks.index('') + 1}: empty word (words are separated by single spaces) in {text!r}")
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def fail(self, want: str) -> GrammarError:
        got = self.peek()
        return GrammarError(f"at word {self.i + 1} ({'end of text' if got is None else repr(got)}): expected {want} in {self.text!r}")

    def take(self, *words: str) -> str:
        t = self.peek()
        if t is None or (words and t not in words):
            raise self.fail(" or ".join(repr(w) for w in words) if words else "a word")
        self.i += 1
        return t

    def accept(self, *words: str) -> str | None:
        if self.peek() in words:
            self.i += 1
            return self.toks[self.i - 1]
        return None

    def end(self) -> None:
        if self.i != len(self.toks):
            raise self.fail("end of text")


T = TypeVar("T")


def _whole(text: str, read: Callable[[_Cursor], T]) -> T:
    c = _Cursor(text)
    v = read(c)
    c.end()
    return v


def _read_int(c: _Cursor, lo: int, hi: int, what: str) -> int:
    t = c.peek()
    if t is None or not t.isdigit() or not lo <= int(t) <= hi:
        raise c.fail(f"{what} ({lo}..{hi})")
    c.i += 1
    return int(t)


def _read_cell(c: _Cursor) -> Cell:
    c.take("row")
    r = _read_int(c, 1, MAX_GRID_IN_TEXT, "a row number")
    c.take("column")
    return Cell(r - 1, _read_int(c, 1, MAX_GRID_IN_TEXT, "a column number") - 1)


def _read_num(c: _Cursor) -> int:
    t = c.take(*NUMBER_WORDS)
    return NUMBER_WORDS.index(t)


def _read_desc(c: _Cursor, plural: bool = False) -> Desc:
    size = c.accept(*SIZES)
    colour = c.accept(*COLOURS)
    if plural:
        noun = c.take(*PLURAL.values(), "objects")
        shape = SINGULAR.get(noun)
    else:
        noun = c.take(*SHAPES, "object")
        shape = None if noun == "object" else noun
    inner = None
    if c.accept("with"):
        c.take("a")
        ic = c.take(*COLOURS)
        ish = c.take(*SHAPES)
        c.take("inside")
        inner = Part(ish, ic)
    return Desc(shape, colour, size, inner)


def _read_the(c: _Cursor) -> Desc:
    """'the' + a description, optionally located: 'the red circle at row 1 column 2'."""
    c.take("the")
    d = _read_desc(c)
    if c.peek() == "at" and c.peek(1) == "row":
        c.take()
        cell = _read_cell(c)
        d = Desc(d.shape, d.colour, d.size, d.inner, (cell.row, cell.col))
    return d


def _read_np(c: _Cursor) -> tuple[Desc, int]:
    if c.accept("a"):
        return _read_desc(c), 1
    n = 0 if c.accept("no") else _read_num(c)
    if n == 1:
        raise c.fail("'a' instead of 'one'")
    return _read_desc(c, plural=True), n


def _read_rel(c: _Cursor) -> str:
    t = c.take("left", "right", "above", "below")
    if t in ("left", "right"):
        c.take("of")
    return t


def _read_target(c: _Cursor) -> Target:
    if c.peek(1) in ("character", "object") and c.peek(2) == "from":
        c.take("the")
        kind = c.take()
        c.take("from")
        c.take("image")
        return ImageRef(_read_int(c, 1, 9, "an image number"), kind == "character")
    return _read_the(c)


def _read_where(c: _Cursor) -> Where:
    if c.accept("at"):
        return _read_cell(c)
    rel = _read_rel(c)
    return RelTo(rel, _read_target(c))


def _read_colour(c: _Cursor) -> ColourRef:
    if c.accept("the"):
        kind = c.take("colour", "mix")
        c.take("of")
        if kind == "colour":
            return FactColour(c.take(*THINGS))
        a = c.take(*COLOURS)
        c.take("and")
        return MixColour(a, c.take(*COLOURS))
    return Colour(c.take(*COLOURS))


def _read_op(c: _Cursor) -> Op:
    verb = c.take("draw", "add", "place", "remove", "make", "move", "change", "redraw")
    if verb == "redraw":
        return Redraw(_read_cell(c))
    if verb == "draw":
        d, n = _read_np(c)
        if n != 1:
            raise c.fail("a single object")
        c.take("at")
        return Draw(d, _read_cell(c))
    if verb == "add":
        d, n = _read_np(c)
        if n != 1:
            raise c.fail("a single object")
        return Add(d, _read_where(c))
    if verb == "place":
        t = _read_target(c)
        if not isinstance(t, ImageRef):
            raise c.fail("a subject from an input image")
        return Place(t, _read_where(c))
    if verb == "remove":
        if c.accept("every"):
            return Remove(_read_desc(c), True)
        return Remove(_read_the(c))
    if verb == "make":
        every = bool(c.accept("every"))
        d = _read_desc(c) if every else _read_the(c)
        size = c.accept(*SIZES)
        if size:
            if every:
                raise c.fail("a colour ('make every' recolours)")
            return Resize(d, size)
        return Recolour(d, _read_colour(c), every)
    if verb == "move":
        d = _read_the(c)
        if c.peek() in DIRECTIONS and c.peek(1) != "of":
            return Move(d, c.take())
        if c.accept("to"):
            return Move(d, _read_cell(c))
        rel = _read_rel(c)
        return Move(d, RelTo(rel, _read_target(c)))
    c.take("the")
    c.take("number")
    c.take("of")
    d = _read_desc(c, plural=True)
    c.take("to")
    return SetCount(d, _read_num(c))


def _read_ops(c: _Cursor) -> tuple[Op, ...]:
    ops = [_read_op(c)]
    while c.peek() == "," and c.peek(1) == "then":
        c.i += 2
        ops.append(_read_op(c))
    return tuple(ops)


def _read_error(c: _Cursor) -> Error:
    knowledge = bool(c.accept("knowledge"))
    t = c.peek()
    if t == "want":
        c.take()
        d, n = _read_np(c)
        if c.accept("found"):
            return CountError(d, n, _read_num(c), knowledge)
        if n != 1:
            raise c.fail("'found' after a count")
        c.take("at")
        cell = _read_cell(c)
        return AtError(d, cell.row, cell.col, knowledge)
    if t == "the":
        a = _read_the(c)
        c.take("is")
        c.take("not")
        rel = _read_rel(c)
        return RelError(a, rel, _read_the(c), knowledge)
    if knowledge:
        raise c.fail("'want' or 'the' after 'knowledge'")
    t = c.take("changed", "extra", "malformed", "noise")
    if t == "changed":
        d = _read_the(c)
        if d.cell is None:
            raise c.fail("'at row R column C'")
        return ChangedError(_obj_at(c, Desc(d.shape, d.colour, d.size, d.inner), Cell(*d.cell)))
    if t == "extra":
        d, n = _read_np(c)
        if n != 1:
            raise c.fail("a single object")
        c.take("at")
        cell = _read_cell(c)
        return ExtraError(_obj_at(c, d, cell))
    if t == "malformed":
        c.take("object")
    c.take("at")
    cell = _read_cell(c)
    return (MalformedError if t == "malformed" else NoiseError)(cell.row, cell.col)


def _obj_at(c: _Cursor, d: Desc, cell: Cell) -> Obj:
    if d.shape is None or d.colour is None or d.size is None:
        raise c.fail("a full description (size, colour, shape)")
    try:
        return Obj(d.shape, d.colour, d.size, cell.row, cell.col, d.inner)
    except ValueError as e:
        raise GrammarError(f"{e} in {c.text!r}") from None


def _read_errors(c: _Cursor) -> tuple[Error, ...]:
    errs = []
    while c.accept("error"):
        errs.append(_read_error(c))
        c.take(".")
    return tuple(errs)


def parse_op(text: str) -> Op:
    return _whole(text, _read_op)


def parse_error(text: str) -> Error:
    return _whole(text, _read_error)


def parse_text_to_image(text: str) -> TextToImage:
    def read(c: _Cursor) -> TextToImage:
        c.take("draw")
        items = [_read_np(c)]
        while c.peek() in (",", "and"):
            last = c.take() == "and"
            items.append(_read_np(c))
            if last:
                break
        c.take(".")
        rels = []
        while c.peek() == "the":
            a = _read_the(c)
            c.take("is")
            rel = _read_rel(c)
            rels.append((a, rel, _read_the(c)))
            c.take(".")
        return TextToImage(tuple(items), tuple(rels))
    return _whole(text, read)


def parse_ops_request(text: str) -> OpsRequest:
    def read(c: _Cursor) -> OpsRequest:
        scene_from = None
        if c.accept("in"):
            for w in ("the", "scene", "from", "image"):
                c.take(w)
            scene_from = _read_int(c, 1, 9, "an image number")
            c.take(",")
        ops = _read_ops(c)
        c.take(".")
        return OpsRequest(ops, scene_from)
    return _whole(text, read)


def parse_request(text: str) -> TextToImage | OpsRequest:
    """Either kind of request: a text-to-image request, else a list of operations."""
    try:
        return parse_text_to_image(text)
    except GrammarError:
        return parse_ops_request(text)


def parse_evaluation(text: str, grid: int = 4) -> Evaluation:
    """An evaluation in any order (:data:`EVALUATION_ORDERS`); errors on both sides are an error, and
    so is a scene seen before a step check. ``grid``: the world's grid, for the scene seen."""
    def read(c: _Cursor) -> Evaluation:
        scores, step_ok, seen = None, None, None
        if c.accept("image"):
            seen = _read_scene(c, grid)
            c.take(".")
        first = _read_errors(c) if seen is None else ()
        if seen is not None and c.peek() == "step":
            raise c.fail("scores (a step check has no scene seen)")
        if c.accept("step"):
            step_ok = c.take("done", "failed") == "done"
        else:
            scores = {}
            for d in DIMENSIONS:
                c.take(d)
                scores[d] = _read_int(c, 1, 5, f"a {d} score")
        c.take(".")
        if first:
            errs = first
            if c.peek() == "error":
                raise c.fail("the decision (the errors came before the scores)")
        else:
            errs = _read_errors(c)
        c.take("decision")
        return Evaluation(scores, errs, c.take(*DECISIONS), step_ok, seen)
    return _whole(text, read)


def parse_reflection(text: str) -> Reflection:
    def read(c: _Cursor) -> Reflection:
        errs = _read_errors(c)
        c.take("fix")
        return Reflection(errs, _read_ops(c))
    return _whole(text, read)


def _read_scene(c: _Cursor, grid: int) -> Scene:
    if c.accept("nothing"):
        return Scene((), grid)
    objs = []
    while True:
        d, n = _read_np(c)
        if n != 1:
            raise c.fail("a single object")
        c.take("at")
        objs.append(_obj_at(c, d, _read_cell(c)))
        if not c.accept(","):
            break
    try:
        return Scene(tuple(objs), grid)
    except ValueError as e:
        raise GrammarError(f"{e} in {c.text!r}") from None


def parse_scene(text: str, grid: int = 4) -> Scene:
    return _whole(text, lambda c: _read_scene(c, grid))


def vocabulary() -> list[str]:
    """Every word the language can use (for the text tokenizer)."""
    words = set(COLOURS) | set(SHAPES) | set(PLURAL.values()) | set(SIZES) | set(DIRECTIONS) | set(THINGS)
    words |= set(NUMBER_WORDS) | {str(i) for i in range(10)} | set(DIMENSIONS) | set(DECISIONS)
    words |= {w for ws in RELATION_WORDS.values() for w in ws}
    words |= set("""a no the every object objects with inside at row column draw add place remove make move to change
        number of then in scene from image character colour mix and is not want found knowledge changed extra
        malformed noise error fix step done failed decision nothing redraw , . :""".split())
    return sorted(words)
