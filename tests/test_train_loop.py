"""The training loop end to end on a tiny model and a tiny latent dataset (CPU, fp32)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train_support import tiny_config, write_latent_dataset

from vampdiffusion.models.dit import VampDiT
from vampdiffusion.models.moe import is_expert_or_router
from vampdiffusion.training import checkpoint as ckpt
from vampdiffusion.training import train as T
from vampdiffusion.training.signals import EXIT_PREEMPTED


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors: threading only adds overhead on a shared 2-core machine


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_latent_dataset(tmp_path_factory.mktemp("latents"))


@pytest.fixture(scope="module")
def phase1_run(data, tmp_path_factory) -> Path:
    torch.set_num_threads(1)  # module fixtures run before the function-scoped one below
    run = tmp_path_factory.mktemp("p1")
    assert T.train(tiny_config(), 1, data, run) == 0
    return run


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_phase1_writes_checkpoints_metrics_and_model_folder(phase1_run):
    assert [s for s, _ in ckpt.list_checkpoints(phase1_run)] == [12, 10]          # keep_last = 2
    rows = [r for r in metrics(phase1_run) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ("loss", "lr", "images_per_s", "grad_norm/router", "grad_norm/backbone",
                "routing/style_block1_entropy", "routing/quality_block3_f0"):
        assert key in rows[-1], key
    assert sum(rows[-1][f"routing/style_block1_f{i}"] for i in range(8)) == pytest.approx(1.0)
    folder = phase1_run / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors",
                                                        "model_live.safetensors", "vocab.json"]
    cfg = json.loads((folder / "config.json").read_text())
    assert set(cfg) >= {"model", "diffusion", "sample", "latents", "train"}
    assert cfg["model"]["vocab_size"] == 14                                        # from the data's vocab.json
    assert (phase1_run / "config.yaml").is_file() and (phase1_run / "tb").is_dir()


def test_exported_model_holds_the_ema_weights(phase1_run):
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(phase1_run)[0][1])
    model = VampDiT.from_pretrained(phase1_run / "model")
    for name, tensor in state["ema"]["shadow"].items():
        assert torch.equal(model.state_dict()[name], tensor), name
    live = load_file(str(phase1_run / "model" / "model_live.safetensors"))
    for name, tensor in state["model"].items():
        assert torch.equal(live[name], tensor), name
    assert not torch.equal(live["final_layer.linear.weight"], model.final_layer.linear.weight)


def test_phase2_changes_only_experts_and_routers(phase1_run, data, tmp_path):
    start = load_file(str(phase1_run / "model" / "model_live.safetensors"))
    run = tmp_path / "p2"
    assert T.train(tiny_config(), 2, data, run, init_from=str(phase1_run)) == 0
    end = load_file(str(run / "model" / "model_live.safetensors"))
    frozen = [k for k in start if not is_expert_or_router(k)]
    trained = [k for k in start if is_expert_or_router(k)]
    assert len(frozen) > 20 and len(trained) > 4
    for k in frozen:
        assert torch.equal(start[k], end[k]), f"frozen tensor {k} changed in phase 2"
    assert sum(not torch.equal(start[k], end[k]) for k in trained) >= len(trained) // 2
    rows = [r for r in metrics(run) if "loss" in r]
    assert rows[-1]["grad_norm/backbone"] == 0.0 and rows[-1]["grad_norm/router"] > 0


def test_phase3_starts_fresh_optimizer_on_curated_subset(phase1_run, data, tmp_path):
    run = tmp_path / "p3"
    assert T.train(tiny_config(), 3, data, run, init_from=str(phase1_run / "model")) == 0
    assert "24 of 48 training rows" in (run / "train.log").read_text()
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(run)[0][1])
    assert state["progress"]["step"] == 4 and state["optimizer"]["state"][0]["step"] == 4


def test_existing_run_without_resume_is_an_error(phase1_run, data):
    with pytest.raises(ValueError, match="--resume"):
        T.train(tiny_config(), 1, data, phase1_run)


def test_init_from_another_architecture_lists_the_keys(phase1_run, data, tmp_path):
    with pytest.raises(ValueError) as e:
        T.train(tiny_config("model.depth=6"), 1, data, tmp_path / "x", init_from=str(phase1_run))
    assert "missing in the checkpoint" in str(e.value) and "blocks.5." in str(e.value)


@pytest.mark.parametrize("damage, message", [
    ("junk.pt", r"junk.pt is not a readable training checkpoint \(.*pass the previous phase's run folder"),
    ("wrong.pt", r"wrong.pt lacks required key\(s\) model: not a training checkpoint"),
    ("model_live.safetensors", r"model_live.safetensors is not a complete safetensors file"),
])
def test_init_from_damaged_weights_is_one_clear_error(phase1_run, data, tmp_path, damage, message):
    bad = tmp_path / "bad" / damage
    bad.parent.mkdir()
    if damage == "junk.pt":
        bad.write_bytes(b"junk\n")
    elif damage == "wrong.pt":
        torch.save({"a": 1}, bad)
    else:
        bad.write_bytes((phase1_run / "model" / damage).read_bytes()[:1000])
    with pytest.raises(ValueError, match=message):
        T.train(tiny_config(), 2, data, tmp_path / "x", init_from=str(bad))


def test_sigterm_checkpoints_and_resume_finishes(data, tmp_path, monkeypatch):
    real = T.training_loss
    calls = {"n": 0}

    def loss_then_sigterm(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # inside optimizer step 4 (2 micro-batches per step)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "training_loss", loss_then_sigterm)
    run = tmp_path / "run"
    assert T.train(tiny_config("train.ckpt_every=100"), 1, data, run) == EXIT_PREEMPTED == 75   # not "finished"
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [4]
    monkeypatch.setattr(T, "training_loss", real)
    assert T.train(tiny_config("train.ckpt_every=100"), 1, data, run, resume=True) == 0
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [12, 4]


def test_nonfinite_steps_are_skipped_then_stop(data, tmp_path, monkeypatch):
    real = T.training_loss
    calls = {"n": 0}

    def nan_on_some_calls(*args, **kwargs):
        calls["n"] += 1
        loss, m = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] in (3, 4) or calls["n"] > 10 else loss), m

    monkeypatch.setattr(T, "training_loss", nan_on_some_calls)
    run = tmp_path / "nan"
    assert T.train(tiny_config("train.max_nonfinite=3"), 1, data, run) == 1
    assert "3 non-finite steps in a row" in (run / "train.log").read_text()
    rows = [r for r in metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]       # step 2's first try was skipped, not counted
    assert rows[-1]["nonfinite_total"] == 1

