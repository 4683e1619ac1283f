"""`vamp demo` end to end on the embedded default (slow: the whole pipeline, ≈ 15 min on 2 cores), and the
fixed-work property on a small run."""

import json
import subprocess
import sys
import time

import pytest

from vampdiffusion.config import load_config
from vampdiffusion.demo import DemoArgs, data_stages, run_demo, stage_done

# thresholds below the worst of the seeds measured (docs/benchmarks.md#demo gives every seed's numbers)
COLOUR_MIN = 0.70
SHARPNESS_SPAN_MIN = 0.05       # tier 3 − tier 0 of the generated images' mean sharpness
STYLE_ROUTING_MIN = 3 / 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory, taesdxl_path):
    out = tmp_path_factory.mktemp("demo")
    a = DemoArgs(out=out, seed=1, vae_path=str(taesdxl_path))  # the seed-1 column of docs/benchmarks.md#demo
    t0 = time.time()
    result = run_demo(a)
    return a, result, time.time() - t0


@pytest.mark.slow
def test_demo_learns_colour_from_the_tags(demo):
    # the largest coloured region read on every single-object held-out prompt at every tier (≈ 548 readings)
    _, result, _ = demo
    colour = result.results["oracle"]["attributes"]["colour"]
    assert colour["chance"] <= 1 / 6
    assert colour["count"] >= 400
    assert colour["accuracy"] >= COLOUR_MIN, colour


@pytest.mark.slow
def test_demo_data_sharpness_rises_with_quality_tier(demo):
    # the held-out data itself (decoded latents) is sharper at higher tiers: the signal the quality experts learn
    _, result, _ = demo
    sharp = result.results["oracle"]["sharpness"]["real"]
    values = [sharp[str(q)] for q in range(4)]
    assert all(b > a for a, b in zip(values, values[1:])), values


@pytest.mark.slow
def test_demo_generated_images_get_sharper_with_every_quality_tier(demo):
    # same prompts and seeds at every tier: the quality tier alone makes the images sharper
    _, result, _ = demo
    sharp = result.results["oracle"]["sharpness"]["generated"]
    values = [sharp[str(q)] for q in range(4)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[3] - values[0] >= SHARPNESS_SPAN_MIN, values


@pytest.mark.slow
def test_demo_style_routing_is_well_above_chance_after_phase_2(demo):
    _, result, _ = demo
    routing = result.results["demo"]["routing_by_phase"]
    assert routing["phase 2"]["style"]["accuracy_mean"] >= STYLE_ROUTING_MIN
    assert routing["phase 2"]["style"]["chance"] == 1 / 8


@pytest.mark.slow
def test_demo_reports_every_claim_with_numbers_and_passes(demo):
    _, result, _ = demo
    assert len(result.checks) == 3
    assert all(c["value"] is not None and c["passed"] for c in result.checks), result.checks
    assert result.passed


@pytest.mark.slow
def test_demo_trains_the_presets_fixed_steps(demo):
    a, result, _ = demo
    preset = load_config("tiny").train
    assert result.results["demo"]["steps"] == [preset.phase(p).steps for p in (1, 2, 3)]
    for p in (1, 2, 3):
        log = [json.loads(line) for line in (a.out / f"phase{p}" / "metrics.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in log if "loss" in r) == preset.phase(p).steps


@pytest.mark.slow
def test_demo_composition_check_routes_over_the_samplers_timesteps(demo):
    _, result, _ = demo
    c = result.results["oracle"]["style"]["composition"]
    steps = load_config("tiny").sample.steps
    assert len(c["timesteps"]) == steps and c["timesteps"][0] == 999
    assert len(c["style_top1_per_block"]) == len(c["style_blocks"]) == 2
    assert all(0 <= e < 4 for e in c["quality_expert_per_block"])


@pytest.mark.slow
def test_demo_every_filter_stage_removes_something(demo):
    a, _, _ = demo
    stages = json.loads((a.out / "prepared" / "stages.json").read_text())
    assert len(stages) >= 6 and all(s["removed"] > 0 for s in stages)
    for before, after in zip(stages, stages[1:]):
        assert before["out"] == after["in"]


@pytest.mark.slow
def test_demo_writes_a_report_with_every_section(demo):
    a, _, _ = demo
    html = (a.out / "report.html").read_text()
    for anchor in ("overview", "data", "routing-phases", "style"):
        assert f'id="{anchor}"' in html
    assert (a.out / "eval.json").is_file()


@pytest.mark.slow
def test_demo_second_run_reuses_finished_stages(demo):
    from vampdiffusion.demo import demo_config
    a, _, _ = demo
    t0 = time.time()
    data_stages(a, demo_config(a), {})
    assert time.time() - t0 < 5
    for p in (1, 2, 3):
        assert (a.out / f"phase{p}" / ".done.json").is_file()
    assert not stage_done(a.out / "synth", {"n": a.n + 1, "size": a.size, "seed": a.seed})


# ----------------------------------------------------------------------------
# Fixed work: the same numbers on a busy machine (a small run, not the claims)
# ----------------------------------------------------------------------------

SMALL = ["train.phase1.steps=6", "train.phase1.warmup_steps=2", "train.phase2.steps=3", "train.phase2.warmup_steps=1",
         "train.phase3.steps=3", "train.phase3.warmup_steps=1", "train.phase3.curate_top_k=100", "train.ckpt_every=3",
         "train.ema_every=3", "train.sample_every=0", "sample.steps=4", "eval.style_samples=1"]


def without_times(d):
    """d without its wall-clock entries (`seconds`, `timings`) at any depth."""
    if isinstance(d, dict):
        return {k: without_times(v) for k, v in d.items() if k not in ("seconds", "timings")}
    return [without_times(v) for v in d] if isinstance(d, list) else d


def numbers(result) -> dict:
    """What a demo measured, without the wall-clock times and the run's own paths."""
    return without_times({k: v for k, v in result.results.items() if k not in ("model", "data", "logs")})


def test_demo_gives_the_same_numbers_when_another_process_loads_the_cpu(tmp_path, taesdxl_path):
    idle = run_demo(DemoArgs(out=tmp_path / "idle", n=300, seed=3, vae_path=str(taesdxl_path)), SMALL)
    burn = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = run_demo(DemoArgs(out=tmp_path / "busy", n=300, seed=3, vae_path=str(taesdxl_path)), SMALL)
    finally:
        burn.kill()
    assert numbers(idle)["demo"]["checks"] and numbers(busy) == numbers(idle)
    assert busy.results["demo"]["steps"] == [6, 3, 3]


def test_small_preset_keeps_v1s_experts_in_whole_periods_of_the_block_pattern_at_256_px():
    from vampdiffusion.demo import demo_config
    cfg, v1 = demo_config(DemoArgs(config="small", size=256)), load_config("v1")
    assert (cfg.model.hidden_size, cfg.model.depth, cfg.latents.resolution) == (384, 12, 256)
    assert cfg.model.depth % 4 == 0          # dense, style MoE, dense, quality MoE
    for key in ("num_style_experts", "style_top_k", "num_quality_experts", "patch_size", "style_routing"):
        assert getattr(cfg.model, key) == getattr(v1.model, key), key
    assert cfg.latents.resolution // 8 // cfg.model.patch_size <= cfg.model.max_grid   # 16x16 tokens fit



def phase1_inputs(a, overrides=(), upstream="abc"):
    from vampdiffusion.demo import demo_config, phase_stage_inputs
    return phase_stage_inputs(demo_config(a, list(overrides)), 1, upstream)


def test_demo_resumes_only_a_phase_started_with_the_same_inputs(tmp_path):
    from vampdiffusion.demo import refuse_other_inputs
    a, folder = DemoArgs(out=tmp_path), tmp_path / "phase1"
    refuse_other_inputs(folder, phase1_inputs(a, ["train.phase1.steps=300"]), [folder])   # first start: recorded
    assert json.loads((folder / ".inputs.json").read_text())["config"]["train"]["phase1"]["steps"] == 300
    refuse_other_inputs(folder, phase1_inputs(a, ["train.phase1.steps=300"]), [folder])   # interrupted: resumes
    with pytest.raises(ValueError) as e:
        refuse_other_inputs(folder, phase1_inputs(a), [folder, tmp_path / "phase2"])
    steps = load_config("tiny").train.phase1.steps
    message = str(e.value)
    assert f"config.train.phase1.steps 300 -> {steps}" in message and "new --out" in message
    assert str(tmp_path / "phase2") in message and "\n" not in message
    assert json.loads((folder / ".inputs.json").read_text())["config"]["train"]["phase1"]["steps"] == 300  # kept


def test_demo_phase_inputs_leave_out_what_does_not_train_the_phase(tmp_path):
    a = DemoArgs(out=tmp_path)
    later = ["train.phase2.lambda_spec=0", "eval.n_per_tier=16", "sample.steps=8"]
    assert phase1_inputs(a, later) == phase1_inputs(a)
    assert phase1_inputs(a, ["model.style_ffn=dense"]) != phase1_inputs(a)


def test_demo_refuses_a_phase_of_other_data_or_one_it_did_not_start(tmp_path):
    from vampdiffusion.demo import demo_config, refuse_other_inputs, train_stages
    from vampdiffusion.training import checkpoint as ckpt
    a = DemoArgs(out=tmp_path)
    latents = tmp_path / "latents"
    latents.mkdir()
    (latents / ".done.json").write_text('{"latents": "new"}')
    refuse_other_inputs(tmp_path / "phase1", phase1_inputs(a, upstream="old"), [])
    with pytest.raises(ValueError, match="upstream"):
        train_stages(a, demo_config(a), latents, {})
    ckpt.save_checkpoint(tmp_path / "other", 250, {"step": 250}, keep_last=2)   # e.g. a `vamp train` run
    with pytest.raises(ValueError, match="did not start"):
        refuse_other_inputs(tmp_path / "other", phase1_inputs(a), [tmp_path / "other"])


def test_demo_refuses_a_missing_vae_before_any_stage_runs(tmp_path):
    from vampdiffusion.cli import main
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--vae-path", str(tmp_path / "nonexistent")]) == 2
    assert not out.exists()                                  # no stage ran, nothing written
    assert main(["demo", "--out", str(out), "--set", "model.depht=3"]) == 2
    assert not out.exists()
