import numpy as np
import pytest

from vampdiffusion.config import ConfigError, load_config
from vampdiffusion.data.labels import load_style_clusters, quality_tiers, score_tags, style_label


def test_score_tag_is_the_decile_within_each_year():
    score = np.concatenate([np.arange(100), np.arange(100) * 10])  # 2015 and 2024: same ranks, 10x scores
    year = np.array([2015] * 100 + [2024] * 100)
    st = score_tags(score, year)
    assert np.bincount(st[:100], minlength=10).tolist() == [10] * 10
    assert np.array_equal(st[:100], st[100:])  # recency bias removed
    assert st[99] == 9 and st[0] == 0


def test_score_tag_gives_tied_scores_one_decile():
    st = score_tags(np.array([5] * 50 + list(range(6, 56))), np.full(100, 2020))
    assert len(set(st[:50].tolist())) == 1 and st[0] == 2  # mid-rank 25/100 -> decile 2


def test_quality_tiers_follow_the_spec_table():
    tiers = quality_tiers(np.arange(10), [3, 4, 6, 8])
    assert tiers.tolist() == [-1, -1, -1, 0, 1, 1, 2, 2, 3, 3]


def test_tier_starts_must_be_four_increasing_integers():
    with pytest.raises(ConfigError, match="4 increasing"):
        load_config("tiny", ["data.quality_tier_starts=[3, 6, 4, 8]"])


def test_packaged_style_clusters_are_the_eight_of_the_spec():
    c = load_style_clusters()
    assert [x.name for x in c] == ["dark/gothic", "soft pastel", "bold lineart", "painterly", "flat color",
                                   "realistic", "chibi", "cyberpunk"]
    assert "dark_background" in c[0].tags and "neon_lights" in c[7].tags


def test_style_label_needs_two_matches_and_breaks_ties_by_lowest_id():
    c = load_style_clusters()
    assert style_label(["gothic", "dark", "1girl"], c, 2) == 0
    assert style_label(["gothic", "chibi"], c, 2) == -1
    assert style_label(["chibi", "cute", "neon_lights", "cyberpunk"], c, 2) == 6


def test_style_clusters_file_errors_name_the_fix(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("clusters:\n  - {id: 1, name: x, tags: [a]}\n")
    with pytest.raises(ValueError, match="cluster 0 must be"):
        load_style_clusters(p)
