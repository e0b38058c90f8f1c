"""Real unified models as the policy, on tiny random configurations of the transformers classes (CPU):
Janus (``JanusForConditionalGeneration``, a separate image head) and Emu3
(``Emu3ForConditionalGeneration``, image codes in the text vocabulary). Each: its own VQ codec,
constrained interleaved generation (well formed, seeded, log-probs equal to a teacher-forced pass),
the selective loss (no gradient outside the trained segments), SFT and a GRPO step.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_real_policies.py -q
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sairlib.interop.janus import JanusPolicy, group_advantages, grpo_step, grpo_update, sample_groups, sft
from sairlib.masking import loss_segments
from sairlib.rewards import complexity_penalty, format_reward
from sairlib.sequence import TEXT_TAGS
from sairlib.trajectory import Trajectory, TrajectorySegment

CHARS = [chr(i) for i in range(32, 127)]
PAD, BOS, EOS, BOI, EOI, IMG = 95, 96, 97, 98, 99, 100
BUDGET = 60


def tokenize(s: str) -> list[int]:
    return [CHARS.index(c) if c in CHARS else 0 for c in s]


def detokenize(ids) -> str:
    return "".join(CHARS[i] for i in ids)


def make_janus() -> JanusPolicy:
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
    return JanusPolicy(model.eval(), tokenize, boi_id=BOI, eoi_id=EOI, detokenize=detokenize)


N_EMU3_CODES = 32


def make_emu3():
    from transformers import Emu3Config, Emu3ForConditionalGeneration
    from transformers.models.emu3.configuration_emu3 import Emu3TextConfig, Emu3VQVAEConfig

    from sairlib.interop.emu3 import Emu3Policy

    torch.manual_seed(0)
    vmap = {f"<|visual token {i:06d}|>": 101 + i for i in range(N_EMU3_CODES)}
    vmap["<|extra_200|>"] = 101 + N_EMU3_CODES
    vmap["<image>"] = IMG
    vq = Emu3VQVAEConfig(codebook_size=N_EMU3_CODES, embed_dim=4, latent_channels=4, base_channels=32,
                         channel_multiplier=[1, 1, 2], num_res_blocks=1, attn_resolutions=[], hidden_size=64,
                         num_attention_heads=1, temporal_downsample_factor=4)
    text = Emu3TextConfig(vocab_size=102 + N_EMU3_CODES, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                          pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, attention_dropout=0.0)
    model = Emu3ForConditionalGeneration(Emu3Config(vq_config=vq, text_config=text, vocabulary_map=vmap))
    return Emu3Policy(model.eval(), tokenize, boi_id=BOI, eoi_id=EOI, image_size=16, detokenize=detokenize)


@pytest.fixture(scope="module")
def janus():
    return make_janus()


def test_draw_decode_encode_with_the_models_own_codec(janus):
    codes = janus.draw([BOS] + tokenize("a red circle") + [BOI], seed=0)
    assert codes.shape == (16,) and int(codes.max()) < 64
    again = janus.draw([BOS] + tokenize("a red circle") + [BOI], seed=0)
    assert (codes == again).all()  # seeded
    img = janus.decode_image(codes)
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3)
    back = janus.encode_image(img)
    assert back.shape == (16,) and int(back.max()) < 64


def _traj(policy, kinds: str, mode: str, n_codes: int = 64) -> tuple[Trajectory, list]:
    rng = np.random.default_rng(0)
    codes, segs = [], []
    for i, k in enumerate(kinds):
        if k == "G":
            c = rng.integers(0, n_codes, policy.tokens_per_image)
            codes.append(c)
            segs.append(TrajectorySegment("G", image=policy.decode_image(c)))
        else:
            segs.append(TrajectorySegment(k, text=f"{k.lower()}{i}"))
    return Trajectory(id=mode, instruction="draw two things", segments=segs, mode=mode), codes


def test_selective_loss_counts_and_one_step():
    janus = make_janus()
    d, dc = _traj(janus, "GE", "direct")
    r, rc = _traj(janus, "GERGE", "reflection")
    ld = janus.loss(d, codes=dc)
    lr = janus.loss(r, codes=rc)
    lr_all = janus.loss(r, masking="none", codes=rc)
    tag = len(tokenize("<eval>e1</eval>"))
    assert (ld.n_image, ld.n_text) == (16, 2 + tag + 1)  # the image codes, <boi> <eoi>, the E text, <eos>
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


def test_masking_no_gradient_outside_loss_segments(janus):
    t, codes = _traj(janus, "GERGE", "reflection")
    fw = janus.forward(t, "selective", codes)
    out = janus.masked_loss(fw)
    g_text, g_img = torch.autograd.grad(out.loss, [fw.text_logits, fw.image_logits])
    # expected trained tokens, written out from the layout and loss_segments (not from the stream)
    on = loss_segments("GERGE", "reflection")
    assert on == [False, True, True, True, True]  # the last round E R, then G E
    trained, heads = [False] * len(janus.prompt_ids(t.instruction)), ["text"] * len(janus.prompt_ids(t.instruction))
    for seg, flag in zip(t.segments, on):
        if seg.kind == "G":
            heads += ["text"] + ["image"] * 16 + ["text"]
            n = 18
        else:
            n = len(tokenize(TEXT_TAGS[seg.kind][0] + seg.text + TEXT_TAGS[seg.kind][1]))
            heads += ["text"] * n
        trained += [flag] * n
    trained, heads = trained + [True], heads + ["text"]
    assert (fw.trained, fw.heads) == (trained, heads)
    manual, n = 0.0, 0
    for p in range(len(fw.ids) - 1):
        text_on = trained[p + 1] and heads[p + 1] == "text"
        img_on = trained[p + 1] and heads[p + 1] == "image"
        assert bool(g_text[p].abs().sum() > 0) == text_on, p
        assert bool(g_img[p].abs().sum() > 0) == img_on, p
        if text_on or img_on:
            logits = fw.text_logits[p] if text_on else fw.image_logits[p]
            manual += float(torch.nn.functional.cross_entropy(logits[None].detach(), torch.tensor([fw.ids[p + 1]])))
            n += 1
    assert n == out.n_text + out.n_image and out.n_image == 16
    assert abs(manual / n - float(out.loss.detach())) < 1e-5


def _check_sample(policy, s, budget: int) -> None:
    assert s.ids[-1] == policy.eos_id and len(s.ids) <= budget
    assert s.parsed.ok and s.parsed.ended
    covered = 0
    for (kind, a, b), seg in zip(s.spans, s.parsed.segments):
        assert a == covered and seg.kind == kind
        covered = b
        body = s.ids[a:b]
        if kind == "G":
            assert body[0] == policy.boi_id and body[-1] == policy.eoi_id and len(body) == len(policy.image_slots) + 2
            assert s.heads[a:b].count("image") == policy.tokens_per_image
            assert all(0 <= c < policy.n_codes for c, h in zip(body, s.heads[a:b]) if h == "image")
        else:
            o, c = TEXT_TAGS[kind]
            assert detokenize(body).startswith(o) and detokenize(body).endswith(c)
    assert covered == len(s.ids) - 1  # then <eos>
    assert len(s.images) == s.n_images == s.kinds.count("G")
    for im in s.images:
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3
    lp = np.asarray(s.logprobs)
    assert np.all(lp <= 1e-6) and np.all(lp[np.asarray(s.forced)] == 0)
    with torch.no_grad():  # the KV-cache sampler's log-probs equal a teacher-forced pass
        again = policy.completion_logprobs(s).numpy()
    assert np.allclose(again, lp, atol=1e-4)


def test_interleaved_generation_well_formed_and_seeded(janus):
    samples = [janus.generate("draw a red circle", seed=k, max_new_tokens=BUDGET, max_text_tokens=8) for k in range(6)]
    for s in samples:
        _check_sample(janus, s, BUDGET)
    assert any(s.n_images for s in samples) and any(set(s.kinds) & set("ERS") for s in samples)
    again = janus.generate("draw a red circle", seed=2, max_new_tokens=BUDGET, max_text_tokens=8)
    assert again.ids == samples[2].ids and again.logprobs == samples[2].logprobs
    assert all(np.array_equal(a, b) for a, b in zip(again.images, samples[2].images))
    assert len({tuple(s.ids) for s in samples}) > 1
    # never starts an image the budget cannot finish: <boi> 16 codes <eoi> <eos> is 19 tokens
    tight = [janus.generate("x", seed=k, max_new_tokens=18) for k in range(6)]
    assert all(s.n_images == 0 and s.ids[-1] == EOS for s in tight)
    exact = [janus.generate("x", seed=k, max_new_tokens=19) for k in range(6)]
    for s in exact:
        _check_sample(janus, s, 19)
    assert any(s.n_images == 1 for s in exact)
    t = samples[0].trajectory("s0")
    assert t.status == ("kept" if samples[0].mode else "discarded")
    assert format_reward(samples[0].rollout()) == (1.0 if samples[0].mode else 0.0)


def test_sft_loss_decreases_on_a_fixed_trajectory():
    jp = make_janus()
    t, codes = _traj(jp, "GESGE", "multistep")
    before = [p.detach().clone() for p in jp.model.parameters()]
    h1 = sft(jp, [t], steps=4, lr=1e-2, seed=0, codes=[codes])
    assert len(h1) == 4 and h1[-1] < h1[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, jp.model.parameters()))
    jp2 = make_janus()
    assert sft(jp2, [t], steps=4, lr=1e-2, seed=0, codes=[codes]) == h1  # seeded
    with pytest.raises(ValueError, match="steps"):
        sft(jp, [t], steps=0)


def test_grpo_step_penalty_advantages_and_update():
    jp = make_janus()
    opt = torch.optim.AdamW(jp.model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in jp.model.parameters()]
    G = 4
    # equal rewards: only the complexity penalty separates the rollouts, fewer images win
    res = grpo_step(jp, opt, ["draw a red circle", "two blue squares"], lambda s: 1.0, group_size=G, seed=3,
                    max_new_tokens=BUDGET, max_text_tokens=8)
    n_img = np.array([s.n_images for s in res.samples])
    assert len(res.samples) == 2 * G
    assert np.array_equal(res.penalised, complexity_penalty(res.rewards, n_img, G, 0.05))
    assert np.allclose(res.advantages.reshape(-1, G).sum(1), 0, atol=1e-6)
    varied = [g for g in range(2) if len(set(np.maximum(n_img[g * G:(g + 1) * G], 1))) > 1]
    assert varied, f"seed gives no group with different image counts: {n_img}"
    for g in varied:
        n, pen, adv = (x[g * G:(g + 1) * G] for x in (np.maximum(n_img, 1), res.penalised, res.advantages))
        fewest = int(np.argmin(n))
        assert pen[fewest] == pen.max() > pen.min() and adv[fewest] == adv.max() > 0
    assert np.isfinite(res.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, jp.model.parameters()))
    # the update alone, with the project's format reward and no penalty
    samples = sample_groups(jp, ["draw"], G, seed=1, max_new_tokens=BUDGET, max_text_tokens=8)
    r = [format_reward(s.rollout()) + 0.1 * s.n_images for s in samples]
    out = grpo_update(jp, opt, samples, r, G, penalty=False)
    assert np.array_equal(out.penalised, out.rewards)
    assert np.allclose(out.advantages, group_advantages(r, G))
    with pytest.raises(ValueError, match="rewards"):
        grpo_update(jp, opt, samples, r[:-1], G)


def test_emu3_codec_generation_masking_sft_grpo():
    ep = make_emu3()
    assert (ep.grid, ep.tokens_per_image, len(ep.image_slots)) == (4, 16, 20)
    img = ep.decode_image(np.arange(16) % N_EMU3_CODES)
    assert img.dtype == np.uint8 and img.shape == (16, 16, 3)
    codes = ep.encode_image(img)
    assert codes.shape == (16,) and int(codes.max()) < N_EMU3_CODES
    # generation: images as rows of codes + forced end-of-line tokens, all inside the text vocabulary
    samples = [ep.generate("draw a red circle", seed=k, max_new_tokens=70, max_text_tokens=8) for k in range(5)]
    for s in samples:
        _check_sample(ep, s, 70)
        for kind, a, b in s.spans:
            if kind == "G":
                eols = [i for i in range(a, b) if s.ids[i] == ep.eol_id]
                assert len(eols) == 4 and all(s.forced[i] for i in eols)
    assert any(s.n_images for s in samples)
    assert ep.generate("draw a red circle", seed=1, max_new_tokens=70, max_text_tokens=8).ids == samples[1].ids
    # selective masking: only the final image of a reflection (16 codes) is trained
    r, rc = _traj(ep, "GERGE", "reflection", N_EMU3_CODES)
    assert ep.loss(r, codes=rc).n_image == 16 and ep.loss(r, "none", codes=rc).n_image == 32
    h = sft(ep, [r], steps=3, lr=1e-2, seed=0, codes=[rc])
    assert h[-1] < h[0]
    opt = torch.optim.AdamW(ep.model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in ep.model.parameters()]
    res = grpo_step(ep, opt, ["draw"], lambda s: float(s.n_images > 0) + 0.5, group_size=3, seed=1,
                    max_new_tokens=70, max_text_tokens=8)
    assert [s.n_images for s in res.samples] == [1, 1, 0]  # seed 1: two rollouts drew, one stopped at once
    assert np.allclose(res.penalised, [1.5, 1.5, 0.5])  # equal rewards, equal image counts: no penalty
    assert abs(res.advantages.sum()) < 1e-6 and res.advantages[2] < 0 < res.advantages[0]
    assert np.isfinite(res.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, ep.model.parameters()))
