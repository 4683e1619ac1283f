"""A1111 generation parameters ("infotext"), written into and read from a PNG's `parameters` text chunk.

Layout, as stable-diffusion-webui writes it (modules/processing.py create_infotext):

    1girl, solo, gothic, dark, masterpiece
    Negative prompt: worst quality, blurry
    Steps: 28, Sampler: DPM++ 2M, CFG scale: 6, Seed: 1, Size: 1024x1024, Model hash: 3f2a9c01be, Model: p3, Quality tier: 3, Style experts: "2:0.7 5:0.3", CFG rescale: 0.7, Negative quality: 0

The negative prompt line is there only when there is one; `Style experts` only when the style is forced.
A value holding `,` `:` or a newline is JSON-quoted (A1111's `quote`), and the key line is read back with
A1111's own regex, so A1111, Forge and civitai readers parse it and this module parses theirs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger("vampdiffusion.generate")

PARAMETERS_KEY = "parameters"      # PNG text chunk read by anime UIs (A1111 / Forge / ComfyUI readers)
NEGATIVE_PREFIX = "Negative prompt:"
# modules/infotext_utils.py re_param_code
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(value) -> str:
    """A1111's quote(): a value with ',' '\\n' or ':' becomes a JSON string, any other is written as is."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """A1111's unquote(): the inverse of quote (text that is not a JSON string is returned unchanged)."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_infotext(prompt: str, negative: str, fields: list[tuple[str, object]]) -> str:
    """prompt, 'Negative prompt: …' when there is one, then 'Key: value, …' (None values left out)."""
    line = ", ".join(f"{k}: {quote(v)}" for k, v in fields if v is not None)
    negative_line = f"\n{NEGATIVE_PREFIX} {negative}" if negative else ""
    return f"{prompt}{negative_line}\n{line}".strip()


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Infotext -> (prompt, negative prompt, {key: value}), exactly as A1111's parse_generation_parameters
    splits it: the last line is the key line when it holds at least 3 `Key: value` pairs."""
    *lines, last = text.strip().split("\n")
    if len(RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    params = {k: unquote(v) if v[:1] == '"' and v[-1:] == '"' else v for k, v in RE_PARAM.findall(last)}
    return prompt, negative, params


def read_png_parameters(path: str | Path) -> str:
    """The `parameters` text of a PNG written by `vamp generate`, `vamp serve` or A1111."""
    from PIL import Image, UnidentifiedImageError
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {p} not found")
    try:
        with Image.open(p) as image:
            text = image.info.get(PARAMETERS_KEY)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{p} is not an image PIL can read ({e}); pass a PNG written by vamp generate") from None
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{p} holds no '{PARAMETERS_KEY}' text chunk: it was not written by vamp generate, "
                         f"vamp serve or A1111 (or a program removed the metadata)")
    return text


# ----------------------------------------------------------------------------
# Infotext <-> generation request
# ----------------------------------------------------------------------------

PROMPT_KEY, NEGATIVE_KEY = "Prompt", "Negative prompt"
KEYS = (PROMPT_KEY, NEGATIVE_KEY, "Steps", "Sampler", "CFG scale", "Seed", "Size", "Quality tier", "Style experts",
        "CFG rescale", "Negative quality")
# --set names beside the infotext keys themselves (compared after lower-casing, '-' and ' ' -> '_')
ALIASES = {"tags": PROMPT_KEY, "negative": NEGATIVE_KEY, "cfg": "CFG scale", "quality": "Quality tier",
           "style": "Style experts", "quality_tier": "Quality tier"}
SHORT_KEYS = {"Quality": "Quality tier", "Style": "Style experts"}  # the short key names, read as the long ones


def _key_name(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def canonical_key(name: str) -> str:
    """'cfg_scale' / 'CFG scale' / 'cfg' -> 'CFG scale'; an unknown name is a ValueError listing them."""
    wanted = _key_name(name)
    for key in KEYS:
        if _key_name(key) == wanted:
            return key
    if wanted in ALIASES:
        return ALIASES[wanted]
    raise ValueError(f"unknown parameter {name!r}; use one of: {', '.join(KEYS)} (or tags, negative, cfg, "
                     f"quality, style)")


def apply_sets(params: dict[str, str], assignments: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Apply 'Key=value' assignments (e.g. 'Seed=5', 'steps=30', 'Style experts=auto') to a copy of params."""
    out = dict(params)
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {assignment!r} must look like KEY=VALUE, e.g. Seed=5 or 'CFG scale=7'")
        out[canonical_key(key)] = value.strip()
    return out


def infotext_params(text: str) -> dict[str, str]:
    """Infotext -> one dict: 'Prompt', 'Negative prompt' and every key of the key line (short key names read as the long ones)."""
    prompt, negative, params = parse_infotext(text)
    for old, new in SHORT_KEYS.items():
        if old in params and new not in params:
            params[new] = params.pop(old)
    return {PROMPT_KEY: prompt, NEGATIVE_KEY: negative, **params}


def _number(params: dict[str, str], key: str, kind):
    value = params.get(key)
    if value is None or value.strip() == "":
        return None
    try:
        return kind(value.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"parameter {key}: {value!r} is not {what}") from None


def request_from_params(params: dict[str, str]):
    """{infotext key: value} -> a generation Request (keys that are absent take the model's defaults)."""
    from vampdiffusion.generation.generate import Request, parse_size
    from vampdiffusion.generation.prompts import parse_style
    schedule = params.get("Schedule type", "")
    if schedule and schedule.lower() not in ("automatic", "uniform"):
        log.warning("Schedule type %s is not used: this model samples its own trailing timesteps", schedule)
    style = params.get("Style experts")
    seed = _number(params, "Seed", int)
    return Request(tags=params.get(PROMPT_KEY, ""), negative=params.get(NEGATIVE_KEY, ""),
                   quality=_number(params, "Quality tier", int), style=parse_style(style),
                   steps=_number(params, "Steps", int), sampler=params.get("Sampler") or None,
                   cfg_scale=_number(params, "CFG scale", float), cfg_rescale=_number(params, "CFG rescale", float),
                   seed=0 if seed is None else seed,
                   size=parse_size(params["Size"]) if params.get("Size") else None,
                   negative_quality=_number(params, "Negative quality", int),
                   model_hash=params.get("Model hash") or None)


def request_from_infotext(text: str, assignments: list[str] | tuple[str, ...] = ()):
    """The Request that regenerates the image whose parameters are `text`, with `--set` changes applied."""
    return request_from_params(apply_sets(infotext_params(text), assignments))


__all__ = ["KEYS", "PARAMETERS_KEY", "RE_PARAM", "apply_sets", "build_infotext", "canonical_key", "infotext_params",
           "parse_infotext", "quote", "read_png_parameters", "request_from_infotext", "request_from_params",
           "unquote"]
