import math

import numpy as np
import pytest
import torch

from vampdiffusion.evaluation.routing import (
    RoutingRecord, collect_routing, label_expert_matrix, metrics_from_record, routing_accuracy, routing_frequencies,
    routing_metrics,
)
from vampdiffusion.models.moe import routing_entropy


def test_frequencies_count_every_top2_slot():
    # one block, 2 images, top-2: experts {0,1} and {0,2} -> f = [2, 1, 1, 0] / 4
    experts = np.array([[[0, 1], [0, 2]]])
    np.testing.assert_allclose(routing_frequencies(experts, 4), [[0.5, 0.25, 0.25, 0.0]])


def test_entropy_is_ln8_at_uniform_and_0_when_collapsed():
    assert float(routing_entropy(torch.full((8,), 1 / 8))) == pytest.approx(math.log(8))
    assert float(routing_entropy(torch.eye(8)[3])) == 0.0


def test_accuracy_ignores_unlabeled_images():
    top1 = np.array([[0, 1, 2, 3], [0, 0, 0, 0]])
    labels = np.array([0, 1, -1, 2])
    np.testing.assert_allclose(routing_accuracy(top1, labels), [2 / 3, 1 / 3])


def test_label_expert_rows_are_shares_of_each_label():
    top1 = np.array([[1, 1, 0, 2]])
    labels = np.array([0, 0, 1, 1])
    m = label_expert_matrix(top1, labels, 3, 3)
    np.testing.assert_allclose(m, [[0, 1, 0], [0.5, 0, 0.5], [0, 0, 0]])


def test_routing_metrics_on_perfect_and_collapsed_blocks():
    rng = np.random.default_rng(0)
    N = 400
    style = rng.integers(-1, 8, N)
    quality = rng.integers(0, 4, N)
    perfect = np.stack([np.where(style >= 0, style, 0), (np.where(style >= 0, style, 0) + 1) % 8], axis=1)
    collapsed = np.stack([np.zeros(N, int), np.ones(N, int)], axis=1)
    s_exp = np.stack([perfect, collapsed])                   # block 1 perfect, block 5 collapsed onto 0 and 1
    q_exp = np.stack([quality, (quality + 1) % 4])
    m = routing_metrics(s_exp, q_exp, style, quality, 8, 4, 0.7, (1, 5), (3, 7))
    assert m["style"]["accuracy"][0] == 1.0
    assert m["style"]["accuracy"][1] == pytest.approx((style[style >= 0] == 0).mean())
    assert m["style"]["chance"] == 0.125 and m["quality"]["chance"] == 0.25
    assert m["quality"]["accuracy"] == [1.0, 0.0] and m["quality"]["accuracy_mean"] == 0.5
    # collapsed block: f_0 = f_1 = 0.5 (two slots per image, so f_i <= 0.5 always) and entropy ln 2, but expert 0
    # is every image's first choice: the alert, defined on the top-1 share, fires for block 5 only
    assert m["style"]["entropy"][1] == pytest.approx(math.log(2))
    assert m["style"]["top1_shares"][1][0] == 1.0
    assert m["collapse_alerts"] == [{"block": 5, "expert": 0, "share": 1.0}]
    # pooled over both blocks: label 0 always lands on expert 0, other labels half the time (the perfect block)
    np.testing.assert_allclose(np.diag(m["style"]["label_expert"]), [1.0] + [0.5] * 7)


def test_collapse_alert_names_block_and_expert():
    N = 100
    s_exp = np.stack([np.stack([np.zeros(N, int), np.zeros(N, int)], axis=1)])  # degenerate: both slots expert 0
    m = routing_metrics(s_exp, np.zeros((1, N), int), np.zeros(N, int), np.zeros(N, int), 8, 4, 0.7, (5,), (3,))
    assert m["collapse_alerts"] == [{"block": 5, "expert": 0, "share": 1.0}]


def test_no_collapse_alert_while_the_top1_choice_is_spread():
    N = 100
    first = np.arange(N) % 2                                     # experts 0 and 1 first, half the images each
    s_exp = np.stack([np.stack([first, 1 - first], axis=1)])
    m = routing_metrics(s_exp, np.zeros((1, N), int), np.zeros(N, int), np.zeros(N, int), 8, 4, 0.7, (5,), (3,))
    assert m["style"]["top1_shares"][0][:2] == [0.5, 0.5] and m["collapse_alerts"] == []


def test_collect_routing_reads_moeaux_of_a_real_model():
    from vampdiffusion.config import load_config
    from vampdiffusion.models.dit import VampDiT
    cfg = load_config("tiny").model
    model = VampDiT(cfg)
    B = 6
    batches = [{"latent": torch.randn(B, 4, 8, 8), "tag_ids": torch.tensor([[2, 5, 6, 3] + [0] * 4] * B),
                "quality": torch.arange(B) % 4, "style": torch.tensor([0, 1, -1, 3, 4, 5])} for _ in range(2)]
    rec = collect_routing(model, batches, num_timesteps=1000, seed=0)
    m = metrics_from_record(rec, cfg.num_style_experts, cfg.num_quality_experts, 0.7)
    assert m["images"] == 12 and m["style_labeled_images"] == 10
    assert m["style"]["blocks"] == [1, 5] and m["quality"]["blocks"] == [3, 7]
    f = np.array(m["style"]["frequencies"])
    assert f.shape == (2, 8) and np.allclose(f.sum(axis=1), 1.0)
    assert 0.0 <= m["style"]["entropy_mean"] <= math.log(8) + 1e-9


def test_empty_record_is_a_clear_error():
    with pytest.raises(ValueError, match="no routing was recorded"):
        RoutingRecord().arrays()
