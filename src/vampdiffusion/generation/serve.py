"""`vamp serve`: a local web UI (gradio) over one loaded model.

The page: prompt with Danbooru tag autocomplete from the model's vocabulary (most frequent first) and
unknown tags flagged as they are typed; negative prompt; quality tier (or the quality words); the style mixer
(automatic, or up to two experts with weights, named by the style clusters); seed (fixed or random), steps,
CFG scale and rescale, sampler, a size among the model's trained buckets, batch size and count; a progress
bar while sampling; a gallery whose PNGs carry their parameters; next to it which style and quality experts
fired per block; and a PNG drop zone that loads a picture's parameters back into the form.

Everything the page does is a plain function of this module (tested without a browser); `build_ui` only
wires them to components. Generation runs in gradio's queue, one job at a time, off the request thread; an
error is shown in the page and the server keeps running.
"""

from __future__ import annotations

import html
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from vampdiffusion.data.labels import QUALITY_NAMES
from vampdiffusion.data.vocab import SPECIAL_TOKENS, normalize_tag
from vampdiffusion.diffusion.samplers import SAMPLER_NAMES
from vampdiffusion.generation.prompts import QUALITY_WORDS, quality_words_of, split_quality

log = logging.getLogger("vampdiffusion.serve")

AUTO_STYLE, NO_EXPERT = "automatic (router)", "none"
MAX_SEED = 2 ** 32 - 1          # a random seed is drawn below this, as A1111 does
SUGGESTIONS = 12                # tags offered under the prompt


# ----------------------------------------------------------------------------
# Autocomplete and the prompt check
# ----------------------------------------------------------------------------

def last_fragment(prompt: str) -> str:
    """The tag being typed: the text after the last comma, normalised (spaces or underscores)."""
    return normalize_tag(prompt.rsplit(",", 1)[-1])


def suggest_tags(vocab, prompt: str, limit: int = SUGGESTIONS) -> list[tuple[str, str]]:
    """(label, tag) for the tags that start with the fragment being typed, most frequent first (vocabulary
    ids are in frequency order), then tags that hold it elsewhere; quality words are offered too."""
    frag = last_fragment(prompt)
    if not frag:
        return []
    tags = vocab.tokens[len(SPECIAL_TOKENS):]
    counts = vocab.counts[len(SPECIAL_TOKENS):]
    prefix = [i for i, t in enumerate(tags) if t.startswith(frag)]
    inside = [i for i, t in enumerate(tags) if frag in t and not t.startswith(frag)]
    out = [(f"{tags[i]}  ({counts[i]:,})", tags[i]) for i in (prefix + inside)[:limit]]
    words = [(f"{w}  (quality {QUALITY_WORDS[w]})", w) for w in QUALITY_WORDS if w.startswith(frag)]
    return (out + words)[:limit]


def complete_prompt(prompt: str, tag: str) -> str:
    """Replace the fragment being typed by `tag` and start the next one: '1girl, lon' -> '1girl, long_hair, '."""
    if not tag:
        return prompt
    head = prompt.rsplit(",", 1)[0] + ", " if "," in prompt else ""
    return f"{head}{tag}, "


def prompt_report(vocab, prompt: str, negative: bool = False) -> str:
    """HTML under a prompt box: unknown tags (they become one [UNK]) and the tier its quality words set. The
    tag being typed is flagged only once no known tag starts with it."""
    tags, tier = split_quality(prompt, lowest=negative)
    unknown = vocab.unknown(tags)
    frag = last_fragment(prompt)
    if frag in unknown and not prompt.rstrip().endswith(",") and any(t.startswith(frag) for t in vocab.tokens):
        unknown.remove(frag)  # a tag still being typed that a known tag completes
    parts = []
    if unknown:
        parts.append('<span class="vamp-unknown">unknown tags (not in the model\'s vocabulary, they become [UNK]): '
                     + ", ".join(html.escape(t) for t in unknown) + "</span>")
    if tier is not None:
        what = "negative quality" if negative else "quality tier"
        parts.append(f'<span class="vamp-quality">{html.escape(", ".join(quality_words_of(prompt)))} → {what} '
                     f'{tier} ({QUALITY_NAMES[tier]})</span>')
    known = len(tags) - len(unknown)
    parts.append(f'<span class="vamp-known">{known} known tag{"s" if known != 1 else ""}</span>')
    return " · ".join(parts)


def quality_table_html() -> str:
    """The quality-word table, shown beside the tier control."""
    rows = {t: [w for w, tier in QUALITY_WORDS.items() if tier == t] for t in sorted(set(QUALITY_WORDS.values()), reverse=True)}
    body = "".join(f"<tr><td>{t} ({QUALITY_NAMES[t]})</td><td>{', '.join(words)}</td></tr>" for t, words in rows.items())
    return f'<table class="vamp-table"><tr><th>tier</th><th>quality words</th></tr>{body}</table>'


# ----------------------------------------------------------------------------
# Form values <-> a request
# ----------------------------------------------------------------------------

def style_choices(names: list[str]) -> list[str]:
    return [f"{i} · {name}" for i, name in enumerate(names)]


def expert_of(choice: str | None) -> int | None:
    """'2 · gothic' -> 2; 'none' / '' -> None."""
    if not choice or choice == NO_EXPERT:
        return None
    return int(str(choice).split("·")[0].strip())


def style_from_form(mode: str, expert_a: str | None, weight_a: float, expert_b: str | None, weight_b: float):
    """The style mixer's controls -> None (routed) or {expert: weight}; a bad mix is a ValueError."""
    if mode == AUTO_STYLE:
        return None
    mix: dict[int, float] = {}
    for choice, weight in ((expert_a, weight_a), (expert_b, weight_b)):
        expert = expert_of(choice)
        if expert is None:
            continue
        if expert in mix:
            raise ValueError(f"style expert {expert} is picked twice; pick two different experts or one")
        mix[expert] = float(weight)
    if not mix:
        raise ValueError("the style mixer is on but no expert is picked; pick one or two, or choose automatic")
    return mix


@dataclass
class Form:
    """The page's generation controls, in the order build_ui passes them."""
    prompt: str
    negative: str = ""
    quality: str = "from the prompt"      # "from the prompt" or a tier "3"
    style_mode: str = AUTO_STYLE
    expert_a: str | None = None
    weight_a: float = 1.0
    expert_b: str | None = None
    weight_b: float = 0.0
    seed: float = -1                      # -1 = random
    steps: float = 28
    cfg_scale: float = 6.0
    cfg_rescale: float = 0.7
    sampler: str = "DPM++ 2M"
    size: str = "1024x1024"
    batch_size: float = 1
    batch_count: float = 1
    extra: dict = field(default_factory=dict)


def request_from_form(form: Form, draw=random.randrange):
    """The Request the form describes; a random seed (-1) is drawn here so it is written into the PNGs."""
    from vampdiffusion.generation.generate import Request, parse_size
    seed = int(form.seed)
    if seed < 0:
        seed = draw(MAX_SEED)
    quality = None if form.quality in ("", None, "from the prompt") else int(str(form.quality).split()[0])
    return Request(tags=form.prompt, negative=form.negative, quality=quality,
                   style=style_from_form(form.style_mode, form.expert_a, form.weight_a, form.expert_b, form.weight_b),
                   steps=int(form.steps), sampler=form.sampler, cfg_scale=float(form.cfg_scale),
                   cfg_rescale=float(form.cfg_rescale), seed=seed, n=int(form.batch_size) * int(form.batch_count),
                   size=parse_size(form.size))


def form_from_png(path: str | None, names: list[str]) -> dict:
    """A dropped PNG's parameters -> {control name: value} for the form (unknown keys ignored)."""
    from vampdiffusion.generation.infotext import infotext_params, read_png_parameters
    from vampdiffusion.generation.prompts import parse_style, resolve_sampler
    if not path:
        return {}
    p = infotext_params(read_png_parameters(path))
    out = {"prompt": p.get("Prompt", ""), "negative": p.get("Negative prompt", "")}
    for key, name, kind in (("Seed", "seed", int), ("Steps", "steps", int), ("CFG scale", "cfg_scale", float),
                            ("CFG rescale", "cfg_rescale", float)):
        if p.get(key):
            out[name] = kind(p[key])
    if p.get("Sampler"):
        key, _ = resolve_sampler(p["Sampler"])
        out["sampler"] = SAMPLER_NAMES.get(key, p["Sampler"])
    if p.get("Size"):
        out["size"] = p["Size"]
    if p.get("Quality tier"):
        out["quality"] = p["Quality tier"]
    mix = parse_style(p.get("Style experts"))
    out.update(style_form(mix, names))
    return out


def style_form(mix, names: list[str]) -> dict:
    if not mix:
        return {"style_mode": AUTO_STYLE}
    choices = style_choices(names)
    (a, wa), *rest = list(mix.items())
    b, wb = rest[0] if rest else (None, 0.0)
    return {"style_mode": "mix", "expert_a": choices[a], "weight_a": wa,
            "expert_b": NO_EXPERT if b is None else choices[b], "weight_b": wb}


# ----------------------------------------------------------------------------
# Running a request and showing the routing
# ----------------------------------------------------------------------------

def run_request(gen, req, out_dir: Path, batch_size: int, progress=None) -> tuple[list[Path], dict]:
    """Generate and save the images of a request, and the routing report of the request."""
    from vampdiffusion.generation.generate import (check_request, expert_routing, image_batches, save_images,
                                                   warn_request, with_defaults)
    req = with_defaults(req, gen.cfg)
    check_request(req, gen.cfg)
    warn_request(gen, req)
    paths: list[Path] = []
    for images in image_batches(gen, req, batch_size, progress):
        paths += save_images(images, out_dir)
    routing = expert_routing(gen, req.tags, req.quality, req.style, req.steps, req.negative, req.negative_quality,
                             req.cfg_scale)
    return paths, routing


def _bars(weights: list[float], names: list[str]) -> str:
    cells = []
    for e, w in sorted(enumerate(weights), key=lambda ew: -ew[1]):
        if w > 0.005:
            cells.append(f'<div class="vamp-bar" data-expert="{e}" data-gate="{w:.3f}">'
                         f'<span style="width:{w * 8:.1f}em"></span>{e} · {html.escape(names[e])} {w:.2f}</div>')
    return "".join(cells)


def routing_html(report: dict, names: list[str]) -> str:
    """Per MoE block which experts fired: style blocks as bars of the mean gate of each expert over the
    sampler's steps (prompt branch, and the negative branch when CFG runs it), quality blocks by expert."""
    branches = [("prompt", report)] + ([("negative", report["negative"])] if report.get("negative") else [])
    head = "".join(f"<th>{b} branch</th>" for b, _ in branches)
    rows = []
    for i, block in enumerate(report["style_blocks"]):
        cells = "".join(f"<td>{_bars(r['style_gate_per_block'][i], names)}</td>" for _, r in branches)
        rows.append(f'<tr class="vamp-style-block" data-block="{block}"><td>block {block} · style</td>{cells}</tr>')
    for i, block in enumerate(report["quality_blocks"]):
        cells = "".join(f"<td>QE-{r['quality_expert_per_block'][i]} ({QUALITY_NAMES[r['quality_expert_per_block'][i]]})"
                        f"</td>" for _, r in branches)
        rows.append(f'<tr class="vamp-quality-block" data-block="{block}"><td>block {block} · quality</td>{cells}</tr>')
    mode = "forced" if report.get("style") else "routed"
    return (f'<div class="vamp-routing" data-style="{mode}"><table class="vamp-table"><tr><th>MoE block</th>{head}'
            f'</tr>{"".join(rows)}</table></div>')


def size_choices(cfg) -> list[str]:
    from vampdiffusion.latents.buckets import bucket_set
    return [f"{w}x{h}" for w, h in bucket_set(cfg.latents)]


def cluster_names(cfg) -> list[str]:
    """The style cluster names of the model's data.style_clusters (the packaged ones when that file is not
    on this machine), or 'expert k' when their number is not the model's number of style experts."""
    from vampdiffusion.data.labels import style_names
    n = cfg.model.num_style_experts
    for path in (cfg.data.style_clusters, ""):
        try:
            names = style_names(path)
        except (FileNotFoundError, ValueError):
            continue
        if len(names) == n:
            return names
    return [f"expert {k}" for k in range(n)]


__all__ = ["AUTO_STYLE", "Form", "build_ui", "cluster_names", "complete_prompt", "form_from_png", "last_fragment",
           "prompt_report", "quality_table_html", "request_from_form", "routing_html", "run_request",
           "size_choices", "style_choices", "style_from_form", "suggest_tags"]


def build_ui(gen, out_dir: str | Path):
    from vampdiffusion.generation.serve_ui import build
    return build(gen, Path(out_dir))
