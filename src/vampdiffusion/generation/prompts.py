"""What users type, read one way everywhere (CLI, web UI, PNG parameters, training previews): quality words,
A1111 sampler names, the style mixer, and the sample-prompt line syntax of the trainers users know.

Quality words. The model has no "masterpiece" tag: quality is its own input, a tier 0..3. A word of
QUALITY_WORDS in the prompt sets the tier and is removed from the tags; in the negative prompt it sets the
tier of CFG's unconditional branch (`negative_quality`) and is removed from the negative tags. Several words:
the prompt takes the highest tier named, the negative prompt the lowest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from vampdiffusion.data.vocab import normalize_tag, parse_prompt
from vampdiffusion.diffusion.samplers import SAMPLER_NAMES

# one table, keys as normalize_tag writes them ("best quality" and "best_quality" are the same word)
QUALITY_WORDS: dict[str, int] = {
    "masterpiece": 3, "best_quality": 3, "amazing_quality": 3,
    "high_quality": 2, "great_quality": 2, "good_quality": 2,
    "normal_quality": 1, "medium_quality": 1, "average_quality": 1,
    "low_quality": 0, "bad_quality": 0, "worst_quality": 0,
}
DEFAULT_QUALITY = 3  # the tier of a prompt without a quality word and without an explicit tier


def split_quality(prompt: str, lowest: bool = False) -> tuple[list[str], int | None]:
    """Prompt -> (its tags without quality words, the tier they name or None).

    lowest=False (a prompt): the highest tier named; lowest=True (a negative prompt): the lowest."""
    tags = parse_prompt(prompt)
    tiers = [QUALITY_WORDS[t] for t in tags if t in QUALITY_WORDS]
    kept = [t for t in tags if t not in QUALITY_WORDS]
    if not tiers:
        return kept, None
    return kept, (min(tiers) if lowest else max(tiers))


def prompt_tag_ids(vocab, prompt: str, max_tags: int) -> tuple[list[int], list[str]]:
    """Prompt -> padded ids ([BOS] tags by frequency [EOS] [PAD]…) for a TagVocab, and the unknown tags (each
    one [UNK]). Quality words are not tags (they set the tier): they are left out."""
    tags, _ = split_quality(prompt)
    return vocab.pad(vocab.encode(tags, max_tags), max_tags), vocab.unknown(tags)


def quality_words_of(prompt: str) -> list[str]:
    return [t for t in parse_prompt(prompt) if t in QUALITY_WORDS]


# ----------------------------------------------------------------------------
# Sampler names: the repo's (ddim, euler, dpmpp2m) or A1111's (DDIM, Euler, DPM++ 2M)
# ----------------------------------------------------------------------------

_SAMPLER_KEYS = {**{k: k for k in SAMPLER_NAMES}, **{v.lower(): k for k, v in SAMPLER_NAMES.items()}}


def resolve_sampler(name: str) -> tuple[str | None, str | None]:
    """'DPM++ 2M' / 'dpmpp2m' -> ('dpmpp2m', None); 'DPM++ 2M Karras' -> ('dpmpp2m', a warning);
    an unknown name -> (None, None)."""
    text = " ".join(str(name).split()).lower()
    warning = None
    if text.endswith(" karras"):
        text = text.removesuffix(" karras")
        if text in _SAMPLER_KEYS:
            warning = (f"sampler {name!r}: Karras sigmas are not used — this model samples its own trailing "
                       f"timesteps (zero terminal SNR); running {SAMPLER_NAMES[_SAMPLER_KEYS[text]]}")
    return _SAMPLER_KEYS.get(text), warning


def sampler_choices() -> str:
    return ", ".join(f"{k} ({v})" for k, v in SAMPLER_NAMES.items())


# ----------------------------------------------------------------------------
# The style mixer: None = routed, or {expert: weight} with one or two experts
# ----------------------------------------------------------------------------

StyleMix = dict[int, float]


def parse_style(value) -> StyleMix | None:
    """None / '' / 'auto' / '-' -> None (routed); 5 or '5' -> {5: 1.0}; '2:0.7 5:0.3' or '2:0.7, 5:0.3' or
    {2: 0.7, 5: 0.3} -> that mix (weights checked by check_style)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"style must be an expert number or a mix like 2:0.7 5:0.3, got {value!r}")
    if isinstance(value, int):
        return {value: 1.0}
    if isinstance(value, dict):
        return {int(k): float(v) for k, v in value.items()}
    text = str(value).strip()
    if text.lower() in ("", "auto", "-", "none", "routed"):
        return None
    mix: StyleMix = {}
    for part in re.split(r"[\s,;]+", text):
        m = re.fullmatch(r"(\d+)(?::([0-9.eE+-]+))?", part)
        if not m:
            raise ValueError(f"style {text!r}: {part!r} is not EXPERT or EXPERT:WEIGHT; write e.g. 5, or 2:0.7 5:0.3")
        expert = int(m.group(1))
        if expert in mix:
            raise ValueError(f"style {text!r} names expert {expert} twice")
        try:
            mix[expert] = float(m.group(2)) if m.group(2) is not None else 1.0
        except ValueError:
            raise ValueError(f"style {text!r}: weight {m.group(2)!r} is not a number") from None
    return mix


def check_style(mix: StyleMix | None, num_experts: int, top_k: int) -> None:
    """Raise ValueError naming the problem and the fix."""
    if mix is None:
        return
    if not mix:
        raise ValueError("style mix is empty; name one or two experts, e.g. 2:0.7 5:0.3, or leave it out (routed)")
    for expert, weight in mix.items():
        if not 0 <= expert < num_experts:
            raise ValueError(f"style must be 0..{num_experts - 1} (a style expert), got {expert}; "
                             f"leave it out to let the router choose")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"style expert {expert}: weight must be a number > 0, got {weight}")
    if len(mix) > top_k:
        raise ValueError(f"style mixes {len(mix)} experts, but this model's style blocks run {top_k} per image "
                         f"(model.style_top_k); name at most {top_k}")


def mix_weights(mix: StyleMix) -> StyleMix:
    """Weights normalised to sum 1 like the router's gates; weights that already sum to 1 are kept as they
    are, so a mix read back from a PNG gives the same gates bit for bit. Largest weight first."""
    total = sum(mix.values())
    weights = mix if abs(total - 1.0) <= 1e-9 else {e: w / total for e, w in mix.items()}
    return dict(sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])))


def style_text(mix: StyleMix | None) -> str | None:
    """'2:0.7 5:0.3' (normalised weights, shortest exact decimal), None when routed."""
    if mix is None:
        return None
    return " ".join(f"{e}:{number_text(w)}" for e, w in mix_weights(mix).items())


def number_text(x: float) -> str:
    """6.0 -> '6', 0.7 -> '0.7': the shortest text that reads back as the same float."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


# ----------------------------------------------------------------------------
# Sample prompt lines (kohya sd-scripts): prompt --n negative --w 1024 --h 1024 --d 1 --s 28 --l 6 --q 3
# ----------------------------------------------------------------------------

@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    quality: int | None = None


_LINE_OPTIONS = {"n": ("negative", str), "w": ("width", int), "h": ("height", int), "d": ("seed", int),
                 "s": ("steps", int), "l": ("cfg_scale", float), "q": ("quality", int)}


def parse_sample_prompt(line: str, where: str = "") -> SamplePrompt:
    """One line of a sample prompt file -> SamplePrompt; an unknown option or a bad value names `where`."""
    head, *options = line.split(" --")
    out = SamplePrompt(prompt=head.strip())
    for option in options:
        m = re.fullmatch(r"([A-Za-z]+)(?:\s+(.*))?", option.strip(), re.S)
        if not m or m.group(1).lower() not in _LINE_OPTIONS:
            known = " ".join(f"--{k}" for k in _LINE_OPTIONS)
            raise ValueError(f"{where}unknown option --{option.strip().split(' ')[0]}; a line is "
                             f"'prompt {known}' (negative, width, height, seed, steps, CFG scale, quality tier)")
        name, kind = _LINE_OPTIONS[m.group(1).lower()]
        value = (m.group(2) or "").strip()
        try:
            setattr(out, name, kind(value) if kind is not str else value)
        except ValueError:
            raise ValueError(f"{where}--{m.group(1)} {value!r} is not {'an integer' if kind is int else 'a number'}") from None
    return out


def prompt_file_lines(p: Path, what: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of a UTF-8 text file (a leading BOM, how some editors mark UTF-8, is
    dropped); blank lines and # comments skipped; a byte that is not UTF-8 is an error naming its line and
    column."""
    lines = []
    for number, raw in enumerate(p.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8").removeprefix("\ufeff").strip()
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}:{number}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8; "
                             f"save the {what} as UTF-8") from None
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def read_sample_prompts(path) -> list[SamplePrompt]:
    """A sample prompt file: one image per line; blank lines and # comments skipped; UTF-8."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sample prompt file {p} not found (train.sample_prompts_file); "
                                f"set it to a text file or to \"\" to use train.sample_prompts")
    prompts = [parse_sample_prompt(line, f"{p}:{i}: ") for i, line in prompt_file_lines(p, "sample prompt file")]
    if not prompts:
        raise ValueError(f"sample prompt file {p} holds no prompt (one per line: prompt --n negative --w W --h H ...)")
    return prompts


__all__ = ["DEFAULT_QUALITY", "QUALITY_WORDS", "SAMPLER_NAMES", "SamplePrompt", "StyleMix", "check_style",
           "mix_weights", "normalize_tag", "number_text", "parse_sample_prompt", "parse_style", "prompt_file_lines",
           "prompt_tag_ids", "quality_words_of", "read_sample_prompts", "resolve_sampler", "sampler_choices",
           "split_quality", "style_text"]
