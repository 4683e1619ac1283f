"""`vamp demo` end to end on the embedded default (slow: the whole pipeline, ≈ 12 min on 2 cores)."""

import json
import time

import pytest

from vampdiffusion.demo import DemoArgs, demo_config, run_demo, run_encode, run_prepare, run_synth, stage_done


@pytest.fixture(scope="module")
def demo(tmp_path_factory, taesdxl_path):
    out = tmp_path_factory.mktemp("demo")
    a = DemoArgs(out=out, vae_path=str(taesdxl_path))
    t0 = time.time()
    results = run_demo(a)
    return a, results, time.time() - t0


@pytest.mark.slow
def test_demo_learns_colour_from_the_tags_well_above_chance(demo):
    # The target is >= 80 %; the default demo measured 69-72 % in four CI runs before per-channel latent
    # normalisation, 72.1 / 69.2 % (CI) and 78.6 / 75.4 % (standalone) with it; the sampling seeds alone move it by
    # several points (issue 7 stays open until the target is met robustly). What is asserted here is learning:
    # three times the 1/6 chance level.
    _, results, _ = demo
    colour = results["oracle"]["attributes"]["colour"]
    assert colour["chance"] <= 1 / 6
    assert colour["accuracy"] >= 3 * colour["chance"]


@pytest.mark.slow
def test_demo_data_sharpness_rises_with_quality_tier(demo):
    # the held-out data itself (decoded latents) is sharper at higher tiers: the signal the quality
    # experts are meant to learn is there
    _, results, _ = demo
    sharp = results["oracle"]["sharpness"]["real"]
    values = [sharp[str(q)] for q in range(4)]
    assert all(b > a for a, b in zip(values, values[1:])), values


@pytest.mark.slow
def test_demo_generated_images_are_sharper_at_the_top_tier(demo):
    # same prompts and seeds at every tier: the quality tier alone makes the images sharper. Measured
    # 0.349 / 0.372 / 0.430 / 0.466 for tiers 0..3 (docs/benchmarks.md "demo"); the report's check asks for
    # the full ordering, this test for a clear top-vs-bottom gap
    _, results, _ = demo
    sharp = results["oracle"]["sharpness"]["generated"]
    assert sharp["3"] - sharp["0"] >= 0.05, sharp


@pytest.mark.slow
def test_demo_reports_every_learning_check_with_numbers(demo):
    _, results, _ = demo
    checks = results["demo"]["checks"]
    assert len(checks) == 3
    assert all(c["value"] is not None and "passed" in c for c in checks)


@pytest.mark.slow
def test_demo_style_routing_is_well_above_chance_after_phase_2(demo):
    _, results, _ = demo
    routing = results["demo"]["routing_by_phase"]
    assert routing["phase 2"]["style"]["accuracy_mean"] >= 3 / 8
    assert routing["phase 2"]["style"]["chance"] == 1 / 8


@pytest.mark.slow
def test_demo_every_filter_stage_removes_something(demo):
    a, _, _ = demo
    stages = json.loads((a.out / "prepared" / "stages.json").read_text())
    assert len(stages) >= 6 and all(s["removed"] > 0 for s in stages)
    for before, after in zip(stages, stages[1:]):
        assert before["out"] == after["in"]


@pytest.mark.slow
def test_demo_writes_a_report_with_every_section(demo):
    a, results, _ = demo
    html = (a.out / "report.html").read_text()
    for anchor in ("overview", "data", "routing-phases", "composition"):
        assert f'id="{anchor}"' in html
    assert (a.out / "eval.json").is_file()


@pytest.mark.slow
def test_demo_finishes_within_15_minutes(demo):
    _, _, seconds = demo
    assert seconds <= 15 * 60


@pytest.mark.slow
def test_demo_second_run_reuses_finished_stages(demo):
    a, _, _ = demo
    cfg = demo_config(a, [])
    t0 = time.time()
    run_synth(a, a.out / "synth")
    run_prepare(cfg, a.out / "synth", a.out / "prepared")
    run_encode(cfg, a.out / "prepared", a.out / "latents")
    assert time.time() - t0 < 5
    for p in (1, 2, 3):
        assert (a.out / f"phase{p}" / ".done.json").is_file()
    assert not stage_done(a.out / "synth", {"n": a.n + 1, "size": a.size, "seed": a.seed})


@pytest.mark.slow
def test_demo_phases_2_and_3_are_resized_from_phase_1s_speed(demo):
    _, results, _ = demo
    plan = results["demo"]["plan"]
    assert plan["phase1_step_seconds"] > 0
    timings = results["demo"]["timings"]
    train = sum(v for k, v in timings.items() if "train phase" in k)
    assert train <= 11 * 60 * 1.15, timings           # the default --minutes 11, re-planned after phase 1


@pytest.mark.parametrize("seconds, expected", [(0.30, [1600, 200, 200]), (0.25, [1600, 400, 400]),
                                               (0.45, [1600, 100, 100])])  # slower than planned: the minimum
def test_replan_after_phase1_fills_what_is_left_of_the_budget(tmp_path, seconds, expected):
    from vampdiffusion.demo import replan_after_phase1
    a = DemoArgs(out=tmp_path, minutes=10, phase_shares=(0.8, 0.1, 0.1))
    plan = replan_after_phase1(a, {"key": {}, "step_seconds": 0.3, "steps": [1600, 200, 200]}, seconds, tmp_path)
    assert plan["steps"] == expected and plan["phase1_step_seconds"] == seconds
    assert json.loads((tmp_path / "training_plan.json").read_text()) == plan


def test_steps_trained_count_from_the_newest_valid_checkpoint(tmp_path):
    from vampdiffusion.demo import resume_start_step
    from vampdiffusion.training.checkpoint import save_checkpoint
    assert resume_start_step(tmp_path) == 0                               # nothing saved: from the start
    save_checkpoint(tmp_path, 50, {"x": 1}, keep_last=5)
    newest = save_checkpoint(tmp_path, 100, {"x": 2}, keep_last=5)
    assert resume_start_step(tmp_path) == 100
    newest.write_bytes(newest.read_bytes()[:-3])                         # truncated: the resume falls back to 50
    assert resume_start_step(tmp_path) == 50
