"""benchmarks/ablations.py without training: the seed summaries, the side-by-side table, and the phase-1 link
a variant that differs from the default only after phase 1 takes."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ablations(monkeypatch):
    spec = importlib.util.spec_from_file_location("ablations", REPO / "benchmarks" / "ablations.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def row(ablations, seed: int, value: float, rises: bool) -> dict:
    r = {k: value for k in ablations.SCALARS} | {"seed": seed, "sharpness_rises_with_tier": rises}
    r["sharpness"] = {q: value + int(q) / 10 for q in ablations.TIERS}
    return r


def test_summary_gives_mean_min_max_over_the_seeds_that_have_the_value(ablations):
    rows = [row(ablations, 0, 0.2, True), row(ablations, 1, 0.4, True), row(ablations, 2, 0.6, False)]
    rows[2]["steering_lift"] = None                      # a model without the quantity
    s = ablations.summary(rows)
    assert s["colour_accuracy"] == pytest.approx({"mean": 0.4, "min": 0.2, "max": 0.6, "n": 3})
    assert s["steering_lift"] == pytest.approx({"mean": 0.3, "min": 0.2, "max": 0.4, "n": 2})
    assert s["sharpness"]["3"]["max"] == pytest.approx(0.9)


def fake_eval_json(path: Path) -> str:
    routing = {"style": {"label_expert": [[0.0, 1.0], [1.0, 0.0]]}, "quality": {"label_expert": [[0.5, 0.5], [0.5, 0.5]]}}
    path.write_text(json.dumps({"routing": routing, "demo": {"routing_by_phase": {"phase 2": routing}}}))
    return str(path)


def test_matched_accuracy_reads_a_permuted_router_as_consistent(ablations):
    permuted = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]             # every label on one expert, not its own index
    assert ablations.matched_accuracy(permuted) == pytest.approx(1.0)
    assert ablations.matched_accuracy([[1 / 3] * 3] * 3) == pytest.approx(1 / 3)
    assert ablations.matched_accuracy([[0.6, 0.4], [0.7, 0.3], [0, 0]]) == pytest.approx((0.7 + 0.4) / 2)  # empty label left out
    assert ablations.matched_accuracy([]) is None and ablations.matched_accuracy([[0.0, 0.0]]) is None  # no router


def test_table_puts_the_variants_side_by_side(ablations, tmp_path):
    for variant, value in (("default", 0.5), ("dense", 0.25)):
        rows = [row(ablations, s, value + s / 100, s != 1) | {"eval_json": fake_eval_json(tmp_path / f"{variant}{s}.json")}
                for s in (0, 1, 2)]
        (tmp_path / f"ablations_{variant}.json").write_text(json.dumps(
            {"variant": variant, "seeds": [0, 1, 2], "runs": rows, "summary": ablations.summary(rows)}))
    lines = ablations.markdown(tmp_path).splitlines()
    assert lines[0] == "| | default (3 seeds) | dense (3 seeds) |"
    colour = next(line for line in lines if line.startswith("| colour accuracy"))
    assert "0.510 (0.500–0.520)" in colour and "0.260 (0.250–0.270)" in colour
    assert lines[-1] == "| sharpness rises tier by tier (seeds) | 2 of 3 | 2 of 3 |"
    sharp = [line for line in lines if line.startswith("| mean sharpness, tier")]
    assert [line.split(" | ")[0] for line in sharp] == [f"| mean sharpness, tier {q}" for q in "0123"]
    assert "0.710 (0.700–0.720)" in sharp[2]                     # default, tier 2: value + 0.2 over the seeds
    matched = next(line for line in lines if line.startswith("| quality routing, best one-to-one"))
    assert matched.count("0.500 (0.500–0.500)") == 2


def test_nospec_links_the_defaults_phase_1_only_when_it_finished_with_the_same_inputs(ablations, tmp_path):
    from vampdiffusion.demo import DemoArgs, demo_config, marker_digest, phase_inputs
    a = DemoArgs(out=tmp_path / "nospec" / "seed0", seed=0)
    (a.out / "latents").mkdir(parents=True)
    (a.out / "latents" / ".done.json").write_text('{"latents": 1}')
    done = tmp_path / "default" / "seed0" / "phase1"
    ablations.link_phase1(tmp_path, "nospec", a, ["train.phase2.lambda_spec=0"])
    assert not (a.out / "phase1").exists()               # the default's phase 1 has not finished: train its own
    done.mkdir(parents=True)
    inputs = {"config": phase_inputs(demo_config(a), 1), "phase": 1, "upstream": marker_digest(a.out / "latents")}
    (done / ".done.json").write_text(json.dumps(inputs))
    ablations.link_phase1(tmp_path, "nospec", a, ["train.phase2.lambda_spec=0", "train.phase1.steps=5"])
    assert not (a.out / "phase1").exists()               # another phase 1 (e.g. a smoke run's steps)
    ablations.link_phase1(tmp_path, "dense", a, ["model.style_ffn=dense"])
    assert not (a.out / "phase1").exists()               # another model: never linked
    ablations.link_phase1(tmp_path, "nospec", a, ["train.phase2.lambda_spec=0"])
    assert (a.out / "phase1").resolve() == done.resolve()


def test_table_without_runs_is_one_line_naming_the_fix(ablations, tmp_path):
    with pytest.raises(SystemExit, match="run a --variant first"):
        ablations.markdown(tmp_path)
