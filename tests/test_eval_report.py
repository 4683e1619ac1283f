import re

from PIL import Image

from vampdiffusion.evaluation import report as R
from vampdiffusion.training.metrics import read_metrics_log


def test_report_is_self_contained_with_all_sections(tmp_path):
    img = Image.new("RGB", (16, 16), (200, 30, 30))
    sections = [
        R.Section("Stage table", R.table(("stage", "in", "out"), [("1 resolution", 100, 90), ("2 score", 90, 60)])),
        R.Section("Samples", R.image_grid([[img, img], [img, None]], ["tier 0", "tier 3"], ["a", "b"])),
        R.Section("Routing", R.heatmap([[0.9, 0.1], [0.2, 0.8]], ["gothic", "pastel"], ["E0", "E1"], "label x expert")),
        R.Section("Curves", R.line_chart({"loss": [(0, 1.0), (10, 0.5), (20, 0.25)]}, "loss", log_y=True)),
    ]
    path = R.write_report(tmp_path / "report.html", "demo <report>", sections)
    html = path.read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html) == ["Stage table", "Samples", "Routing", "Curves"]
    assert "demo &lt;report&gt;" in html                          # titles are escaped
    assert html.count("data:image/png;base64,") == 3                # one inline PNG per non-empty cell
    assert html.count("<svg") == 2
    assert not re.search(r"(src|href)=['\"](https?:|//|[^#d'\"])", html)  # no external assets, only anchors and data URIs
    assert "<td>90</td>" in html and "0.90" in html


def test_line_chart_drops_non_finite_points_and_reports_empty():
    svg = R.line_chart({"loss": [(0, 1.0), (1, float("nan")), (2, None), (3, 0.5)]})
    assert svg.count("<polyline") == 1 and len(re.search(r'points="([^"]*)"', svg).group(1).split()) == 2
    assert "no data" in R.line_chart({"loss": [(0, float("inf"))]}, "loss")


def test_metrics_log_skips_malformed_lines_and_lays_runs_end_to_end(tmp_path):
    p1, p2 = tmp_path / "p1.jsonl", tmp_path / "p2.jsonl"
    p1.write_text('{"step": 25, "loss": 1.0}\n{"step": 50, "loss": 0.5}\nnot json\n{"event": "x"}\n')
    p2.write_text('{"step": 25, "loss": 0.4}\n{"step": 50, "event": "collapse", "message": "m"}\n')
    rows1, bad1 = read_metrics_log(p1)
    rows2, bad2 = read_metrics_log(p2)
    assert (len(rows1), bad1, len(rows2), bad2) == (2, 2, 2, 0)
    series = R.loss_series({"phase1": rows1, "phase2": rows2})
    assert series["phase1 loss"] == [(25, 1.0), (50, 0.5)]
    assert series["phase2 loss"] == [(75, 0.4)]


def test_compose_grid_size_and_blank_cells():
    a = Image.new("RGB", (8, 8), (255, 0, 0))
    g = R.compose_grid([[a, a, a], [a]], scale=2)
    assert g.size == (3 * 16 + 2 * R.GRID_PAD, 2 * 16 + R.GRID_PAD)
    assert g.getpixel((g.size[0] - 1, g.size[1] - 1)) == (235, 235, 235)
