"""The OpenAI-compatible image generator against a local server: generation, edits, retries, cache."""
from __future__ import annotations

import numpy as np
import pytest

from fake_openai_server import FakeOpenAIServer
from sairlib.interfaces import Generator, X2IInput
from sairlib.pipeline.generators import DrawRequest
from sairlib.services import ServiceDrawer, ServiceError, make_generator

KEY = "sk-images-test-77aa"


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("SAIR_IMAGES_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as srv:
        gen = make_generator({"backend": "openai", "base_url": srv.url, "model": "img", "size": "32x32",
                              "api_key_env": "SAIR_IMAGES_API_KEY", "max_retries": 2, "backoff_s": 0.01,
                              "resize_to": [16, 16], "cache_dir": str(tmp_path / "cache")})
        yield srv, gen
        gen.close()


def test_generate_edit_retry_and_cache(setup):
    srv, gen = setup
    assert isinstance(gen, Generator)
    a = gen.generate("draw a red circle", [])
    assert a.dtype == np.uint8 and a.shape == (16, 16, 3) and len(np.unique(a.reshape(-1, 3), axis=0)) == 1
    assert np.array_equal(gen.generate("draw a red circle", []), a) and gen.usage()["cache_hits"] == 1

    src = np.zeros((16, 16, 3), np.uint8)
    src[:8] = (200, 10, 10)
    edited = gen.generate("make it blue #500-1", [src])
    assert np.array_equal(edited, 255 - src)  # the server inverts the input: the image went through
    assert srv.hits["#500-1"] == 2 and gen.usage()["retries"] == 1
    assert srv.requests[-1]["image_fields"] == ["image"] and srv.requests[-1]["edit"]["prompt"] == "make it blue #500-1"
    gen.generate("put them together", [src, 255 - src])
    assert srv.requests[-1]["image_fields"] == ["image[]", "image[]"]

    with pytest.raises(ServiceError, match="http_429 after 3 attempt"):
        gen.generate("draw #429-always", [])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        gen.generate("edit", [np.zeros((4, 4), np.uint8)])


def test_drawer_feeds_the_pipeline(setup):
    srv, gen = setup
    x = X2IInput(id="t", instruction="draw a red circle")
    canvas = np.full((16, 16, 3), 40, np.uint8)
    out = ServiceDrawer(gen).draw([DrawRequest(x, "draw a red circle"),
                                   DrawRequest(x, "make it blue", (canvas,), "fix", canvas)])
    assert out[0].shape == (16, 16, 3) and np.array_equal(out[1], 255 - canvas)
