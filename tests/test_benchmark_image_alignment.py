"""``benchmarks/image_alignment.py``: the image-local positions, causality under them, a sane quick run."""
import json

import pytest
import torch

from benchmark_scripts import load


def bench():
    """The script as a module, loaded once."""
    return load("image_alignment")


@pytest.fixture(scope="module")
def policy():
    from sairlib.policy import Policy
    from sairlib.world import WorldConfig
    from sairlib.world_setup import build_tokenizers

    codec, tok, _ = build_tokenizers(WorldConfig(), 16, 64, 20, 10, 0)
    return Policy.create(tok, codec, {"hidden": 32, "layers": 2, "heads": 2}, seed=0)


def test_image_codes_share_positions_and_the_rest_is_sequential(policy):
    L, b = policy.layout, bench()
    a, c = list(range(16)), [5] * 16
    row = L.prompt("red circle", [a]) + L.image(c) + [L.open_tag["E"]]
    ids = torch.tensor([row, row[:-3] + [L.pad] * 3])       # a second, right-padded row
    pos = b.positions(ids, L, "image_local")
    code = [i for i, t in enumerate(row) if L.code_lo <= t < L.code_hi]
    assert len(code) == 32
    assert pos[0, code].tolist() == [b.IMAGE_BASE + p for p in range(16)] * 2
    other = [i for i in range(len(row)) if i not in code]
    assert pos[0, other].tolist() == other
    assert pos[1, :len(row) - 3].tolist() == pos[0, :len(row) - 3].tolist()
    assert torch.equal(b.positions(ids, L, "sequential"), torch.arange(len(row)).expand(2, -1))


def test_image_local_positions_keep_the_model_causal(policy):
    """Later tokens never change earlier logits; explicit sequential positions are the model's default."""
    L, b, model = policy.layout, bench(), policy.model.eval()
    row = torch.tensor([L.prompt("red circle", [list(range(16))]) + L.image([3] * 16) + [L.open_tag["E"]]])
    changed = row.clone()
    changed[0, -5:] = L.code_lo + 7
    mask = torch.ones_like(row)
    with torch.no_grad():
        x = model(input_ids=row, attention_mask=mask, position_ids=b.positions(row, L, "image_local")).logits
        y = model(input_ids=changed, attention_mask=mask, position_ids=b.positions(changed, L, "image_local")).logits
        z = model(input_ids=row, attention_mask=mask).logits
        s = model(input_ids=row, attention_mask=mask, position_ids=b.positions(row, L, "sequential")).logits
    n = row.shape[1] - 5
    assert torch.allclose(x[0, :n], y[0, :n], atol=1e-5) and not torch.allclose(x[0, n:], y[0, n:])
    assert torch.allclose(z, s, atol=1e-6) and not torch.allclose(x, z)


def test_quick_run_writes_both_schemes(tmp_path, one_thread):
    out = tmp_path / "image_alignment.json"
    r = bench().main(["--quick", "--examples", "160", "--eval-tasks", "12", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))
    assert set(r["schemes"]) == {"sequential", "image_local"}
    for s in r["schemes"].values():
        assert s["train"]["steps"] == 10 and s["train"]["tok_s"] > 0
        for name in ("compare", "evaluate"):
            m = s["sets"][name]
            assert m["n"] == 12 and 0 <= m["agree"] <= 1 and sum(k["n"] for k in m["by_kind"].values()) == 12
