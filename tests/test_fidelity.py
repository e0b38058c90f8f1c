"""The codec keeps what the Analyzer sees: verdicts on reconstructions equal verdicts on images."""
from sairlib.fidelity import tokenizer_fidelity
from sairlib.world import WorldAnalyzer, WorldConfig, make_tasks
from sairlib.world_setup import build_tokenizers


def test_rendered_world_images_keep_their_verdict(tmp_path):
    cfg = WorldConfig()
    codec, tok, info = build_tokenizers(cfg, 16, 1024, 200, 100, 0, tmp_path)
    assert (tmp_path / "codec" / "codec.json").is_file() and (tmp_path / "tokenizer").is_dir()
    r = tokenizer_fidelity(codec, WorldAnalyzer(), make_tasks(60, "eval", 5, cfg=cfg))
    assert r["n_images"] >= 250
    assert r["rendered_verdict_agreement"] >= 0.99, r
    assert 0.05 < r["passed_fraction"] < 0.95  # both verdicts are exercised
