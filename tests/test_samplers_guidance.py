"""Classifier-free guidance: one batched pass, w = 1 is conditional, φ = 0 is plain CFG."""
import torch

from vampdiffusion.diffusion.guidance import (cfg_combine, empty_tags_like, guided_predictor, guided_v,
                                             rescale_guidance)


class StubModel(torch.nn.Module):
    """v depends on x, the tags and the quality; records every call's inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, tag_ids, quality, style_override=None):
        self.calls.append((x.shape[0], tag_ids.clone(), quality.clone(), style_override))
        shift = (tag_ids.float().sum(1) / 10 + quality.float()).view(-1, 1, 1, 1)
        return 0.5 * x + shift, None


def _inputs(b=2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 4, 3, 3, generator=g)
    t = torch.full((b,), 500)
    tags = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 5, 3, 0, 0, 0]])[:b]
    quality = torch.tensor([3, 1])[:b]
    return x, t, tags, quality


def test_empty_tags_are_bos_eos_then_pad():
    empty = empty_tags_like(torch.ones(2, 5, dtype=torch.long))
    assert empty.tolist() == [[2, 3, 0, 0, 0], [2, 3, 0, 0, 0]]


def test_cfg_runs_uncond_and_cond_as_one_batch_keeping_quality():
    model = StubModel()
    x, t, tags, quality = _inputs()
    guided_predictor(model, tags, quality, scale=6.0, rescale=0.7)(x, t)
    assert len(model.calls) == 1
    batch, seen_tags, seen_q, _ = model.calls[0]
    assert batch == 4
    assert seen_tags[:2].tolist() == [[2, 3, 0, 0, 0, 0]] * 2     # unconditional half: [BOS][EOS]
    assert torch.equal(seen_tags[2:], tags)
    assert seen_q.tolist() == [3, 1, 3, 1]                         # quality tier kept


def test_cfg_scale_one_is_the_conditional_prediction():
    model = StubModel()
    x, t, tags, quality = _inputs()
    v = guided_predictor(model, tags, quality, scale=1.0, rescale=0.7)(x, t)
    v_cond, _ = StubModel()(x, t, tags, quality)
    assert torch.equal(v, v_cond)
    v_u, v_c = torch.randn(2, 2, 4, 3, 3).unbind(0)
    assert torch.allclose(guided_v(v_u, v_c, 1.0, 0.0), v_c, atol=1e-6)
    assert torch.allclose(guided_v(v_u, v_c, 1.0, 0.7), v_c, atol=1e-6)  # std(v_cfg) = std(v_c)


def test_rescale_zero_is_plain_cfg():
    v_u, v_c = torch.randn(2, 2, 4, 3, 3, generator=torch.Generator().manual_seed(1)).unbind(0)
    plain = v_u + 6.0 * (v_c - v_u)
    assert torch.equal(guided_v(v_u, v_c, 6.0, 0.0), plain)
    assert torch.allclose(rescale_guidance(plain, v_c, 0.0), plain)


def test_full_rescale_restores_the_conditional_std_per_image():
    v_u, v_c = torch.randn(2, 3, 4, 5, 5, generator=torch.Generator().manual_seed(2)).unbind(0)
    v = guided_v(v_u, v_c, 7.0, 1.0)
    std = v.flatten(1).std(1)
    assert torch.allclose(std, v_c.flatten(1).std(1), atol=1e-5)
    cfg = cfg_combine(v_u, v_c, 7.0)
    half = guided_v(v_u, v_c, 7.0, 0.5)
    assert torch.allclose(half, 0.5 * v + 0.5 * cfg, atol=1e-5)   # φ blends linearly


def test_style_override_reaches_both_halves():
    model = StubModel()
    x, t, tags, quality = _inputs()
    style = torch.tensor([4, 4])
    guided_predictor(model, tags, quality, scale=3.0, rescale=0.0, style_override=style)(x, t)
    assert model.calls[0][3].tolist() == [4, 4, 4, 4]


def test_rescale_of_a_constant_prediction_is_finite():
    v_u = torch.zeros(1, 4, 3, 3)
    v = guided_v(v_u, v_u, 6.0, 0.7)
    assert torch.isfinite(v).all() and v.abs().max().item() == 0.0


def test_negative_quality_sets_the_unconditional_tier_only():
    model = StubModel()
    x, t, tags, quality = _inputs()
    guided_predictor(model, tags, quality, scale=6.0, rescale=0.0, negative_quality=0)(x, t)
    _, _, seen_q, _ = model.calls[0]
    assert seen_q.tolist() == [0, 0, 3, 1]                         # uncond at tier 0, cond keeps the prompt's


class NoDenoise(torch.nn.Module):
    """Hides a VampDiT's encode_tags / denoise, forcing the full forward at every step."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def test_a_vampdit_encodes_the_tags_once_with_the_same_prediction():
    from vampdiffusion.config import load_config
    from vampdiffusion.models.dit import VampDiT
    cfg = load_config("tiny").model
    torch.manual_seed(0)
    model = VampDiT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():     # leave adaLN-Zero so the output depends on everything
            if "adaLN_modulation" in name or "final_layer" in name:
                p.normal_(0, 0.02)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    tags = torch.randint(4, cfg.vocab_size, (2, cfg.max_tags), generator=g)
    quality = torch.tensor([3, 0])
    calls = []
    model.tag_encoder.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        once = guided_predictor(model, tags, quality, 4.0, 0.7, negative_quality=0)
        every = guided_predictor(NoDenoise(model), tags, quality, 4.0, 0.7, negative_quality=0)
        n_before = len(calls)
        for step in (900, 500, 100):
            t = torch.full((2,), step)
            assert torch.allclose(once(x, t), every(x, t), rtol=1e-5, atol=1e-6)
    assert n_before == 1                              # the encoder ran once for `once` (before any step) ...
    assert len(calls) == n_before + 3                 # ... and once per step for the wrapped model
