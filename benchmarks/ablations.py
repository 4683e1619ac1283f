"""Whether the style experts matter (docs/research.md §5): one model variant over several seeds, each seed the demo's
fixed-work pipeline (`vampdiffusion.demo.run_demo`: synth -> prepare -> encode -> train ×3 -> evaluate), one JSON
with the style routing accuracy, colour accuracy and sharpness by tier of every seed, and their mean, min and max.

    default   the v1 model (the tiny preset as the demo trains it)
    dense     model.style_ffn=dense: the dense twin, one FFN of style_top_k experts' width where the style experts are
    token     model.style_routing=token: top-2 per token from [LN(x_n) ; e_tag ; e_t]
    nospec    train.phase2.lambda_spec=0: phase 2 without the specialisation loss

The data stages of a seed (synth, prepared, latents) are built once in OUT/data/seedS and linked into each
variant's OUT/VARIANT/seedS, where the demo's stage markers match them (prepare reads cfg.data and max_tags
only), so every variant of a seed trains on the same latents. A variant that differs from the default only after
phase 1 (nospec) links the default's finished phase 1 of the seed (its marker holds phase 1's settings only), so
its phases 2 and 3 start from the same weights; without one it trains its own. The seed is the demo's: synthetic
set and training.

    python benchmarks/ablations.py --variant dense --seeds 0 1 2 --out ablations --vae-path $VAMP_TAESDXL
    python benchmarks/ablations.py --table --out ablations      # the variants side by side (markdown)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from pathlib import Path

import numpy as np

from vampdiffusion.atomic import atomic_write_json
from vampdiffusion.demo import (DemoArgs, data_stages, demo_config, marker_digest, phase_stage_inputs, run_demo,
                                stage_done)

VARIANTS = {
    "default": [],
    "dense": ["model.style_ffn=dense"],
    "token": ["model.style_routing=token"],
    "nospec": ["train.phase2.lambda_spec=0"],
}
DATA_STAGES = ("synth", "prepared", "latents")
PHASE1_FROM = {"nospec": "default"}   # variants whose phase 1 is the default's
TIERS = ("0", "1", "2", "3")


def shared_data(root: Path, a: DemoArgs, overrides: list[str]) -> Path:
    """Build (or reuse) the seed's data stages in root/data/seedS, one process at a time; returns the folder."""
    folder = root / "data" / f"seed{a.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another variant of this seed may be building the same data
        shared = DemoArgs(out=folder, n=a.n, size=a.size, seed=a.seed, vae_path=a.vae_path)
        built = (folder / "latents" / ".done.json").is_file()
        timings: dict = {}
        data_stages(shared, demo_config(shared, overrides), timings)
        if not built:                                  # the seconds of the build (a later run only reuses it)
            atomic_write_json(folder / "timings.json", timings)
    return folder


def link_data(data: Path, out: Path) -> None:
    """out/synth, out/prepared, out/latents -> the shared folders (relative links; existing entries stay)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in DATA_STAGES:
        if not (out / name).exists() and not (out / name).is_symlink():
            (out / name).symlink_to(os.path.relpath(data / name, out))


def link_phase1(root: Path, variant: str, a: DemoArgs, overrides: list[str]) -> None:
    """out/phase1 -> root/SOURCE/seedS/phase1 when the variant shares it and that phase 1 has finished with the
    inputs this run's phase 1 would have (same settings and latents); else the variant trains its own."""
    source = PHASE1_FROM.get(variant)
    out, done = a.out, None if source is None else root / source / f"seed{a.seed}" / "phase1"
    if done is None or os.path.lexists(out / "phase1") or not (out / "latents" / ".done.json").is_file():
        return
    if stage_done(done, phase_stage_inputs(demo_config(a, overrides), 1, marker_digest(out / "latents"))):
        (out / "phase1").symlink_to(os.path.relpath(done, out))


def seed_row(seed: int, out: Path, results: dict, seconds: float) -> dict:
    """The numbers of one run, from its eval.json dict (None where a model has no such quantity)."""
    demo, oracle = results["demo"], results.get("oracle", {})
    attributes, sharp = oracle.get("attributes", {}), oracle.get("sharpness", {})
    generated, style = sharp.get("generated", {}), oracle.get("style", {})
    return {
        "seed": seed, "out": str(out), "eval_json": str(out / "eval.json"),
        "style_routing_accuracy_phase2": demo["routing_by_phase"]["phase 2"]["style"]["accuracy_mean"],
        "style_routing_accuracy": results["routing"]["style"]["accuracy_mean"],   # the phase-3 model
        "quality_routing_accuracy": results["routing"]["quality"]["accuracy_mean"],
        "colour_accuracy": attributes.get("colour", {}).get("accuracy"),
        "background_accuracy": attributes.get("background", {}).get("accuracy"),
        "style_image_accuracy": style.get("conditioning", {}).get("accuracy"),     # oracle reading, tier 3
        "steering_read_as_k": style.get("steering", {}).get("read_as_k_mean"),
        "steering_lift": style.get("steering", {}).get("lift_mean"),
        "composition_read_dark": style.get("composition", {}).get("read_dark"),
        "sharpness": {q: generated.get(q) for q in TIERS},
        "sharpness_rises_with_tier": sharp.get("rises_with_tier"),
        "checks": {c["check"]: c["passed"] for c in demo["checks"]},
        "seconds": round(seconds, 1),
    }


SCALARS = ("style_routing_accuracy_phase2", "style_routing_accuracy", "quality_routing_accuracy",
           "colour_accuracy", "background_accuracy", "style_image_accuracy", "steering_read_as_k", "steering_lift",
           "composition_read_dark")


def spread(values: list) -> dict:
    """mean, min, max over the seeds that have the value (n of them); None throughout when none has it."""
    v = [float(x) for x in values if x is not None]
    return {"mean": sum(v) / len(v) if v else None, "min": min(v, default=None), "max": max(v, default=None), "n": len(v)}


def summary(rows: list[dict]) -> dict:
    out = {k: spread([r[k] for r in rows]) for k in SCALARS}
    out["sharpness"] = {q: spread([r["sharpness"][q] for r in rows]) for q in TIERS}
    return out


def fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def fmt_spread(s: dict) -> str:
    return "–" if s["mean"] is None else f"{s['mean']:.3f} ({s['min']:.3f}–{s['max']:.3f})"


def table(rows: list[dict], summ: dict) -> str:
    lines = [("metric", *[f"seed {r['seed']}" for r in rows], "mean (min–max)")]
    for k in SCALARS:
        lines.append((k, *[fmt(r[k]) for r in rows], fmt_spread(summ[k])))
    for q in TIERS:
        lines.append((f"sharpness tier {q}", *[fmt(r["sharpness"][q]) for r in rows], fmt_spread(summ["sharpness"][q])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)


ROW_NAMES = {
    "style_routing_accuracy_phase2": "style routing accuracy after phase 2 (expert k = style k; chance 0.125)",
    "style_routing_accuracy": "style routing accuracy after phase 3",
    "style_image_accuracy": "style conditioning accuracy of the images (chance 0.125)",
    "steering_read_as_k": "steering: share read as the forced expert's style",
    "steering_lift": "steering: lift over the other experts",
    "colour_accuracy": "colour accuracy (chance 1/6)",
    "quality_routing_accuracy": "quality routing accuracy after phase 3 (expert q = tier q; chance 0.25)",
    "composition_read_dark": "composition: share read dark",
}


def matched_accuracy(label_expert: list[list[float]]) -> float | None:
    """Routing accuracy under the best one-to-one label -> expert assignment (Hungarian), mean over the labels
    of the share of the label's images on its expert: invariant to which expert a router gives a label, so a
    router trained without L_spec (which fixes expert k for label k) is read by how consistent it is."""
    from scipy.optimize import linear_sum_assignment
    m = np.asarray(label_expert, dtype=float)
    m = m[m.sum(1) > 0] if m.ndim == 2 else m.reshape(0, 0)   # labels with held-out images
    if not m.size:
        return None                                       # no router (the dense twin's style blocks)
    rows, cols = linear_sum_assignment(-m)
    return float(m[rows, cols].sum() / len(m))


MATCHED = {
    "style routing, best one-to-one assignment, after phase 2": lambda r: r["demo"]["routing_by_phase"]["phase 2"]["style"],
    "style routing, best one-to-one assignment, after phase 3": lambda r: r["routing"]["style"],
    "quality routing, best one-to-one assignment, after phase 3": lambda r: r["routing"]["quality"],
}


def matched_spreads(run: dict) -> dict:
    """The MATCHED rows over a variant's seeds, read from each seed's eval.json."""
    results = [json.loads(Path(r["eval_json"]).read_text()) for r in run["runs"]]
    return {name: spread([matched_accuracy(get(res).get("label_expert", [])) for res in results])
            for name, get in MATCHED.items()}


def markdown(root: Path) -> str:
    """The variants' summaries side by side (mean, min–max over seeds), from root/ablations_VARIANT.json."""
    runs = {v: json.loads((root / f"ablations_{v}.json").read_text()) for v in VARIANTS
            if (root / f"ablations_{v}.json").is_file()}
    if not runs:
        raise SystemExit(f"ablations: no ablations_VARIANT.json in {root}; run a --variant first (--out {root})")
    head = "| | " + " | ".join(f"{v} ({len(r['seeds'])} seed{'s' * (len(r['seeds']) != 1)})" for v, r in runs.items()) + " |"
    lines = [head, "|---" * (len(runs) + 1) + "|"]
    for k, name in ROW_NAMES.items():
        lines.append(f"| {name} | " + " | ".join(fmt_spread(r["summary"][k]) for r in runs.values()) + " |")
    matched = [matched_spreads(r) for r in runs.values()]
    for name in MATCHED:
        lines.append(f"| {name} | " + " | ".join(fmt_spread(m[name]) for m in matched) + " |")
    for q in TIERS:
        lines.append(f"| mean sharpness, tier {q} | " + " | ".join(fmt_spread(r["summary"]["sharpness"][q])
                                                             for r in runs.values()) + " |")
    rises = [f"{sum(bool(x['sharpness_rises_with_tier']) for x in r['runs'])} of {len(r['runs'])}" for r in runs.values()]
    lines.append("| sharpness rises tier by tier (seeds) | " + " | ".join(rises) + " |")
    return "\n".join(lines)


def main() -> None:
    d = DemoArgs()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=sorted(VARIANTS))
    ap.add_argument("--table", action="store_true", help="print the variants' markdown table from OUT and stop")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="ablations", help="root folder: data/seedS and VARIANT/seedS under it")
    ap.add_argument("--n", type=int, default=d.n, help=f"synthetic posts (default {d.n}, the demo's)")
    ap.add_argument("--size", type=int, default=d.size, help=f"synthetic image side, px (default {d.size})")
    ap.add_argument("--vae-path", default="", help="TAESD-XL weights; default $VAMP_TAESDXL, else the hub id")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every run, after the variant's (e.g. fewer steps for a smoke run)")
    ap.add_argument("--json", default="", help="output JSON (default OUT/ablations_VARIANT.json)")
    args = ap.parse_args()
    root = Path(args.out)
    if args.table:
        print(markdown(root))
        return
    if args.variant is None:
        ap.error("--variant is required (or --table)")
    overrides = [*VARIANTS[args.variant], *args.overrides]
    path = Path(args.json) if args.json else root / f"ablations_{args.variant}.json"
    rows: list[dict] = []
    for seed in args.seeds:
        a = DemoArgs(out=root / args.variant / f"seed{seed}", n=args.n, size=args.size, seed=seed, vae_path=args.vae_path)
        link_data(shared_data(root, a, overrides), a.out)
        link_phase1(root, args.variant, a, overrides)
        t0 = time.time()
        result = run_demo(a, overrides)
        rows.append(seed_row(seed, a.out, result.results, time.time() - t0))
        atomic_write_json(path, {"variant": args.variant, "overrides": overrides, "n": args.n, "size": args.size,
                                 "seeds": [r["seed"] for r in rows], "runs": rows, "summary": summary(rows)})
    print(f"\nvariant {args.variant} ({' '.join(overrides) or 'no overrides'}), seeds {args.seeds}")
    print(table(rows, summary(rows)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
