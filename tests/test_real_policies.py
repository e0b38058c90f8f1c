"""Janus as the policy, on a tiny random ``JanusForConditionalGeneration`` (CPU): its own VQ codec,
image-token generation through its image head, and the selective loss over interleaved
trajectories, with one optimiser step."""
from __future__ import annotations

import numpy as np
import pytest

from sairlib.interop.janus import JanusPolicy
from sairlib.trajectory import Trajectory, TrajectorySegment

CHARS = [chr(i) for i in range(32, 127)]
PAD, BOS, EOS, BOI, EOI, IMG = 95, 96, 97, 98, 99, 100


def tokenize(s: str) -> list[int]:
    return [CHARS.index(c) if c in CHARS else 0 for c in s]


@pytest.fixture(scope="module")
def janus():
    import torch
    from transformers import JanusConfig, JanusForConditionalGeneration, LlamaConfig
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, max_position_embeddings=512, bos_token_id=BOS, eos_token_id=EOS,
                       pad_token_id=PAD)
    vis = JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8,
                            projection_dim=32, num_image_tokens=16, mlp_ratio=2.0)
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=64, latent_channels=32, base_channels=32,
                          channel_multiplier=[1, 1, 2], num_res_blocks=1, num_patches=4, projection_dim=32,
                          image_token_embed_dim=32, num_hidden_layers=1)
    model = JanusForConditionalGeneration(JanusConfig(text_config=text, vision_config=vis, vq_config=vq,
                                                      image_token_id=IMG))
    model.generation_config.bos_token_id, model.generation_config.pad_token_id = BOS, PAD
    return JanusPolicy(model.eval(), tokenize, boi_id=BOI, eoi_id=EOI)


def test_draw_decode_encode_with_the_models_own_codec(janus):
    codes = janus.draw([BOS] + tokenize("a red circle") + [BOI], seed=0)
    assert codes.shape == (16,) and int(codes.max()) < 64
    again = janus.draw([BOS] + tokenize("a red circle") + [BOI], seed=0)
    assert (codes == again).all()  # seeded
    img = janus.decode_image(codes)
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3)
    back = janus.encode_image(img)
    assert back.shape == (16,) and int(back.max()) < 64


def _traj(janus, kinds: str, mode: str) -> tuple[Trajectory, list]:
    rng = np.random.default_rng(0)
    codes, segs = [], []
    for i, k in enumerate(kinds):
        if k == "G":
            c = rng.integers(0, 64, 16)
            codes.append(c)
            segs.append(TrajectorySegment("G", image=janus.decode_image(c)))
        else:
            segs.append(TrajectorySegment(k, text=f"{k.lower()}{i}"))
    return Trajectory(id=mode, instruction="draw two things", segments=segs, mode=mode), codes


def test_selective_loss_counts_and_one_step(janus):
    import torch

    d, dc = _traj(janus, "GE", "direct")
    r, rc = _traj(janus, "GERGE", "reflection")
    ld = janus.loss(d, codes=dc)
    lr = janus.loss(r, codes=rc)
    lr_all = janus.loss(r, masking="none", codes=rc)
    tag = len(tokenize("<eval>e1</eval>"))
    assert (ld.n_image, ld.n_text) == (16, 2 + tag)  # the image codes, <boi> <eoi>, the E text
    assert lr.n_image == 16 and lr_all.n_image == 32  # only the final image of a reflection is trained
    assert lr_all.n_text > lr.n_text
    opt = torch.optim.AdamW(janus.model.parameters(), lr=1e-2)
    janus.model.train()
    before = janus.loss(d, codes=dc).loss
    before.backward()
    assert janus.model.model.generation_head.vision_head.weight.grad.abs().sum() > 0
    for _ in range(3):
        opt.step()
        opt.zero_grad()
        loss = janus.loss(d, codes=dc).loss
        loss.backward()
    janus.model.eval()
    assert loss.item() < before.item()
    with pytest.raises(ValueError, match="not a 'multistep' trajectory"):
        janus.loss(Trajectory(id="x", instruction="i", segments=d.segments, mode="multistep", status="discarded"),
                   codes=dc)
