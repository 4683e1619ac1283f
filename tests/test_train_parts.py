"""Optimizer, LR schedule, EMA, checkpoints, RNG capture and the signal handler, on small stand-ins."""

import logging
import os
import random
import signal

import numpy as np
import pytest
import torch

from vampdiffusion.config import PhaseConfig, TrainConfig
from vampdiffusion.training import checkpoint as ckpt
from vampdiffusion.training.ema import EMA
from vampdiffusion.training.optim import lr_at, make_optimizer
from vampdiffusion.training.signals import StopRequest


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))


def test_weight_decay_only_on_matrices():
    net = _net()
    opt = make_optimizer(list(net.named_parameters()), TrainConfig(weight_decay=0.05), lr=1e-3)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(p.dim() for p in decay["params"]) == [2, 2]
    assert sorted(p.dim() for p in no_decay["params"]) == [1, 1, 1, 1]


def test_frozen_parameters_are_not_in_the_optimizer():
    net = _net()
    net[0].weight.requires_grad_(False)
    opt = make_optimizer(list(net.named_parameters()), TrainConfig(), lr=1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 5


def test_lr_warms_up_linearly_then_follows_cosine():
    phase = PhaseConfig(steps=110, lr=1e-3, warmup_steps=10)
    assert lr_at(0, phase) == pytest.approx(1e-4)
    assert lr_at(9, phase) == pytest.approx(1e-3)
    assert lr_at(10, phase) == pytest.approx(1e-3)
    assert lr_at(60, phase) == pytest.approx(0.5e-3)      # half-way through the cosine
    assert lr_at(110, phase) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, phase) == pytest.approx(0.0, abs=1e-12)


def test_ema_follows_the_formula():
    net = _net()
    ema = EMA(net, decay=0.9, warmup=False)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    # ema = 0.9 * w0 + 0.1 * (w0 + 1)
    assert torch.allclose(ema.shadow["0.weight"], w0 + 0.1, atol=1e-6)


def test_ema_warmup_decay_grows_to_the_configured_value():
    ema = EMA(_net(), decay=0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.num_updates += 1
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.999


def test_ema_export_is_a_full_state_with_frozen_tensors_live():
    net = _net()
    net[0].weight.requires_grad_(False)
    ema = EMA(net, decay=0.5, warmup=False)
    assert "0.weight" not in ema.names
    with torch.no_grad():
        net[2].weight.add_(2.0)
    ema.update(net)
    full = ema.full_state_dict(net)
    assert set(full) == set(net.state_dict())
    assert torch.equal(full["0.weight"], net[0].weight)
    assert torch.allclose(full["2.weight"], net[2].weight - 1.0, atol=1e-6)


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    net = _net()
    state = {"model": net.state_dict(), "step": 7, "rng": ckpt.rng_state(), "config": {"a": {"b": 1.5}}}
    path = ckpt.save_checkpoint(tmp_path, 7, state, keep_last=3)
    assert ckpt.verify_checkpoint(path) is None
    loaded, found = ckpt.load_latest_valid(tmp_path)
    assert found == path and loaded["step"] == 7 and loaded["config"] == {"a": {"b": 1.5}}
    for k, v in net.state_dict().items():
        assert torch.equal(loaded["model"][k], v)


def test_keep_last_prunes_old_checkpoints(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(tmp_path, step, {"step": step}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [40, 30]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000030.pt", "step_00000030.pt.json", "step_00000040.pt", "step_00000040.pt.json"]


def test_truncated_checkpoint_falls_back_to_previous_with_warning(tmp_path, caplog):
    ckpt.save_checkpoint(tmp_path, 10, {"step": 10, "w": torch.arange(1000.0)}, keep_last=3)
    newest = ckpt.save_checkpoint(tmp_path, 20, {"step": 20, "w": torch.arange(1000.0)}, keep_last=3)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    logger = logging.getLogger("vampdiffusion.train")  # the trainer stops propagation: listen on it directly
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="vampdiffusion.train"):
            state, path = ckpt.load_latest_valid(tmp_path)
    finally:
        logger.removeHandler(caplog.handler)
    assert state["step"] == 10
    assert "truncated" in caplog.text and "step_00000020.pt" in caplog.text


def test_checkpoint_without_sidecar_is_skipped(tmp_path):
    ckpt.save_checkpoint(tmp_path, 10, {"step": 10}, keep_last=3)
    torch.save({"step": 20}, ckpt.checkpoint_path(tmp_path, 20))  # the kill came before the sidecar
    state, _ = ckpt.load_latest_valid(tmp_path)
    assert state["step"] == 10


def test_corrupt_bytes_with_matching_size_are_detected(tmp_path):
    ckpt.save_checkpoint(tmp_path, 10, {"step": 10}, keep_last=3)
    p = ckpt.save_checkpoint(tmp_path, 20, {"step": 20, "w": torch.ones(100)}, keep_last=3)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    assert "sha256" in ckpt.verify_checkpoint(p)
    assert ckpt.load_latest_valid(tmp_path)[0]["step"] == 10


def test_no_checkpoint_gives_none(tmp_path):
    assert ckpt.load_latest_valid(tmp_path) is None


def test_architecture_mismatch_lists_the_keys():
    model = {"a.weight": torch.zeros(2, 2), "b.weight": torch.zeros(3), "c": torch.zeros(1)}
    found = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(3), "d": torch.zeros(1)}
    with pytest.raises(ValueError) as e:
        ckpt.check_architecture(model, found, "ckpt.pt")
    msg = str(e.value)
    assert "missing in the checkpoint (1): c" in msg
    assert "not in the model (1): d" in msg
    assert "shape of a.weight: checkpoint (2, 3), model (2, 2)" in msg


def test_rng_state_round_trip_restores_every_generator(tmp_path):
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    state = ckpt.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    random.seed(9); np.random.seed(9); torch.manual_seed(9)
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == expected


def test_sigterm_sets_the_stop_flag_without_exiting():
    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    finally:
        stop.uninstall()
