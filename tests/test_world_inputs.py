"""Bad input gets a clear error naming the field: scene specs, images, task arguments, texts."""
import numpy as np
import pytest

from sairlib.world import (GrammarError, Scene, SceneError, TaskError, WorldConfig, complexity_bucket, make_balanced_tasks,
                           make_task, make_tasks, perceive, render)
from sairlib.world.grammar import parse_op, parse_request
from sairlib.world.scene import Obj, Part


@pytest.mark.parametrize("spec, field", [
    ({"grid": 4, "objects": [{"shape": "hexagon", "colour": "red", "size": "big", "row": 0, "col": 0}]}, "shape"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "teal", "size": "big", "row": 0, "col": 0}]}, "colour"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "red", "size": "huge", "row": 0, "col": 0}]}, "size"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "red", "size": "big", "row": 9, "col": 0}]}, "row/col"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "red", "size": "big", "row": -1, "col": 0}]}, "row"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "red", "size": "big", "row": 0}]}, "'col'"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "red", "size": "big", "row": 0, "col": 0, "hue": 3}]}, "'hue'"),
    ({"grid": 0, "objects": []}, "grid"),
    ({"grid": 4, "objects": "none"}, "objects"),
    ({"grid": 4, "objects": [], "camera": 1}, "'camera'"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "red", "size": "big", "row": 0, "col": 0},
                             {"shape": "square", "colour": "blue", "size": "big", "row": 0, "col": 0}]}, "two objects"),
    ({"grid": 4, "objects": [{"shape": "triangle", "colour": "red", "size": "big", "row": 0, "col": 0,
                              "inner": {"shape": "circle", "colour": "blue"}}]}, "inner"),
    ({"grid": 4, "objects": [{"shape": "circle", "colour": "red", "size": "big", "row": 0, "col": 0,
                              "inner": {"shape": "circle", "colour": "red"}}]}, "inner.colour"),
])
def test_invalid_scene_specs_name_the_field(spec, field):
    with pytest.raises(SceneError, match=field):
        Scene.from_dict(spec)


def test_objects_validate_on_construction():
    with pytest.raises(SceneError, match="colour"):
        Obj("circle", "teal", "big", 0, 0)
    with pytest.raises(SceneError, match="inner.shape"):
        Part("blob", "red")


@pytest.mark.parametrize("image, field", [
    (np.zeros((64, 64, 3), dtype=np.float32), "dtype"),
    (np.zeros((64, 64), dtype=np.uint8), "shape"),
    (np.zeros((64, 48, 3), dtype=np.uint8), "size"),
    (np.zeros((62, 62, 3), dtype=np.uint8), "multiple of grid"),
    ([[0]], "numpy array"),
])
def test_bad_images_are_rejected(image, field):
    with pytest.raises(ValueError, match=field):
        perceive(image)


def test_corrupt_image_is_scored_not_crashed():
    """Garbage pixels of the right shape are perceived as noise, never as a clean object."""
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    p = perceive(img)
    assert not any(o.clean for o in p.objects)


def test_render_rejects_bad_sizes():
    with pytest.raises(SceneError, match="image_size"):
        render(Scene((), 4), image_size=20)
    with pytest.raises(SceneError, match="scene"):
        render({"grid": 4})


def test_task_generator_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(TaskError, match="family"):
        make_task("video", "x", rng)
    with pytest.raises(TaskError, match="category"):
        make_task("t2i", "dancing", rng)
    with pytest.raises(TaskError, match="split"):
        make_tasks(3, "test", 0)
    with pytest.raises(TaskError, match="categories"):
        make_tasks(3, "train", 0, categories=["nope"])


def test_splits_are_disjoint_whatever_the_seed():
    train = {t.id for s in (0, 1) for t in make_tasks(60, "train", s)}
    evals = {t.id for s in (0, 2) for t in make_tasks(30, "eval", s)}
    assert train and evals and not train & evals


def test_tasks_are_deterministic_per_seed():
    a = [t.instruction for t in make_tasks(20, "train", 7)]
    b = [t.instruction for t in make_tasks(20, "train", 7)]
    c = [t.instruction for t in make_tasks(20, "train", 8)]
    assert a == b and a != c


def test_balanced_tasks_fill_each_complexity_bucket_from_the_same_stream():
    ts = make_balanced_tasks(7, "eval", 3)
    buckets = [complexity_bucket(t.complexity) for t in ts]
    assert sorted(buckets) == ["1-2"] * 3 + ["3-5"] * 2 + ["6+"] * 2  # 7 // 3 each, the first bucket one more
    assert all(t.meta["split"] == "eval" for t in ts) and len({t.id for t in ts}) == 7
    assert [t.id for t in make_balanced_tasks(7, "eval", 3)] == [t.id for t in ts]
    # they keep the order of make_tasks' stream for that seed: its simple requests come first there too
    plain = [t.id for t in make_tasks(10, "eval", 3)]
    firsts = [t.id for t in ts if complexity_bucket(t.complexity) == "1-2"]
    assert firsts == [i for i in plain if i in set(firsts)] and firsts[0] == plain[0]
    assert make_balanced_tasks(0, "eval", 3) == []


def test_balanced_tasks_name_the_bucket_the_world_cannot_fill():
    small = WorldConfig(grid=2, image_size=32, max_objects=2)  # two objects at most: nothing reaches 6 constraints
    with pytest.raises(TaskError, match=r"bucket 6\+ .*world.max_objects=2"):
        make_balanced_tasks(3, "eval", 0, cfg=small, max_draws_per_task=20)
    with pytest.raises(TaskError, match="n:"):
        make_balanced_tasks(-1, "eval", 0)
    with pytest.raises(TaskError, match="split"):
        make_balanced_tasks(3, "test", 0)


@pytest.mark.parametrize("text", ["add a big red", "draw a red circle", "move the circle sideways", "remove the teal circle",
                                  "add  a big red circle at row 1 column 1", "add a big red circle at row 0 column 1"])
def test_grammar_errors_name_the_word(text):
    with pytest.raises(GrammarError, match="at word"):
        parse_op(text)


def test_request_grammar_error():
    with pytest.raises(GrammarError):
        parse_request("paint everything blue .")
