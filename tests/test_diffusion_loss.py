"""training_loss: v-MSE + weighted auxiliary losses, and the CFG empty-tag dropout."""
from types import SimpleNamespace

import pytest
import torch

from vampdiffusion.config import DiffusionConfig, ModelConfig
from vampdiffusion.diffusion.loss import loss_weights, training_loss
from vampdiffusion.diffusion.schedule import NoiseSchedule

SCHEDULE = NoiseSchedule(DiffusionConfig())


class StubModel(torch.nn.Module):
    """Predicts v = 0 and returns fixed auxiliary losses; records its inputs."""

    def __init__(self, bal_s=1.5, bal_q=1.25, spec_s=2.0, spec_q=0.5):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.bal_s, self.bal_q, self.spec = torch.tensor(bal_s), torch.tensor(bal_q), (spec_s, spec_q)
        self.seen = []

    def forward(self, x, t, tag_ids, quality, style_override=None):
        self.seen.append(SimpleNamespace(x=x, t=t, tag_ids=tag_ids, quality=quality))
        spec = self.spec
        aux = SimpleNamespace(balance_style=self.bal_s, balance_quality=self.bal_q,
                              specialisation_losses=lambda style, q: (torch.tensor(spec[0]), torch.tensor(spec[1])))
        return x * self.w, aux


def batch(B=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    tags = torch.zeros(B, 6, dtype=torch.long)
    tags[:, 0], tags[:, 1:4], tags[:, 4] = 2, torch.randint(4, 50, (B, 3), generator=g), 3
    return {"latent": torch.randn(B, 4, 4, 4, generator=g), "tag_ids": tags,
            "quality": torch.randint(0, 4, (B,), generator=g), "style": torch.randint(-1, 8, (B,), generator=g)}


def test_v_loss_is_the_mean_squared_v_target():
    model, b = StubModel(), batch()
    cfg = DiffusionConfig(cfg_dropout=0.0, timestep_sampling="uniform")
    _, m = training_loss(model, b, SCHEDULE, cfg, 0.0, torch.Generator().manual_seed(1))
    seen = model.seen[0]
    # x_t = α x0 + σ ε  =>  ε = (x_t − α x0)/σ and v = α ε − σ x0, recomputed independently
    a, s = SCHEDULE.alpha[seen.t].float().view(-1, 1, 1, 1), SCHEDULE.sigma[seen.t].float().view(-1, 1, 1, 1)
    eps = (seen.x - a * b["latent"]) / s
    v = a * eps - s * b["latent"]
    assert abs(m["v_mse"].item() - v.pow(2).mean().item()) < 1e-5


def test_min_snr_weights_cap_the_implied_x0_weight_at_gamma():
    cfg = DiffusionConfig(loss_weighting="min_snr", min_snr_gamma=5.0)
    t = torch.arange(1000)
    w = loss_weights(SCHEDULE, cfg, t)
    snr = SCHEDULE.snr[t].float()
    # the weight on the x0 error, (SNR + 1) w, is min(SNR + 1, γ): L_v where SNR + 1 <= γ, capped above
    assert torch.allclose((snr + 1) * w, torch.clamp(snr + 1, max=5.0), rtol=1e-5)
    assert w[-1].item() == 1.0 and w[0].item() < 0.01        # the terminal step keeps its full weight
    assert torch.equal(loss_weights(SCHEDULE, DiffusionConfig(), t), torch.ones(1000))
    with pytest.raises(ValueError, match="loss_weighting"):
        loss_weights(SCHEDULE, DiffusionConfig(loss_weighting="p2"), t)


def test_weighted_v_loss_is_the_per_image_weighted_mean():
    model, b = StubModel(), batch()
    cfg = DiffusionConfig(cfg_dropout=0.0, loss_weighting="min_snr", min_snr_gamma=2.0)
    _, m = training_loss(model, b, SCHEDULE, cfg, 0.0, torch.Generator().manual_seed(1))
    seen = model.seen[0]
    a, s = SCHEDULE.alpha[seen.t].float().view(-1, 1, 1, 1), SCHEDULE.sigma[seen.t].float().view(-1, 1, 1, 1)
    v = a * (seen.x - a * b["latent"]) / s - s * b["latent"]   # the stub predicts v = 0
    w = torch.clamp(2.0 / (SCHEDULE.snr[seen.t].float() + 1), max=1.0)
    assert abs(m["v_mse"].item() - (v.pow(2).flatten(1).mean(1) * w).mean().item()) < 1e-5


def test_total_loss_weights_the_auxiliary_losses():
    model, b = StubModel(), batch()
    cfg = DiffusionConfig(cfg_dropout=0.0, lambda_style=0.01, lambda_quality=0.02)
    loss, m = training_loss(model, b, SCHEDULE, cfg, 0.1, torch.Generator().manual_seed(1))
    expected = m["v_mse"].item() + 0.01 * 1.5 + 0.02 * 1.25 + 0.1 * (2.0 + 0.5)
    assert abs(loss.item() - expected) < 1e-6
    assert m["balance_style"].item() == 1.5 and m["spec_quality"].item() == 0.5


def test_lambda_spec_zero_removes_the_specialisation_terms():
    model, b = StubModel(), batch()
    cfg = DiffusionConfig(cfg_dropout=0.0)
    loss, m = training_loss(model, b, SCHEDULE, cfg, 0.0, torch.Generator().manual_seed(1))
    assert abs(loss.item() - (m["v_mse"].item() + 0.01 * 1.5 + 0.01 * 1.25)) < 1e-6


def test_cfg_dropout_one_empties_every_tag_sequence_and_keeps_quality():
    model, b = StubModel(), batch()
    training_loss(model, b, SCHEDULE, DiffusionConfig(cfg_dropout=1.0), 0.0, torch.Generator().manual_seed(1))
    seen = model.seen[0]
    assert seen.tag_ids.tolist() == [[2, 3, 0, 0, 0, 0]] * 8
    assert torch.equal(seen.quality, b["quality"])


def test_cfg_dropout_zero_keeps_the_tags():
    model, b = StubModel(), batch()
    training_loss(model, b, SCHEDULE, DiffusionConfig(cfg_dropout=0.0), 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(model.seen[0].tag_ids, b["tag_ids"])


def test_cfg_dropout_rate_matches_the_config():
    model, b = StubModel(), batch(B=4000)
    _, m = training_loss(model, b, SCHEDULE, DiffusionConfig(cfg_dropout=0.1), 0.0, torch.Generator().manual_seed(2))
    dropped = (model.seen[0].tag_ids[:, 2] == 0).float().mean().item()   # position 2 is PAD only when dropped
    assert abs(dropped - 0.1) < 0.015
    assert abs(m["cfg_dropped"].item() - dropped) < 1e-6


def test_same_generator_seed_gives_the_same_loss():
    b, cfg = batch(), DiffusionConfig()
    l1, _ = training_loss(StubModel(), b, SCHEDULE, cfg, 0.0, torch.Generator().manual_seed(7))
    l2, _ = training_loss(StubModel(), b, SCHEDULE, cfg, 0.0, torch.Generator().manual_seed(7))
    l3, _ = training_loss(StubModel(), b, SCHEDULE, cfg, 0.0, torch.Generator().manual_seed(8))
    assert l1.item() == l2.item() and l1.item() != l3.item()


def test_real_model_loss_is_finite_and_reaches_every_parameter():
    from vampdiffusion.models.dit import VampDiT
    mcfg = ModelConfig(patch_size=1, hidden_size=32, depth=4, num_heads=2, max_grid=8, vocab_size=64,
                       max_tags=6, enc_dim=16, enc_depth=1, enc_heads=2, moe_dispatch="loop")
    model = VampDiT(mcfg)
    loss, m = training_loss(model, batch(), SCHEDULE, DiffusionConfig(), 0.1, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert m["balance_style"].item() >= 1.0 - 1e-5                  # L_bal minimum is 1
