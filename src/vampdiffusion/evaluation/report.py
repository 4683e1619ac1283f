"""A self-contained HTML report: one file, no external assets, readable offline and attachable anywhere.

Pictures are inline base64 PNGs, charts and heatmaps inline SVG (no plotting library). A report is
a title and a list of `Section`s; each section's body is built from the small pieces below
(`table`, `image_grid`, `heatmap`, `line_chart`, `paragraph`), so `vamp demo` adds its own sections
(stage table, composition check, …) next to the ones `vamp eval` builds.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from vampdiffusion.atomic import atomic_write_text

CHART_W, CHART_H = 640, 260          # line chart size, px
CELL = 34                            # heatmap cell size, px
GRID_PAD = 2                         # pixels between grid images
SERIES_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass
class Section:
    title: str
    body: str                         # HTML built with the functions of this module
    anchor: str = ""                  # id for the table of contents; derived from the title when empty

    def id(self) -> str:
        return self.anchor or "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


# ----------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------

def esc(x) -> str:
    return html.escape(str(x))


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def fmt(v, digits: int = 3) -> str:
    """Numbers for tables: None → '–', floats rounded, strings as they are."""
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: Sequence[str], rows: Iterable[Sequence], caption: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image(image: Image.Image, caption: str = "", width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(image)}"{w} alt="{esc(caption)}">{cap}</figure>'


def compose_grid(images: Sequence[Sequence[Image.Image | None]], scale: int = 1) -> Image.Image:
    """Rows of equally sized images → one picture (empty cells grey), each image upscaled by `scale`."""
    cells = [im for row in images for im in row if im is not None]
    if not cells:
        raise ValueError("an image grid needs at least one image")
    w, h = cells[0].size
    w, h = w * scale, h * scale
    n_rows, n_cols = len(images), max(len(r) for r in images)
    grid = Image.new("RGB", (n_cols * (w + GRID_PAD) - GRID_PAD, n_rows * (h + GRID_PAD) - GRID_PAD), (235, 235, 235))
    for r, row in enumerate(images):
        for c, im in enumerate(row):
            if im is not None:
                grid.paste(im.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (c * (w + GRID_PAD), r * (h + GRID_PAD)))
    return grid


def image_grid(images: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), caption: str = "", scale: int = 2) -> str:
    """A labelled grid of images: one inline PNG per cell (upscaled `scale`× without smoothing)."""
    head = ""
    if col_labels:
        head = "<tr><th></th>" + "".join(f"<th>{esc(c)}</th>" for c in col_labels) + "</tr>"
    body = ""
    for r, row in enumerate(images):
        label = esc(row_labels[r]) if r < len(row_labels) else ""
        cells = ""
        for im in row:
            if im is None:
                cells += "<td></td>"
                continue
            w, h = im.size
            big = im.convert("RGB").resize((w * scale, h * scale), Image.Resampling.NEAREST)
            cells += f"<td><img src='{png_data_uri(big)}' alt='{label}'></td>"
        body += f"<tr><th class='rowlabel'>{label}</th>{cells}</tr>"
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table class='grid'>{cap}{head}{body}</table>"


def _colour(v: float) -> str:
    """0 → white, 1 → deep blue."""
    v = min(max(v, 0.0), 1.0)
    r, g, b = (int(round(255 + (t - 255) * v)) for t in (31, 78, 160))
    return f"rgb({r},{g},{b})"


def heatmap(matrix: Sequence[Sequence[float]], row_labels: Sequence[str], col_labels: Sequence[str],
            title: str = "", vmax: float = 1.0) -> str:
    """Inline SVG heatmap with the value written in each cell (rows: labels, columns: experts)."""
    n_r, n_c = len(matrix), len(matrix[0]) if matrix else 0
    left, top = 150, 40
    W, H = left + n_c * CELL + 10, top + n_r * CELL + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">']
    if title:
        parts.append(f'<text x="{left}" y="14" font-weight="bold">{esc(title)}</text>')
    for c, lab in enumerate(col_labels):
        parts.append(f'<text x="{left + c * CELL + CELL / 2}" y="{top - 6}" text-anchor="middle">{esc(lab)}</text>')
    for r, row in enumerate(matrix):
        parts.append(f'<text x="{left - 6}" y="{top + r * CELL + CELL / 2 + 4}" text-anchor="end">{esc(row_labels[r])}</text>')
        for c, v in enumerate(row):
            x, y = left + c * CELL, top + r * CELL
            share = float(v) / vmax if vmax else 0.0
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{_colour(share)}" stroke="#fff"/>')
            parts.append(f'<text x="{x + CELL / 2}" y="{y + CELL / 2 + 4}" text-anchor="middle" '
                         f'fill="{"#fff" if share > 0.55 else "#222"}">{float(v):.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, Sequence[tuple[float, float]]], title: str = "", y_label: str = "",
               log_y: bool = False) -> str:
    """Inline SVG line chart of {name: [(x, y), …]}; non-finite points are dropped."""
    clean = {k: [(float(x), float(y)) for x, y in v if y is not None and math.isfinite(float(y)) and (not log_y or float(y) > 0)]
             for k, v in series.items()}
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        return paragraph(f"{title}: no data")
    tf = (lambda y: math.log10(y)) if log_y else (lambda y: y)
    xs = [x for v in clean.values() for x, _ in v]
    ys = [tf(y) for v in clean.values() for _, y in v]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    L, R, T, B = 60, 150, 24, 30
    pw, ph = CHART_W - L - R, CHART_H - T - B

    def px(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return T + ph - (tf(y) - y0) / (y1 - y0) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}" font-family="sans-serif" font-size="11">',
             f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#bbb"/>']
    if title:
        parts.append(f'<text x="{L}" y="15" font-weight="bold">{esc(title)}</text>')
    for k in range(5):  # y ticks
        v = y0 + (y1 - y0) * k / 4
        label = f"{10 ** v:.3g}" if log_y else f"{v:.3g}"
        y = T + ph - ph * k / 4
        parts.append(f'<line x1="{L}" x2="{L + pw}" y1="{y}" y2="{y}" stroke="#e4e4e4"/>'
                     f'<text x="{L - 4}" y="{y + 4}" text-anchor="end">{label}</text>')
    for k in range(5):  # x ticks
        v = x0 + (x1 - x0) * k / 4
        parts.append(f'<text x="{L + pw * k / 4}" y="{T + ph + 16}" text-anchor="middle">{v:.4g}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{T + ph / 2}" transform="rotate(-90 12 {T + ph / 2})" text-anchor="middle">{esc(y_label)}</text>')
    for i, (name, pts) in enumerate(clean.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{d}"/>')
        parts.append(f'<text x="{L + pw + 8}" y="{T + 12 + 14 * i}" fill="{colour}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------
# Training logs
# ----------------------------------------------------------------------------

def loss_series(logs: dict[str, list[dict]], keys: Sequence[str] = ("loss",)) -> dict[str, list[tuple[float, float]]]:
    """{run name: rows} → {"run/key": [(step, value)]}; runs are laid end to end by step (phase 2 after 1, …)."""
    out: dict[str, list[tuple[float, float]]] = {}
    offset = 0.0
    for run, rows in logs.items():
        last = offset
        for key in keys:
            pts = [(offset + r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                out[f"{run} {key}" if len(logs) > 1 or len(keys) > 1 else key] = pts
                last = max(last, pts[-1][0])
        offset = last
    return out


# ----------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0} th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} caption{caption-side:top;text-align:left;font-weight:bold;padding:.3em 0}
table.grid th,table.grid td{border:none;background:none;text-align:left;padding:2px 6px}
th.rowlabel{font-weight:normal;white-space:nowrap}
figure{display:inline-block;margin:.5em 1em .5em 0} figcaption{font-size:.85em;color:#555}
.skip{color:#a15c00;font-weight:bold} .alert{color:#b00020;font-weight:bold} .ok{color:#1b7a1b}
.cols{font-size:.85em;color:#555} nav a{margin-right:1em}
"""


def render_report(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    nav = "".join(f'<a href="#{s.id()}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id()}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    sub = f"<p>{esc(subtitle)}</p>" if subtitle else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{sub}<nav>{nav}</nav>{body}</body></html>\n")


def write_report(path: str | Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    return atomic_write_text(path, render_report(title, sections, subtitle))
