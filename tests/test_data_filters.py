import numpy as np

from vampdiffusion.data.filters import (SKIPPED, StageTable, keep_aesthetic, keep_resolution, keep_score,
                                        keep_tag_density)


def test_resolution_needs_both_min_side_and_min_pixels():
    w, h = np.array([512, 768, 400, 2000]), np.array([1200, 768, 2000, 512])
    assert keep_resolution(w, h, 512, 768 * 768).tolist() == [True, True, False, True]
    assert keep_resolution(np.array([512]), np.array([600]), 512, 768 * 768).tolist() == [False]


def test_score_stage_keeps_score_tag_three_and_up():
    assert keep_score(np.array([0, 2, 3, 9]), 3).tolist() == [False, False, True, True]


def test_aesthetic_stage_passes_rows_without_a_value():
    assert keep_aesthetic(np.array([4.4, 4.5, np.nan, 7.0]), 4.5).tolist() == [False, True, True, True]


def test_tag_density_counts_general_tags():
    assert keep_tag_density(np.array([9, 10, 30]), 10).tolist() == [False, True, True]


def test_stage_table_rows_chain_and_skipped_is_shown():
    t = StageTable()
    a = np.array([True] * 10)
    b = a.copy(); b[:3] = False
    t.add("1 resolution", a, b)
    t.add("3 aesthetic", b, b, status=SKIPPED, note="SKIPPED: no column")
    rows = t.as_list()
    assert rows[0]["in"] == 10 and rows[0]["out"] == 7 and rows[0]["removed"] == 3 and rows[0]["pct_removed"] == 30.0
    assert rows[1]["in"] == rows[0]["out"] and rows[1]["status"] == "SKIPPED"
    assert "SKIPPED" in t.format().splitlines()[-1]
