"""The report's sections: each a function of what an evaluation (or the demo) measured, returning an
`R.Section` of HTML built from the primitives in report.py."""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

from vampdiffusion.evaluation import report as R

if TYPE_CHECKING:
    from vampdiffusion.evaluation.evaluate import Evaluation


def pct(v) -> str:
    """A share as a percentage for the report ('–' when missing)."""
    return "–" if v is None else f"{100 * v:.1f}%"


def summary_section(ev: Evaluation) -> R.Section:
    r = ev.results
    ro = r["routing"]
    rows = [("style routing accuracy (mean over blocks)", pct(ro["style"]["accuracy_mean"]), pct(ro["style"]["chance"])),
            ("quality routing accuracy (mean over blocks)", pct(ro["quality"]["accuracy_mean"]), pct(ro["quality"]["chance"])),
            ("style routing entropy H_S (mean)", R.fmt(ro["style"]["entropy_mean"]), f"max {ro['style']['entropy_max']:.2f}")]
    o = r.get("oracle", {})
    rows += style_summary_rows(o.get("style"))
    for name, label in (("colour", "colour accuracy (single-object prompts)"), ("shape", "shape accuracy (single-object prompts)"),
                        ("background", "background accuracy"), ("colour_pair", "colour accuracy (two-object prompts)")):
        a = o.get("attributes", {}).get(name)
        if a:
            rows.append((label, pct(a["accuracy"]) if a["status"] == "ok" else a["status"], pct(a["chance"])))
    fid = r["fid"]
    if fid["status"] == "ok":
        for q in range(len(ev.results["tier_names"])):
            rows.append((f"FID tier {q} ({ev.results['tier_names'][q]})", R.fmt(fid["per_tier"][str(q)]["fid"], 2), ""))
        rows.append(("FID ordering FID₃ < FID₂ < FID₁ < FID₀", "holds" if fid["ordering_holds"] else "does not hold", ""))
    else:
        rows.append(("FID per tier", fid["status"], ""))
    rows.append(("CLIP score", r["clip"]["status"] if r["clip"]["status"] != "ok" else
                 ", ".join(f"tier {q}: {v:.2f}" for q, v in r["clip"]["per_tier"].items()), ""))
    alerts = ro["collapse_alerts"]
    body = R.table(("metric", "value", "chance"), rows, caption=f"{r['heldout_images']} held-out images")
    if alerts:
        body += "<p class='alert'>expert collapse: " + R.esc("; ".join(
            f"block {a['block']} expert {a['expert']} first for {a['share']:.0%} of the images" for a in alerts)) + "</p>"
    else:
        body += f"<p class='ok'>no style expert is the first choice of more than {ro['collapse_threshold']:.0%} of the images</p>"
    return R.Section("Summary", body)


def style_summary_rows(st: dict | None) -> list[tuple]:
    """The summary's style-in-the-images rows (none without the style oracle)."""
    if not st:
        return []
    if st["status"] != "ok":
        return [("style conditioning accuracy (images)", st["status"], "")]
    c, steer, comp = st["conditioning"], st["steering"], st["composition"]
    rows = [(f"style conditioning accuracy (images, tier {c['tier']}, readable styles)", pct(c["accuracy"]), pct(c["chance"]))]
    if steer.get("status", "ok") == "ok":
        rows.append(("style steering: images read as the forced expert's style (readable, mean; lift over the "
                     "other experts)", f"{pct(steer['read_as_k_mean'])} ({points(steer['lift_mean'])})", pct(steer["chance"])))
    rows.append((f"composition “{comp['prompt']}”: images read dark", pct(comp["read_dark"]), ""))
    return rows


def routing_section(ev: Evaluation) -> R.Section:
    ro = ev.results["routing"]
    st, qu = ro["style"], ro["quality"]
    rows = [(f"style block {b}", *(f"{x:.2f}" for x in f), R.fmt(h), pct(a))
            for b, f, h, a in zip(st["blocks"], st["frequencies"], st["entropy"], st["accuracy"])]
    body = R.table(["block", *[f"f_{i}" for i in range(len(st["frequencies"][0]) if st["frequencies"] else 0)], "H_S", "accuracy"],
                   rows, caption=f"style routing per block (top-2 slots; chance accuracy {pct(st['chance'])})")
    rows = [(f"quality block {b}", *(f"{x:.2f}" for x in f), pct(a))
            for b, f, a in zip(qu["blocks"], qu["frequencies"], qu["accuracy"])]
    body += R.table(["block", *[f"f_{i}" for i in range(len(qu["frequencies"][0]) if qu["frequencies"] else 0)], "accuracy"],
                    rows, caption=f"quality routing per block (chance accuracy {pct(qu['chance'])})")
    body += R.heatmap(st["label_expert"], [f"{i} {ev.results['style_names'][i]}" if i < len(ev.results['style_names']) else str(i) for i in range(len(st["label_expert"]))],
                      [f"E{i}" for i in range(len(st["label_expert"][0]))], "style label × top-1 style expert (row shares, all style blocks)")
    body += R.heatmap(qu["label_expert"], [f"{q} {ev.results['tier_names'][q]}" for q in range(len(qu["label_expert"]))],
                      [f"QE{i}" for i in range(len(qu["label_expert"][0]))], "quality tier × quality expert (row shares, all quality blocks)")
    return R.Section("Routing", body)


def oracle_section(ev: Evaluation) -> R.Section:
    o = ev.results["oracle"]
    if o.get("status") != "ok":
        return R.Section("Synthetic oracle", f"<p class='skip'>{R.esc(o.get('status'))}</p>")
    rows = []
    for name, a in o["attributes"].items():
        per = a.get("per_tier", {})
        rows.append((name, pct(a["accuracy"]) if a["status"] == "ok" else a["status"], pct(a["chance"]),
                     pct(a["calibration"]), *(pct(per.get(str(q))) for q in range(len(ev.results["tier_names"])))))
    body = R.table(("attribute", "accuracy vs prompt", "chance", "oracle on decoded real", *(f"tier {q}" for q in range(len(ev.results['tier_names'])))),
                   rows, caption="conditioning accuracy of generated images (synthetic-set oracle)")
    sh = o["sharpness"]
    body += R.table(("", *(f"tier {q} ({ev.results['tier_names'][q]})" for q in range(len(ev.results['tier_names'])))),
                    [("generated", *(sh["generated"].get(str(q)) for q in range(len(ev.results["tier_names"])))),
                     ("decoded real", *(sh["real"].get(str(q)) for q in range(len(ev.results["tier_names"]))))],
                    caption="mean edge sharpness per quality tier (expected to rise with the tier)")
    body += f"<p class='{'ok' if sh['rises_with_tier'] else 'alert'}'>generated sharpness " \
            f"{'rises' if sh['rises_with_tier'] else 'does not rise'} with the quality tier</p>"
    return R.Section("Synthetic oracle", body)


def style_section(ev: Evaluation) -> R.Section:
    """Style in the generated images: conditioning per style and tier, steering, composition (style oracle)."""
    st = ev.results.get("oracle", {}).get("style")
    if not st or st["status"] != "ok":
        return R.Section("Style in the images", f"<p class='skip'>{R.esc(st['status'] if st else ev.results['oracle'].get('status'))}</p>")
    names, c, steer = ev.results["style_names"], st["conditioning"], st["steering"]
    per_expert = steer.get("per_expert", {})
    rows = [(f"{k} {names[int(k)]}", v.get("status") or pct(v["accuracy"]), v["count"], pct(v["typical"]),
             pct(c["calibration_per_style"][k]["accuracy"]),
             steering_cell(per_expert.get(k))) for k, v in c["per_style"].items()]
    body = R.table(("style", f"generated, tier {c['tier']}: read as prompted", "prompts", "typical", "oracle on decoded real",
                    "forced expert k: read as style k (lift over the other experts)"), rows,
                   caption=f"style conditioning accuracy of generated images (style oracle; chance {pct(c['chance'])})")
    body += R.paragraph(f"typical: the share of images as near their nearest style as 99 % of the synthetic set's own "
                        f"TAESD-XL round trips ({pct(c['typical'])} of the generated, {pct(c['calibration_typical'])} of "
                        f"the decoded real at tier {c['tier']}); the oracle's reading of an untypical image is the "
                        f"nearest of eight styles that all fit it badly.")
    tiers = sorted(c["per_tier"], key=int)
    body += R.table(("", *(f"tier {q}" for q in tiers)),
                    [("generated (readable styles)", *(pct(c["per_tier"][q]) for q in tiers)),
                     ("decoded real (readable styles)", *(pct(c["calibration_per_tier"][q]) for q in tiers))],
                    caption="style read as prompted, per quality tier")
    counts = c["prompted_read"]
    shares = [[v / max(sum(row), 1) for v in row] for row in counts]
    body += R.heatmap(shares, [f"{k} {names[k]}" for k in range(len(shares))], [f"S{k}" for k in range(len(shares))],
                      f"prompted style × style read S k, tier {c['tier']} (row shares)")
    if steer.get("expert_read"):
        body += R.heatmap(steer["expert_read"], [f"E{k} forced" for k in range(len(steer["expert_read"]))],
                          [f"S{k}" for k in range(len(steer["expert_read"][0]))],
                          f"forced style expert × style read S k, {steer['prompts']} prompts at tier {steer['tier']} (row shares)")
    if ev.steering_images:
        body += R.image_grid([ev.steering_images[k] for k in sorted(ev.steering_images)],
                             [f"E{k} forced" for k in sorted(ev.steering_images)],
                             caption="steering: each style's first grid prompt (columns) with the style experts forced to E k (rows)")
    elif steer.get("status"):
        body += f"<p class='skip'>steering: {R.esc(steer['status'])}</p>"
    return R.Section("Style in the images", body + composition_numbers(st["composition"], ev), "style")


def points(v) -> str:
    """A difference of shares in percentage points ('–' when missing)."""
    return "–" if v is None else f"{100 * v:+.1f} pts"


def steering_cell(e: dict | None) -> str:
    if e is None:
        return "–"
    return e.get("status") or f"{pct(e['read_as_k'])} ({points(e['lift'])})"


def composition_numbers(comp: dict, ev: Evaluation) -> str:
    """The composition prompt's experts and what the oracles read in its images (HTML)."""
    names, tiers = ev.results["style_names"], ev.results["tier_names"]
    read = sorted(range(len(comp["style_read"])), key=lambda k: -comp["style_read"][k])
    fired = "; ".join(f"block {b}: {', '.join(f'E{e} {names[e]}' for e in top2)}"
                      for b, top2 in zip(comp["style_blocks"], comp["style_top2_per_block"])) or "no style experts"
    rows = [("style experts fired (top-2 over the sampler's timesteps)", fired),
            ("quality experts fired", "; ".join(f"block {b}: QE-{e} {tiers[e]}" for b, e in
                                               zip(comp["quality_blocks"], comp["quality_expert_per_block"]))),
            ("styles read", ", ".join(f"{names[k]} {pct(comp['style_read'][k])}" for k in read if comp["style_read"][k] > 0)),
            ("read dark (dark background and darkened fill)", pct(comp["read_dark"])),
            ("typical (as near a style as the set's round trips)", pct(comp["typical"])),
            ("mean sharpness (tier-3 generated images)", f"{R.fmt(comp['sharpness'])} ({R.fmt(comp['sharpness_tier_reference'])})")]
    if comp["unknown_tags"]:
        rows.append(("tags not in the vocabulary ([UNK])", ", ".join(comp["unknown_tags"])))
    body = R.table(("", "measured"), rows, caption=f"composition “{comp['prompt']}” at tier {comp['quality']}, "
                                                   f"{comp['images']} seeds")
    if ev.composition_images:
        body += R.image_grid([ev.composition_images], caption="composition samples (seeds 0…)")
    return body


def fid_section(ev: Evaluation) -> R.Section:
    fid = ev.results["fid"]
    if fid["status"] != "ok":
        body = f"<p class='skip'>FID: {R.esc(fid['status'])}</p>"
    else:
        body = R.table(("tier", "generated", "FID vs held-out", "FID vs same tier", "real of that tier"),
                       [(f"{q} {ev.results['tier_names'][q]}", v["generated"], v["fid"], v["fid_same_tier"], v["real_same_tier"])
                        for q, v in ((int(k), v) for k, v in fid["per_tier"].items())], caption="FID per quality tier")
        body += R.paragraph(f"ordering FID₃ < FID₂ < FID₁ < FID₀: {'holds' if fid['ordering_holds'] else 'does not hold'}")
        if fid.get("note"):
            body += R.paragraph(fid["note"])
    clip = ev.results["clip"]
    body += (f"<p class='skip'>CLIP score: {R.esc(clip['status'])}</p>" if clip["status"] != "ok" else
             R.table(("tier", "CLIP score"), [(q, v) for q, v in clip["per_tier"].items()], caption=f"CLIP score ({clip['model']})"))
    return R.Section("FID and CLIP score", body)


def samples_section(ev: Evaluation, columns: int) -> R.Section:
    body = ""
    if ev.tier_images:
        grid = [ev.tier_images[q][:columns] for q in sorted(ev.tier_images)]
        body += R.image_grid(grid, [f"tier {q} {ev.results['tier_names'][q]}" for q in sorted(ev.tier_images)],
                             caption="per quality tier: the same held-out prompts and seeds in every row")
    if ev.style_images:
        grid = [ev.style_images[s] for s in sorted(ev.style_images)]
        body += R.image_grid(grid, [f"{s} {ev.results['style_names'][s]}" for s in sorted(ev.style_images)],
                             caption="per style label: held-out prompts of that style, tier 3")
    if ev.real_images:
        body += R.image_grid([ev.real_images[:columns]], ["decoded real"], caption="held-out latents decoded by the VAE")
    return R.Section("Samples", body or R.paragraph("no samples"))


def curves_section(ev: Evaluation) -> R.Section:
    if not ev.logs:
        return R.Section("Training curves", R.paragraph("no metrics.jsonl given (--logs) or found beside the model folder"))
    body = R.line_chart(R.loss_series(ev.logs, ("loss",)), "training loss (v-MSE + auxiliary)", "loss", log_y=True)
    keys = sorted({k for rows in ev.logs.values() for r in rows for k in r if k.startswith("loss/")})
    if keys:
        body += R.line_chart(R.loss_series(ev.logs, keys), "loss terms", "value", log_y=True)
    norms = sorted({k for rows in ev.logs.values() for r in rows for k in r if k.startswith("grad_norm/")})
    if norms:  # router vs backbone gradient norms (docs/evaluation.md)
        body += R.line_chart(R.loss_series(ev.logs, norms), "gradient norms", "‖g‖", log_y=True)
    ent = sorted({k for rows in ev.logs.values() for r in rows for k in r if "entropy" in k})
    if ent:
        body += R.line_chart(R.loss_series(ev.logs, ent[:8]), "routing entropy", "nats")
    return R.Section("Training curves", body)


def eval_sections(ev: Evaluation, columns: int = 8) -> list[R.Section]:
    return [summary_section(ev), samples_section(ev, columns), routing_section(ev), style_section(ev),
            oracle_section(ev), fid_section(ev), curves_section(ev)]


# ----------------------------------------------------------------------------
# Sections of a whole pipeline run (the demo)
# ----------------------------------------------------------------------------


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else []


def data_section(prepared: Path) -> R.Section:
    """The filter-stage, quality-tier and style tables `vamp data prepare` wrote to its folder."""
    stages, tiers, styles = (_read_json(prepared / f) for f in ("stages.json", "tiers.json", "styles.json"))
    body = (R.table(["stage", "in", "out", "removed", "% removed", "note"],
                    [(s["stage"], s["in"], s["out"], s["removed"], s["pct_removed"], s.get("note", "")) for s in stages],
                    "Filter stages")
            + R.table(["quality tier", "score tags", "count", "%"],
                      [(f"QE-{t['tier']} ({t['name']})", t["score_tags"], t["count"], t["pct"]) for t in tiers],
                      "Quality tiers")
            + R.table(["style", "id", "count", "% of labeled"],
                      [(s["name"], s["style"], s["count"], s["pct_of_labeled"]) for s in styles], "Style labels (§4.4)"))
    return R.Section("Data pipeline", body, "data")


def routing_by_phase_section(routing_by_phase: dict[str, dict]) -> R.Section:
    """Held-out routing after each training phase (one row per phase)."""
    rows = [(name, r["style"]["accuracy_mean"], r["style"]["entropy_mean"], r["quality"]["accuracy_mean"],
             len(r["collapse_alerts"])) for name, r in routing_by_phase.items()]
    any_r = next(iter(routing_by_phase.values()))
    headers = ["after", f"style routing accuracy (chance {any_r['style']['chance']:.3f})",
               f"style entropy H_S (max {any_r['style']['entropy_max']:.3f})",
               f"quality routing accuracy (chance {any_r['quality']['chance']:.2f})", "collapse alerts"]
    return R.Section("Routing by phase", R.table(headers, rows, "Held-out expert routing after each phase (EMA weights)"),
                     "routing-phases")
