"""benchmarks/gpu_suite.py at its --dry-run sizes on the CPU: every part's code path runs, so the script a GPU
lease runs at once cannot rot. The numbers are not checked (a CPU measures nothing of a GPU), the shape of
what each part writes is."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def suite(monkeypatch):
    # the dry run checks the suite, not inductor's C++ build on the CPU (benchmarks/gpu_check.py covers compile)
    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    torch.set_num_threads(1)   # as the suite's own CPU run: on a shared 2-core machine more threads mostly spin
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def suite_args(tmp_path: Path, budget: float, **part_budget) -> argparse.Namespace:
    return argparse.Namespace(out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"), vae_path="",
                              budget=budget, dry_run=True, part_budget=part_budget)


def test_throughput_part_times_each_lever_the_code_has_and_names_the_rest(suite, tmp_path):
    r = suite.run_part("throughput", suite.DRY_SIZES, tmp_path, tmp_path / "work")
    levers = {row["lever"]: row for row in r["levers"]}
    assert list(levers) == [lever.name for lever in suite.THROUGHPUT_LEVERS]
    for name in ("compile per block", "compile whole model"):
        assert levers[name]["status"] == "ok", levers[name]
        assert levers[name]["trainer_images_per_s"] > 0 and levers[name]["bare_images_per_s"] > 0
        assert levers[name]["micro_batch"] == suite.DRY_SIZES.micro_batch
    assert levers["compile per block"]["speed_over_baseline"] == 1.0
    assert levers["compile whole model"]["overrides"] == ["train.compile=true", "train.compile_scope=model"]
    if suite.torchao_float8() is None:
        assert levers["fp8 rowwise + compile per block"]["status"].startswith("unavailable")
    assert "selective activation checkpointing" in r["not_in_code"]
    assert json.loads((tmp_path / "gpu_suite_throughput.json").read_text())["levers"] == r["levers"]


def test_memory_part_searches_each_memory_lever_up_to_the_cap(suite, tmp_path):
    r = suite.run_part("memory", suite.DRY_SIZES, tmp_path, tmp_path / "work")
    assert [row["lever"] for row in r["levers"]] == ["no checkpointing", "per-block checkpointing"]
    for row in r["levers"]:
        # on the CPU every probe "fits", so the search ends at its cap
        assert row["status"] == "ok" and row["largest_micro_batch"] == suite.DRY_SIZES.search_cap and row["capped"]
        assert row["planner_largest_micro_batch"] > 0
    assert "FSDP2 over 2 GPUs, EMA on CPU, checkpointing=True" in r["estimate_24gb_claim"]


def test_loader_part_measures_each_worker_count_against_the_training_rate(suite, tmp_path):
    (tmp_path / "gpu_suite_throughput.json").write_text(json.dumps(
        {"levers": [{"status": "ok", "trainer_images_per_s": 2.0}, {"status": "unavailable"}]}))
    r = suite.run_part("loader", suite.DRY_SIZES, tmp_path, tmp_path / "work")
    assert r["training_images_per_s"] == 2.0
    assert [row["workers"] for row in r["rows_by_workers"]] == list(suite.DRY_SIZES.loader_workers)
    for row in r["rows_by_workers"]:
        assert row["latent"] == "128x128" and row["cold_samples_per_s"] > 0
        assert row["cold_over_training"] == pytest.approx(row["cold_samples_per_s"] / 2.0)


def test_loader_part_falls_back_to_the_documented_training_rate(suite, tmp_path):
    rate, source = suite.training_rate(tmp_path)        # no throughput JSON in this folder
    assert rate == suite.DOCS_TRAINING_RATE and "docs/benchmarks.md" in source


@pytest.mark.slow
def test_demo_part_runs_the_small_preset_through_every_stage(suite, tmp_path, taesdxl_path):
    r = suite.run_part("demo", suite.DRY_SIZES, tmp_path, tmp_path / "work", str(taesdxl_path))
    assert r["status"] == "ok" and r["command"].startswith("vamp demo --config small --size 64")
    assert r["steps"] == [2, 1, 1]
    assert len(r["checks"]) == 3 and r["training_s"] > 0 and r["training_flops"] > 0
    assert {"1/6 synthesise the Danbooru-like dataset", "5/6 evaluate"} <= set(r["timings_s"])
    for name in ("samples_tiers.png", "samples_styles.png"):
        assert (tmp_path / f"gpu_suite_demo_{name}").stat().st_size > 0


def test_suite_skips_every_part_whose_budget_is_more_than_is_left(suite, tmp_path, capsys):
    summary = suite.run_suite(suite_args(tmp_path, budget=5), suite.PARTS)
    assert [e["status"] for e in summary["parts"]] == ["skipped"] * len(suite.PARTS)
    assert all("budget" in e["reason"] for e in summary["parts"])
    assert "SKIPPED" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "gpu_suite.json").read_text())["parts"] == summary["parts"]
    assert "skipped" in suite.summary_table(summary, tmp_path / "out")


def test_suite_runs_a_part_in_its_own_process_and_reads_back_its_json(suite, tmp_path):
    loader = [p for p in suite.PARTS if p.name == "loader"]
    summary = suite.run_suite(suite_args(tmp_path, budget=120, loader=60), loader)
    assert summary["parts"][0]["status"] == "ok", summary
    table = suite.summary_table(summary, tmp_path / "out")
    assert "| loader | ok |" in table and "workers 0: cold" in table


def test_suite_stops_a_part_at_its_budget(suite, tmp_path):
    loader = [p for p in suite.PARTS if p.name == "loader"]
    summary = suite.run_suite(suite_args(tmp_path, budget=120, loader=0.5), loader)
    assert summary["parts"][0]["status"].startswith("stopped at its budget")


def test_whole_model_compile_traces_the_forward_as_one_graph(monkeypatch):
    # the throughput part's "compile whole model" lever needs no graph break in the MoE path. On the CPU the
    # experts run as segments (bincount: a data-dependent shape, a break there by design); on CUDA they run as
    # grouped_mm or bmm, so bmm stands in for them here
    from types import SimpleNamespace

    from vampdiffusion.config import load_config
    from vampdiffusion.models import moe
    from vampdiffusion.models.dit import VampDiT
    monkeypatch.setattr(moe, "run_experts", lambda ffn, dispatch, x, experts, gates: moe.experts_bmm(ffn, x, experts, gates))
    cfg = load_config("tiny").model
    model = VampDiT(cfg)
    trainer = SimpleNamespace(last_aux=None)   # the trainer's permanent routing hook, as train.py registers it
    model.register_forward_hook(lambda module, args, out: setattr(trainer, "last_aux", out[1]))
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(2, cfg.in_channels, 8, 8, generator=g), torch.randint(0, 1000, (2,), generator=g),
              torch.randint(4, cfg.vocab_size, (2, cfg.max_tags), generator=g), torch.tensor([0, 3]))
    explanation = torch._dynamo.explain(model)(*inputs)
    torch._dynamo.reset()
    assert explanation.graph_break_count == 0, [b.reason.splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_count == 1
