"""The style mixer (a forced pair of style experts with weights, at the MoE and through generation), the
negative prompt in CFG's unconditional branch, and the quality-word table."""
import logging

import numpy as np
import pytest
import torch

from test_generate_support import write_tiny_model
from vampdiffusion.diffusion.guidance import guided_predictor
from vampdiffusion.generation import generate as G
from vampdiffusion.generation.prompts import QUALITY_WORDS, mix_weights, parse_style, split_quality
from vampdiffusion.models.moe import ExpertFFNs, experts_loop, run_experts, style_routing


def logits(B=4, E=8, seed=0):
    return torch.randn(B, E, generator=torch.Generator().manual_seed(seed))


# -- the MoE: out = w_a E_a(x) + w_b E_b(x) ------------------------------------------------------------------

def test_a_forced_pair_gives_the_weighted_sum_of_the_two_experts():
    torch.manual_seed(0)
    ffn = ExpertFFNs(8, 16, 32)
    ffn.reset_parameters()
    with torch.no_grad():
        ffn.b1.normal_(0, 0.1)
        ffn.b2.normal_(0, 0.1)
    x = torch.randn(3, 5, 16)
    weights = torch.zeros(3, 8)
    weights[:, 2], weights[:, 5] = 0.7, 0.3
    weights[2] = 0                                                    # image 2: routed
    p, experts, gates = style_routing(logits(3), 2, weights)
    one = lambda e: experts_loop(ffn, x, torch.full((3, 1), e), torch.ones(3, 1))
    expected = 0.7 * one(2) + 0.3 * one(5)
    for dispatch in ("loop", "grouped"):
        out = run_experts(ffn, dispatch, x, experts, gates)
        assert torch.allclose(out[:2], expected[:2], atol=1e-6)
    routed = style_routing(logits(3), 2)
    assert torch.equal(experts[2], routed[1][2]) and torch.equal(gates[2], routed[2][2])


def test_a_single_forced_expert_as_weights_is_todays_override_exactly():
    lg = logits(6)
    dense = torch.zeros(6, 8)
    dense[torch.arange(6), torch.tensor([5, 0, 7, 1, 1, 3])] = 1.0
    dense[4] = 0                                                      # routed, as -1 is
    by_index = style_routing(lg, 2, torch.tensor([5, 0, 7, 1, -1, 3]))
    by_weights = style_routing(lg, 2, dense)
    for a, b in zip(by_index, by_weights):
        assert torch.equal(a, b)
    assert by_weights[1][0].tolist()[0] == 5 and by_weights[2][0].tolist() == [1.0, 0.0]


def test_the_heavier_expert_takes_slot_0_whatever_the_expert_numbers():
    w = torch.zeros(1, 8)
    w[0, 1], w[0, 6] = 0.25, 0.75
    _, experts, gates = style_routing(logits(1), 2, w)
    assert experts.tolist() == [[6, 1]] and gates.tolist() == [[0.75, 0.25]]


# -- through the model and generation -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gen(tmp_path_factory, taesdxl_path):
    return G.load_generator(write_tiny_model(tmp_path_factory.mktemp("model"), taesdxl_path), device="cpu")


def test_style_mixes_parse_and_normalise():
    assert parse_style("2:0.7 5:0.3") == parse_style("2:0.7, 5:0.3") == parse_style({2: 0.7, 5: 0.3}) == {2: 0.7, 5: 0.3}
    assert parse_style(4) == parse_style("4") == {4: 1.0} and parse_style("auto") is None
    assert mix_weights({5: 1, 2: 3}) == {2: 0.75, 5: 0.25}
    with pytest.raises(ValueError, match="EXPERT:WEIGHT"):
        parse_style("gothic")


@pytest.mark.parametrize("style,message", [("2:0.5 5:0.3 6:0.2", "mixes 3 experts, but this model's style blocks run 2"),
                                           ("2:0", "weight must be a number > 0"), ("9:1", "style must be 0..7")])
def test_bad_mixes_are_refused_before_sampling(gen, style, message):
    with pytest.raises(ValueError, match=message):
        G.generate(gen, "1girl", style=style, steps=1, size=(32, 32))


def test_expert_routing_reports_the_forced_pair_in_every_style_block(gen):
    routed = G.expert_routing(gen, "1girl, solo", steps=3)
    mixed = G.expert_routing(gen, "1girl, solo", style="2:0.7 5:0.3", steps=3)
    for block in range(len(mixed["style_blocks"])):
        assert mixed["style_top2_per_block"][block] == [2, 5]
        gate = mixed["style_gate_per_block"][block]
        assert gate[2] == pytest.approx(0.7) and gate[5] == pytest.approx(0.3) and sum(gate) == pytest.approx(1)
    assert routed["style_top2_per_block"] != mixed["style_top2_per_block"]
    assert mixed["negative"]["style_top2_per_block"] == mixed["style_top2_per_block"]  # both CFG branches


def test_a_mix_changes_the_image_and_is_not_either_expert_alone(gen):
    kw = dict(steps=1, cfg_scale=1.0, size=(32, 32), seed=4)
    images = {s: np.asarray(G.generate(gen, "1girl, solo", style=s, **kw)[0], dtype=int)
              for s in (None, 2, 5, "2:0.5 5:0.5")}
    assert np.abs(images["2:0.5 5:0.5"] - images[2]).mean() > 0.2
    assert np.abs(images["2:0.5 5:0.5"] - images[5]).mean() > 0.2
    assert np.abs(images["2:0.5 5:0.5"] - images[None]).mean() > 0.2


# -- the negative prompt ----------------------------------------------------------------------------------------

def test_the_negative_prompt_replaces_the_empty_tags_in_the_unconditional_branch(gen):
    seen = []
    model = gen.model

    class Spy(torch.nn.Module):
        def forward(self, x, t, tags, quality, style_override=None):
            seen.append(tags.clone())
            return model(x, t, tags, quality, style_override)

    tags = torch.tensor([gen.vocab.pad(gen.vocab.encode(["1girl"]), 8)])
    negative = torch.tensor([gen.vocab.pad(gen.vocab.encode(["gothic", "dark"]), 8)])
    predict = guided_predictor(Spy(), tags, torch.tensor([3]), 5.0, 0.0, negative_tag_ids=negative)
    predict(torch.randn(1, 4, 4, 4), torch.tensor([500]))
    assert torch.equal(seen[0], torch.cat([negative, tags]))          # uncond first, one batched pass


def test_a_negative_prompt_changes_the_image_and_routing(gen):
    kw = dict(steps=2, cfg_scale=5.0, size=(32, 32), seed=2)
    plain = np.asarray(G.generate(gen, "1girl, solo", **kw)[0], dtype=int)
    negative = G.generate(gen, "1girl, solo", negative="gothic, dark", **kw)[0]
    assert np.abs(plain - np.asarray(negative, dtype=int)).mean() > 0.5
    assert G.parse_parameters(negative.info["parameters"])["Negative prompt"] == "gothic, dark"
    r_plain = G.expert_routing(gen, "1girl, solo", steps=2)["negative"]
    r_neg = G.expert_routing(gen, "1girl, solo", negative="gothic, dark", steps=2)["negative"]
    assert r_neg["prompt"] == "gothic, dark"
    assert np.abs(np.subtract(r_neg["style_probs_mean"], r_plain["style_probs_mean"])).max() > 1e-3
    assert G.expert_routing(gen, "1girl", steps=2, cfg_scale=1.0)["negative"] is None


# -- quality words ------------------------------------------------------------------------------------------------

def test_quality_words_set_tiers_and_leave_the_tags():
    assert split_quality("masterpiece, 1girl, Best Quality, solo") == (["1girl", "solo"], 3)
    assert split_quality("normal quality, high_quality") == ([], 2)                   # the highest named
    assert split_quality("worst quality, normal quality", lowest=True) == ([], 0)     # a negative: the lowest
    assert split_quality("lowres, 1girl") == (["lowres", "1girl"], None)              # a Danbooru tag, kept
    assert {QUALITY_WORDS[w] for w in ("masterpiece", "best_quality", "amazing_quality")} == {3}
    assert {QUALITY_WORDS[w] for w in ("low_quality", "bad_quality", "worst_quality")} == {0}


def test_quality_words_are_not_tokens_and_set_the_request_tiers(gen, caplog):
    assert G.tokenize(gen, "masterpiece, 1girl, good quality") == G.tokenize(gen, "1girl")
    req = G.with_defaults(G.Request("low quality, 1girl", negative="worst quality, gothic"), gen.cfg)
    assert (req.quality, req.negative_quality) == (0, 0)
    with caplog.at_level(logging.WARNING, logger="vampdiffusion.generate"):
        assert G.with_defaults(G.Request("masterpiece, 1girl", quality=1), gen.cfg).quality == 1
    assert "masterpiece names tier 3, but the quality tier was given as 1; using 1" in caplog.text
    image = G.generate(gen, "masterpiece, 1girl", steps=1, size=(32, 32))[0]
    assert G.parse_parameters(image.info["parameters"])["Quality tier"] == "3"
    assert G.expert_routing(gen, "low quality, 1girl", steps=2)["quality"] == 0
