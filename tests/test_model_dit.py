import copy
import dataclasses
import json

import pytest
import torch

from vampdiffusion.config import Config, ModelConfig, load_config, save_config_yaml
from vampdiffusion.models.dit import VampDiT, block_kind
from vampdiffusion.models.moe import expert_and_router_parameters, is_expert_or_router

TINY = load_config("tiny").model


def small_cfg(**kw) -> ModelConfig:
    """The tiny preset's architecture, a little smaller still so tests stay fast."""
    kw = {"depth": 4, **kw}
    return dataclasses.replace(TINY, hidden_size=64, num_heads=2, enc_dim=32, enc_heads=2, max_grid=16, **kw)


def randomise(model: VampDiT, seed: int = 0) -> VampDiT:
    """Replace the zero-initialised adaLN / final layers so the model computes something non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def inputs(B=3, h=8, w=8, L=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, h, w, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    tags = torch.zeros(B, L, dtype=torch.long)
    for b in range(B):
        n = 3 + b
        tags[b, 0], tags[b, 1:n + 1], tags[b, n + 1] = 2, torch.randint(4, 256, (n,), generator=g), 3
    quality = torch.arange(B) % 4
    return x, t, tags, quality


def test_block_kinds_follow_the_index_pattern():
    assert [block_kind(i) for i in range(8)] == ["dense", "style", "dense", "quality"] * 2
    model = VampDiT(small_cfg(depth=8))
    assert model.style_blocks == (1, 5) and model.quality_blocks == (3, 7)


@pytest.mark.parametrize("h,w", [(8, 8), (6, 10), (16, 4)])
def test_output_shape_square_and_non_square(h, w):
    model = randomise(VampDiT(small_cfg()))
    v, aux = model(*inputs(h=h, w=w))
    assert v.shape == (3, 4, h, w)
    assert aux.style_logits.shape == (1, 3, 8) and aux.style_experts.shape == (1, 3, 2)
    assert aux.quality_logits.shape == (1, 3, 4) and aux.quality_experts.shape == (1, 3)


def test_patch_two_non_square_round_trip_shape():
    model = randomise(VampDiT(small_cfg(patch_size=2)))
    v, _ = model(*inputs(h=12, w=6))
    assert v.shape == (3, 4, 12, 6)


def test_untrained_model_outputs_exactly_zero():
    v, _ = VampDiT(small_cfg())(*inputs())
    assert v.abs().max().item() == 0.0


def test_every_block_is_the_identity_at_init():
    model = VampDiT(small_cfg())
    x, t, tags, q = inputs()
    captured = []
    hooks = [b.register_forward_hook(lambda m, a, out: captured.append((a[0], out))) for b in model.blocks]
    model(x, t, tags, q)
    for h in hooks:
        h.remove()
    assert len(captured) == 4
    for block_in, block_out in captured:
        assert torch.equal(block_in, block_out)


def test_latent_beyond_position_tables_is_a_clear_error():
    cfg = small_cfg()
    model = VampDiT(cfg)
    with pytest.raises(ValueError, match="beyond the position tables"):
        model(*inputs(h=(cfg.max_grid + 1) * cfg.patch_size, w=8))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        VampDiT(small_cfg(patch_size=2))(*inputs(h=7, w=8))


def test_too_long_tag_sequence_is_a_clear_error():
    with pytest.raises(ValueError, match="max_tags"):
        VampDiT(small_cfg())(*inputs(L=40))


def test_grouped_model_equals_loop_model_forward_and_gradients():
    torch.manual_seed(0)
    grouped = randomise(VampDiT(small_cfg(moe_dispatch="grouped")))
    loop = VampDiT(small_cfg(moe_dispatch="loop"))
    loop.load_state_dict(grouped.state_dict())
    x, t, tags, q = inputs(B=3)  # 3 images × top-2 = 6 slots for 8 style experts: some get no image
    results = []
    for model in (grouped, loop):
        v, aux = model(x, t, tags, q)
        (v.square().mean() + aux.balance_style + aux.balance_quality).backward()
        results.append((v.detach(), aux, {n: p.grad for n, p in model.named_parameters()}))
    (vg, auxg, gg), (vl, auxl, gl) = results
    used = set(auxg.style_experts[0].flatten().tolist())
    assert len(used) < 8
    torch.testing.assert_close(vg, vl, rtol=1e-5, atol=1e-6)
    assert torch.equal(auxg.style_experts, auxl.style_experts)
    for name in gl:
        assert gg[name] is not None and gl[name] is not None, name
        torch.testing.assert_close(gg[name], gl[name], rtol=1e-5, atol=1e-6, msg=name)


def test_every_parameter_gets_a_gradient_each_step():
    model = randomise(VampDiT(small_cfg()))
    v, aux = model(*inputs(B=2))
    (v.square().mean() + 0.01 * (aux.balance_style + aux.balance_quality)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_style_override_routes_every_style_block_to_the_forced_expert():
    model = randomise(VampDiT(small_cfg(depth=8)))
    x, t, tags, q = inputs(B=3)
    _, aux = model(x, t, tags, q, style_override=torch.tensor([6, -1, 2]))
    assert aux.style_experts[:, 0, 0].tolist() == [6, 6] and aux.style_experts[:, 2, 0].tolist() == [2, 2]
    assert aux.style_gates[:, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_style_override_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="style_override"):
        VampDiT(small_cfg())(*inputs(B=3), style_override=torch.tensor([8, -1, 0]))


def test_padding_leaves_e_tag_and_output_unchanged():
    model = randomise(VampDiT(small_cfg()))
    x, t, tags, q = inputs(L=12)
    padded = torch.cat([tags, torch.zeros(3, 20, dtype=torch.long)], dim=1)
    _, _, e_short = model.encode_tags(tags)
    _, _, e_long = model.encode_tags(padded)
    torch.testing.assert_close(e_long, e_short, rtol=0, atol=1e-6)
    v_short, _ = model(x, t, tags, q)
    v_long, _ = model(x, t, padded, q)
    torch.testing.assert_close(v_long, v_short, rtol=0, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = randomise(VampDiT(small_cfg()))
    ckpt = VampDiT(small_cfg(gradient_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, ckpt):
        v, aux = model(*inputs())
        (v.square().mean() + aux.balance_style).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


def test_bf16_autocast_forward_and_backward_close_to_fp32():
    model = randomise(VampDiT(small_cfg()))
    x, t, tags, q = inputs()
    ref, _ = model(x, t, tags, q)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v, aux = model(x, t, tags, q)
    assert aux.style_logits.dtype == torch.float32
    v.float().square().mean().backward()
    assert (v.float() - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_save_pretrained_from_pretrained_is_bit_identical(tmp_path):
    model = randomise(VampDiT(small_cfg()))
    full = Config(model=model.cfg)
    full.sample.steps = 11
    model.save_pretrained(tmp_path / "m", config=full, extra_files={"vocab.json": '{"[PAD]": 0}'})
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    assert written["model"] == dataclasses.asdict(model.cfg) and written["sample"]["steps"] == 11
    assert (tmp_path / "m" / "vocab.json").read_text() == '{"[PAD]": 0}'
    restored = VampDiT.from_pretrained(tmp_path / "m")
    assert restored.cfg == model.cfg
    a, b = model.state_dict(), restored.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = inputs()
    assert torch.equal(model(*x)[0], restored(*x)[0])


def test_from_pretrained_ignores_other_config_sections(tmp_path):
    model = VampDiT(small_cfg())
    model.save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    values["some_future_section"] = {"anything": 1}
    values["train"] = {"not_a_key": True}
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert VampDiT.from_pretrained(tmp_path).cfg == model.cfg


def test_from_pretrained_mismatched_weights_is_a_clear_error(tmp_path):
    VampDiT(small_cfg()).save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    values["model"]["depth"] = 2
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match="does not match"):
        VampDiT.from_pretrained(tmp_path)


def test_model_config_round_trips_through_yaml(tmp_path):
    cfg = Config(model=small_cfg(depth=12, moe_dispatch="loop"))
    save_config_yaml(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").model == cfg.model


def test_expert_and_router_parameters_are_exactly_the_moe_ffns_and_routers():
    model = VampDiT(small_cfg())
    names = [n for n, _ in expert_and_router_parameters(model)]
    # 2 MoE blocks × (w1, w2, b1, b2, router.weight, router.bias)
    assert len(names) == 12
    assert all(int(n.split(".")[1]) % 2 == 1 for n in names)
    assert not is_expert_or_router("blocks.1.attn.qkv.weight")
    assert not is_expert_or_router("blocks.0.ffn.fc1.weight")
    assert is_expert_or_router("_orig_mod.blocks.3.ffn.router.weight")


def test_v1_on_meta_device_has_about_1_25_billion_parameters():
    with torch.device("meta"):
        model = VampDiT(load_config("v1").model)
    total = sum(p.numel() for p in model.parameters())
    assert 1.125e9 <= total <= 1.375e9


@pytest.mark.slow  # dynamo tracing takes seconds
def test_torch_compile_traces_the_whole_model_without_graph_breaks():
    # fullgraph=True fails on any graph break or host sync; the "eager" backend keeps the test fast
    # (the inductor backend is exercised by benchmarks/model_step.py --compile)
    torch._dynamo.reset()
    model = randomise(VampDiT(small_cfg()))
    x = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, _ = model(*x)
        v, aux = torch.compile(model, backend="eager", fullgraph=True)(*x)
    (v.float().square().mean() + aux.balance_style).backward()
    assert torch.equal(v, ref)
    assert model.blocks[1].ffn.experts.w1.grad is not None


@pytest.mark.slow  # dynamo tracing takes seconds
def test_compile_blocks_is_regional_and_exact():
    # every DiT block and encoder layer compiled on its own: the same output and gradients as eager,
    # and one compiled graph per block kind (dense, style MoE, quality MoE) plus the encoder layer,
    # not one per block
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    eager = randomise(VampDiT(small_cfg(depth=8)))
    regional = copy.deepcopy(eager)
    counter = CompileCounter()
    regional.compile_blocks(backend=counter, fullgraph=True)
    x = inputs()
    outs = []
    for model in (eager, regional):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v, aux = model(*x)
        (v.float().square().mean() + aux.balance_style + aux.balance_quality).backward()
        outs.append((v, {n: p.grad for n, p in model.named_parameters()}))
    assert torch.equal(outs[0][0], outs[1][0])
    for n, g in outs[0][1].items():
        assert torch.equal(g, outs[1][1][n]), n
    assert counter.frame_count == 4, counter.frame_count
