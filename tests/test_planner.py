import re

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vampdiffusion import cli
from vampdiffusion.config import load_config
from vampdiffusion.models.dit import VampDiT
from vampdiffusion.models.planner import (
    GIB, GPUS, active_flops, build_meta_model, dense_twin_flops, largest_micro_batch, memory_budget,
    parameter_counts, training_flops_per_image, training_hours,
)

V1 = load_config("v1").model
TINY = load_config("tiny").model


def test_counts_equal_the_instantiated_tiny_model():
    model = VampDiT(TINY)
    counts = parameter_counts(TINY)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    parts = ("tag encoder", "embeddings", "backbone", "style experts", "quality experts")
    assert sum(counts[k] for k in parts) == counts["total"]


def test_v1_counts_match_the_spec_size_check():
    counts = parameter_counts(V1)
    assert counts["total"] == sum(p.numel() for p in build_meta_model(V1).parameters())
    assert counts["total"] == pytest.approx(1.25e9, rel=0.10)
    assert counts["spec: DiT backbone (dense FFN everywhere)"] == pytest.approx(0.54e9, rel=0.05)
    assert counts["spec: style experts (+)"] == pytest.approx(0.41e9, rel=0.05)
    assert counts["spec: quality experts (+)"] == pytest.approx(0.18e9, rel=0.05)
    assert counts["tag encoder"] == pytest.approx(0.13e9, rel=0.08)
    assert counts["active per image"] == pytest.approx(0.72e9, rel=0.05)


def test_vamp_plan_prints_the_model_counts(capsys):
    assert cli.main(["plan", "--config", "v1", "--checkpointing"]) == 0
    out = capsys.readouterr().out
    counts = parameter_counts(V1)
    for key in ("total", "active per image", "tag encoder", "style experts", "quality experts"):
        assert re.search(rf"\| {re.escape(key)}\s+\|\s+{counts[key]:,} \|", out), key
    assert "NOT reachable" in out and "does NOT fit" in out


def test_analytic_forward_flops_match_torch_flop_counter():
    cfg = load_config("tiny", ["model.moe_dispatch=loop"]).model
    model = VampDiT(cfg)
    x = torch.randn(1, 4, 8, 8)
    tags = torch.randint(4, 256, (1, cfg.max_tags))  # the analytic count assumes max_tags tokens
    counter = FlopCounterMode(display=False)
    # the math backend runs attention as matmuls the counter sees (CPU flash attention is not counted)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(x, torch.tensor([10]), tags, torch.tensor([2]))
    measured = counter.get_total_flops()
    assert active_flops(cfg, (8, 8)) == pytest.approx(measured, rel=0.01)


def test_training_is_three_forwards_and_dense_twin_is_cheaper():
    hw = (128, 128)
    assert training_flops_per_image(V1, hw) == 3 * active_flops(V1, hw)
    # the MoE model runs one extra FFN in each style block: dense twin = MoE − 7 FFNs (± modulation/routers)
    ffn = 2 * 4096 * 1024 * 4096 * 2
    assert active_flops(V1, hw) - dense_twin_flops(V1, hw) == pytest.approx(7 * ffn, rel=1e-3)


def test_training_hours_formula():
    gpu = GPUS["h100"]
    # 1000 steps × 256 images × 1e12 FLOPs / (2 × 989.4e12 × 0.5) s
    expected = 1000 * 256 * 1e12 / (2 * 989.4e12 * 0.5) / 3600
    assert training_hours(1000, 256, 1e12, 2, gpu, 0.5) == pytest.approx(expected)


def test_largest_micro_batch_is_the_boundary():
    gpu, hw, n = GPUS["h100"], (128, 128), parameter_counts(V1)["total"]
    b = largest_micro_batch(V1, hw, gpu, True, n)
    assert b >= 1
    assert sum(memory_budget(V1, hw, b, True, n).values()) <= gpu.memory_gib * GIB
    assert sum(memory_budget(V1, hw, b + 1, True, n).values()) > gpu.memory_gib * GIB


def test_plan_rejects_bad_numbers(capsys):
    assert cli.main(["plan", "--config", "tiny", "--gpus", "0"]) == 2
    assert "gpus 0 is out of range" in capsys.readouterr().err
