"""The ablation switches (docs/research.md §5): model.style_routing (image | token) and model.style_ffn (moe | dense).

Defaults build the v1 model; `token` routes each token from [LN(x_n) ; e_tag ; e_t]; `dense` puts one FFN of
style_top_k experts' width where the style experts are. Tiny models, CPU, fp32, seeded.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from test_model_dit import inputs, randomise, small_cfg
from test_train_support import tiny_config, write_latent_dataset

from vampdiffusion.config import ConfigError, config_from_dict, config_to_dict, load_config
from vampdiffusion.models.dit import VampDiT
from vampdiffusion.models.moe import TokenStyleMoE, balance_loss, image_style_routing, is_expert_or_router
from vampdiffusion.models.planner import active_flops, parameter_counts
from vampdiffusion.training import train as T

TOKEN, DENSE = {"style_routing": "token"}, {"style_ffn": "dense"}


def randomise_routers(model: VampDiT, seed: int = 1) -> VampDiT:
    """Routers far from uniform, so routing decisions differ visibly between tokens and images."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in model.style_blocks:
            r = model.blocks[i].ffn.router
            r.weight.copy_(torch.randn(r.weight.shape, generator=g))
    return model


def built(cfg, seed: int = 0) -> VampDiT:
    torch.manual_seed(seed)
    return VampDiT(cfg)


# ----------------------------------------------------------------------------
# Defaults: the v1 model
# ----------------------------------------------------------------------------

def test_defaults_are_per_image_routing_and_style_moe():
    m = load_config("v1").model
    assert (m.style_routing, m.style_ffn) == ("image", "moe")


def test_config_without_the_switches_builds_the_same_model_bit_for_bit(tmp_path):
    cfg = small_cfg()
    without = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("style_routing", "style_ffn")}
    old = config_from_dict({"model": without}).model            # a config written before the switches existed
    a, b = built(old), built(dataclasses.replace(cfg, style_routing="image", style_ffn="moe"))
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    randomise(a), randomise(b)
    (va, aux_a), (vb, aux_b) = a(*inputs()), b(*inputs())
    assert torch.equal(va, vb) and torch.equal(aux_a.style_experts, aux_b.style_experts)
    assert aux_a.style_token_experts is None
    # and a model folder whose config.json lacks the keys loads as that model
    a.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["model"] = without
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = VampDiT.from_pretrained(tmp_path)
    assert (loaded.cfg.style_routing, loaded.cfg.style_ffn) == ("image", "moe")
    assert torch.equal(loaded(*inputs())[0], va)


def test_default_style_block_holds_the_v1_router_and_experts_only():
    cfg = small_cfg()
    d, h = cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio)
    shapes = {k: tuple(v.shape) for k, v in VampDiT(cfg).state_dict().items() if k.startswith("blocks.1.ffn.")}
    assert shapes == {"blocks.1.ffn.router.weight": (8, 2 * d), "blocks.1.ffn.router.bias": (8,),
                      "blocks.1.ffn.experts.w1": (8, d, h), "blocks.1.ffn.experts.w2": (8, h, d),
                      "blocks.1.ffn.experts.b1": (8 * h,), "blocks.1.ffn.experts.b2": (8 * d,)}


def test_token_routing_with_the_dense_twin_is_a_config_error():
    with pytest.raises(ConfigError, match="style_routing=token needs model.style_ffn=moe"):
        load_config("tiny", ["model.style_routing=token", "model.style_ffn=dense"])
    with pytest.raises(ConfigError, match="one of 'image', 'token'"):
        load_config("tiny", ["model.style_routing=pixel"])


# ----------------------------------------------------------------------------
# Token routing
# ----------------------------------------------------------------------------

def test_token_router_reads_the_normalised_token_with_tags_and_timestep():
    torch.manual_seed(0)
    moe = TokenStyleMoE(16, 32, num_experts=8, top_k=2, dispatch="loop")
    x_norm, e_tag_t = torch.randn(2, 5, 16), torch.randn(2, 32)
    logits, p, experts, gates = moe.route(x_norm, e_tag_t)
    # r_n = W_S [LN(x_n) ; e_tag ; e_t] + b
    expected = moe.router(torch.cat([x_norm, e_tag_t[:, None].expand(2, 5, 32)], dim=-1))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    assert experts.shape == gates.shape == (2, 5, 2)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 5))
    assert torch.equal(experts, p.topk(2, dim=-1).indices)


def test_token_dispatch_equals_the_per_token_reference():
    torch.manual_seed(0)
    moe = TokenStyleMoE(16, 32, num_experts=8, top_k=2, dispatch="grouped")
    moe.experts.reset_parameters()
    x = torch.randn(3, 6, 16)
    _, _, experts, gates = moe.route(torch.randn(3, 6, 16) * 5, torch.randn(3, 32))
    out = moe(x, experts, gates)
    f = moe.experts
    b1, b2 = f.b1.view(8, 32), f.b2.view(8, 16)
    ref = torch.zeros_like(x)
    for b in range(3):
        for n in range(6):
            for j in range(2):
                e = int(experts[b, n, j])
                ref[b, n] += gates[b, n, j] * (F.gelu(x[b, n] @ f.w1[e] + b1[e], approximate="tanh") @ f.w2[e] + b2[e])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_tokens_of_one_image_pick_different_experts():
    model = randomise_routers(randomise(VampDiT(small_cfg(**TOKEN))))
    _, aux = model(*inputs(B=2, h=8, w=8))
    tok = aux.style_token_experts                                   # (n_S, B, N, k)
    assert tok.shape == (1, 2, 16, 2)
    assert all(len(torch.unique(tok[0, b, :, 0])) > 1 for b in range(2))
    assert aux.style_experts.shape == (1, 2, 2) and aux.style_blocks == (1,)


def test_image_level_routing_is_the_mean_of_the_token_probabilities():
    model = randomise_routers(randomise(VampDiT(small_cfg(**TOKEN))))
    captured = {}
    block = model.blocks[1]
    block.ffn.register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    route = block.ffn.route
    block.ffn.route = lambda *a: captured.setdefault("route", route(*a))
    _, aux = model(*inputs(B=3))
    logits, p, experts, _ = captured["route"]                       # per token (B, N, ·)
    p_bar = p.mean(dim=1)
    torch.testing.assert_close(aux.style_probs[0], p_bar)
    torch.testing.assert_close(aux.style_logits[0].softmax(-1), p_bar)
    assert torch.equal(aux.style_experts[0], p_bar.topk(2, dim=-1).indices)
    # L_spec^S = −ln p̄_label, L_bal^S = N_E Σ f_i P_i over the B·N token slots
    labels = torch.tensor([3, -1, 5])
    spec, _ = aux.specialisation_losses(labels, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(spec, -(p_bar[0, 3].log() + p_bar[2, 5].log()) / 2)
    f = F.one_hot(experts.flatten(0, 1), 8).sum(dim=(0, 1)).float() / (experts.numel())
    torch.testing.assert_close(aux.balance_style, 8 * (f * p_bar.mean(0)).sum())
    torch.testing.assert_close(aux.balance_style, balance_loss(p.flatten(0, 1)[None], experts.flatten(0, 1)[None]))


def test_image_style_routing_of_identical_tokens_is_per_image_routing():
    r = torch.randn(4, 8)
    logits, p, experts, gates = image_style_routing(r[:, None].expand(4, 7, 8), top_k=2)
    torch.testing.assert_close(p, r.softmax(-1))
    assert torch.equal(experts, r.topk(2, dim=-1).indices)


def test_gradients_reach_the_token_router_from_every_loss():
    model = randomise_routers(randomise(VampDiT(small_cfg(**TOKEN))))
    router = model.blocks[1].ffn.router
    d = model.cfg.hidden_size
    for name, loss_of in (("v", lambda v, aux: v.square().mean()),
                          ("balance", lambda v, aux: aux.balance_style),
                          ("spec", lambda v, aux: aux.specialisation_losses(torch.tensor([1, 2, 3]),
                                                                             torch.zeros(3, dtype=torch.long))[0])):
        model.zero_grad()
        v, aux = model(*inputs())
        loss_of(v, aux).backward()
        g = router.weight.grad
        assert g is not None and g[:, :d].abs().sum() > 0 and g[:, d:].abs().sum() > 0, name  # token and image parts
        assert router.bias.grad.abs().sum() > 0, name


def test_token_style_override_forces_every_token():
    model = randomise_routers(randomise(VampDiT(small_cfg(**TOKEN))))
    v, aux = model(*inputs(), style_override=torch.tensor([4, -1, 6]))
    tok = aux.style_token_experts[0]
    assert (tok[0, :, 0] == 4).all() and (tok[2, :, 0] == 6).all()
    assert aux.style_experts[0, 0, 0] == 4 and aux.style_experts[0, 2, 0] == 6
    assert torch.equal(aux.style_gates[0, 0], torch.tensor([1.0, 0.0]))


def test_token_routing_gradient_checkpointing_gives_the_same_gradients():
    plain = randomise_routers(randomise(VampDiT(small_cfg(**TOKEN))))
    ckpt = VampDiT(dataclasses.replace(plain.cfg, gradient_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    grads = []
    for m in (plain, ckpt):
        v, aux = m(*inputs())
        (v.square().mean() + aux.balance_style).backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7)


def test_route_without_latents_has_no_token_style_rows_and_with_them_the_forward_s():
    model = randomise_routers(randomise(VampDiT(small_cfg(**TOKEN))))
    x, t, tags, q = inputs()
    alone = model.route(tags, t, q)
    assert alone.style_experts.shape == (0, 3, 2) and alone.style_blocks == () and alone.quality_experts.shape == (1, 3)
    with_x = model.route(tags, t, q, x=x)
    assert torch.equal(with_x.style_experts, model(x, t, tags, q)[1].style_experts)


# ----------------------------------------------------------------------------
# The dense twin
# ----------------------------------------------------------------------------

def test_dense_twin_has_the_active_parameters_of_the_moe_per_image():
    moe, dense = small_cfg(depth=8), small_cfg(depth=8, **DENSE)
    cm, cd = parameter_counts(moe), parameter_counts(dense)
    d, k, E = moe.hidden_size, moe.style_top_k, moe.num_style_experts
    n_s = 2                                                         # style blocks 1, 5
    # the same FFN weights per image; the MoE adds its routers and k − 1 more output biases
    assert cd["active per image"] == cm["active per image"] - n_s * ((2 * d * E + E) + (k - 1) * d)
    model = VampDiT(dense)
    w1 = model.blocks[1].ffn.experts.w1
    assert tuple(w1.shape) == (1, d, k * int(d * moe.mlp_ratio))
    assert model.style_blocks == () and model.quality_blocks == (3, 7)
    assert cd["total"] == cd["active per image"] + 2 * (moe.num_quality_experts - 1) * (
        2 * d * int(d * moe.mlp_ratio) + int(d * moe.mlp_ratio) + d)   # only quality experts are inactive
    # and the same FFN FLOPs: the forward differs by the style routers alone
    assert active_flops(moe, (8, 8)) - active_flops(dense, (8, 8)) == n_s * 2 * 2 * d * E


def test_dense_twin_trains_in_phase_2_like_the_experts_it_replaces():
    names = [n for n, _ in VampDiT(small_cfg(**DENSE)).named_parameters() if n.startswith("blocks.1.")]
    assert [n for n in names if is_expert_or_router(n)] == ["blocks.1.ffn.experts.w1", "blocks.1.ffn.experts.w2",
                                                            "blocks.1.ffn.experts.b1", "blocks.1.ffn.experts.b2"]


def test_dense_twin_has_no_style_rows_no_style_losses_and_refuses_a_style_override():
    model = randomise(VampDiT(small_cfg(**DENSE)))
    v, aux = model(*inputs())
    assert aux.style_logits.shape == (0, 3, 8) and aux.style_blocks == ()
    spec_s, spec_q = aux.specialisation_losses(torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]))
    assert aux.balance_style.item() == 0.0 and spec_s.item() == 0.0 and spec_q.item() > 0
    (v.square().mean() + aux.balance_style + aux.balance_quality + spec_s + spec_q).backward()
    assert model.blocks[1].ffn.experts.w1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="style_ffn=dense"):
        model(*inputs(), style_override=torch.tensor([1, -1, -1]))


@pytest.mark.parametrize("switch", [TOKEN, DENSE], ids=["token", "dense"])
def test_planner_flops_match_the_flop_counter(switch):
    cfg = dataclasses.replace(load_config("tiny", ["model.moe_dispatch=loop"]).model, **switch)
    model = VampDiT(cfg)
    tags = torch.randint(4, 256, (1, cfg.max_tags))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(torch.randn(1, 4, 8, 8), torch.tensor([10]), tags, torch.tensor([2]))
    assert active_flops(cfg, (8, 8)) == pytest.approx(counter.get_total_flops(), rel=0.01)


@pytest.mark.parametrize("switch", [TOKEN, DENSE], ids=["token", "dense"])
def test_model_folder_records_the_switch(switch, tmp_path):
    model = randomise_routers(randomise(VampDiT(small_cfg(**switch))))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["model"]
    assert {k: saved[k] for k in switch} == switch
    loaded = VampDiT.from_pretrained(tmp_path)
    assert torch.equal(loaded(*inputs())[0], model(*inputs())[0])


# ----------------------------------------------------------------------------
# Held-out routing metrics
# ----------------------------------------------------------------------------

def routing_of(switch: dict) -> dict:
    from vampdiffusion.evaluation.routing import collect_routing, latent_noiser, metrics_from_record
    cfg = load_config("tiny", ["latents.normalize=none"])
    cfg.model = dataclasses.replace(small_cfg(**switch))
    model = randomise_routers(randomise(VampDiT(cfg.model)))
    x, _, tags, q = inputs(B=6)
    batch = {"latent": x, "tag_ids": tags, "quality": q, "style": torch.tensor([0, 1, 2, 3, -1, 5])}
    noise = latent_noiser(cfg) if cfg.model.style_routing == "token" else None
    record = collect_routing(model, [batch], cfg.diffusion.num_timesteps, seed=0, noise=noise)
    return metrics_from_record(record, 8, 4, 0.7)


def test_heldout_routing_of_the_dense_twin_reports_style_as_absent():
    m = routing_of(DENSE)
    assert m["style"]["accuracy_mean"] is None and m["style"]["blocks"] == [] and m["collapse_alerts"] == []
    assert m["quality"]["accuracy_mean"] is not None


def test_heldout_routing_of_token_routing_reads_the_noised_latents():
    m = routing_of(TOKEN)
    assert m["style"]["blocks"] == [1] and m["style"]["accuracy_mean"] is not None
    assert sum(m["style"]["frequencies"][0]) == pytest.approx(1.0, abs=1e-5)   # rounded to 6 digits


# ----------------------------------------------------------------------------
# Training: three steps of each variant, phase 2 without L_spec, generation from the model folder
# ----------------------------------------------------------------------------

STEPS = ["train.phase1.steps=3", "train.phase1.warmup_steps=1", "train.phase2.steps=3", "train.phase2.warmup_steps=1",
         "train.ckpt_every=3", "train.ema_every=3"]
VARIANTS = {"default": [], "dense": ["model.style_ffn=dense"], "token": ["model.style_routing=token"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_latent_dataset(tmp_path_factory.mktemp("latents"))


def rows(run) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_three_steps_of_each_variant_train_phase_1_and_2(variant, data, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(*STEPS, *VARIANTS[variant])
    assert T.train(cfg, 1, data, tmp_path / "p1") == 0
    saved = json.loads((tmp_path / "p1" / "model" / "config.json").read_text())["model"]
    assert (saved["style_routing"], saved["style_ffn"]) == (cfg.model.style_routing, cfg.model.style_ffn)
    last = rows(tmp_path / "p1")[-1]
    assert last["step"] == 3 and np.isfinite(last["loss"])
    assert ("routing/style_block1_f0" in last) == (variant != "dense")
    assert T.train(tiny_config(*STEPS, *VARIANTS[variant]), 2, data, tmp_path / "p2", init_from=str(tmp_path / "p1")) == 0
    from safetensors.torch import load_file
    start = load_file(str(tmp_path / "p1" / "model" / "model_live.safetensors"))
    end = load_file(str(tmp_path / "p2" / "model" / "model_live.safetensors"))
    assert not torch.equal(start["blocks.1.ffn.experts.w1"], end["blocks.1.ffn.experts.w1"])  # style position trains
    assert torch.equal(start["blocks.0.ffn.fc1.weight"], end["blocks.0.ffn.fc1.weight"])      # backbone frozen


def test_phase_2_without_the_specialisation_loss(data, tmp_path):
    torch.set_num_threads(1)
    assert T.train(tiny_config(*STEPS), 1, data, tmp_path / "p1") == 0
    cfg = tiny_config(*STEPS, "train.phase2.lambda_spec=0")
    assert cfg.train.phase2.lambda_spec == 0.0 and tiny_config().train.phase2.lambda_spec > 0
    assert T.train(cfg, 2, data, tmp_path / "p2", init_from=str(tmp_path / "p1")) == 0
    for r in rows(tmp_path / "p2"):
        # L = L_v + λ_S L_bal^S + λ_Q L_bal^Q: the logged spec terms do not enter the loss
        assert r["loss"] == pytest.approx(r["loss/v_mse"] + 0.01 * (r["loss/balance_style"] + r["loss/balance_quality"]),
                                          rel=1e-5)
        assert r["loss/spec_style"] > 0


@pytest.mark.parametrize("variant", ["dense", "token"])
def test_generation_reads_the_switch_from_the_model_folder(variant, data, tmp_path, taesdxl_path):
    from vampdiffusion.generation.generate import expert_routing, generate, load_generator
    torch.set_num_threads(1)
    assert T.train(tiny_config(*STEPS, *VARIANTS[variant]), 1, data, tmp_path / "p1") == 0
    gen = load_generator(tmp_path / "p1" / "model", vae_path=str(taesdxl_path))
    assert config_to_dict(gen.model.cfg) == config_to_dict(gen.cfg.model)
    assert (gen.model.cfg.style_ffn == "dense") == (variant == "dense")
    assert (gen.model.cfg.style_routing == "token") == (variant == "token")
    assert len(generate(gen, "red, circle", quality=3, n=1)) == 1
    report = expert_routing(gen, "red, circle", quality=3)
    assert report["style_blocks"] == [] and report["style_probs_mean"] is None   # no latents: no style rows
    assert len(report["quality_blocks"]) == 1
