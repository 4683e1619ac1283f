"""The gradio page of `vamp serve`: components wired to the plain functions of generation/serve.py."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from vampdiffusion.data.labels import QUALITY_NAMES
from vampdiffusion.diffusion.samplers import SAMPLER_NAMES
from vampdiffusion.generation import serve as S

log = logging.getLogger("vampdiffusion.serve")

FROM_PROMPT = "from the prompt"
CSS = """
.vamp-unknown { color: #c0392b; font-weight: 600; }
.vamp-quality { color: #1f618d; }
.vamp-known { color: #6c757d; }
.vamp-table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
.vamp-table td, .vamp-table th { border: 1px solid #ddd; padding: 2px 6px; vertical-align: top; text-align: left; }
.vamp-bar { white-space: nowrap; }
.vamp-bar span { display: inline-block; height: 0.7em; background: #8e44ad; margin-right: 6px; }
"""
# system fonts only: the page never fetches anything from outside this machine
THEME_FONTS = dict(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def form_inputs(c: dict) -> list:
    """The controls that make a Form, in Form's field order."""
    return [c[k] for k in ("prompt", "negative", "quality", "style_mode", "expert_a", "weight_a", "expert_b",
                           "weight_b", "seed", "steps", "cfg_scale", "cfg_rescale", "sampler", "size", "batch_size",
                           "batch_count")]


def prompt_controls(gen) -> dict:
    c = {"prompt": gr.Textbox(label="Prompt (Danbooru tags, comma-separated; spaces or underscores)", lines=2,
                              elem_id="vamp-prompt", placeholder="1girl, solo, gothic, dark, masterpiece")}
    c["suggestions"] = gr.Radio(choices=[], label="Tag suggestions (most frequent first)", elem_id="vamp-suggestions")
    c["prompt_info"] = gr.HTML(elem_id="vamp-prompt-info")
    c["negative"] = gr.Textbox(label="Negative prompt", lines=1, elem_id="vamp-negative",
                               placeholder="worst quality, blurry")
    c["negative_info"] = gr.HTML(elem_id="vamp-negative-info")
    with gr.Row():
        c["quality"] = gr.Dropdown([FROM_PROMPT] + [f"{t} ({QUALITY_NAMES[t]})" for t in range(len(QUALITY_NAMES) - 1, -1, -1)],
                                   value=FROM_PROMPT, label="Quality tier", elem_id="vamp-quality")
        with gr.Accordion("Quality words", open=False):
            gr.HTML(S.quality_table_html())
    return c


def style_controls(names: list[str]) -> dict:
    choices = [S.NO_EXPERT] + S.style_choices(names)
    c = {"style_mode": gr.Radio([S.AUTO_STYLE, "mix"], value=S.AUTO_STYLE, label="Style experts",
                                elem_id="vamp-style-mode")}
    with gr.Row():
        c["expert_a"] = gr.Dropdown(choices, value=S.NO_EXPERT, label="Expert A", elem_id="vamp-expert-a")
        c["weight_a"] = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Weight A", elem_id="vamp-weight-a")
    with gr.Row():
        c["expert_b"] = gr.Dropdown(choices, value=S.NO_EXPERT, label="Expert B", elem_id="vamp-expert-b")
        c["weight_b"] = gr.Slider(0, 1, value=0.0, step=0.05, label="Weight B", elem_id="vamp-weight-b")
    return c


def sampler_controls(gen) -> dict:
    s, T = gen.cfg.sample, gen.cfg.diffusion.num_timesteps
    sizes = S.size_choices(gen.cfg)
    square = f"{gen.cfg.latents.resolution}x{gen.cfg.latents.resolution}"
    c = {}
    with gr.Row():
        c["seed"] = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="vamp-seed")
        c["steps"] = gr.Slider(1, min(T, 150), value=s.steps, step=1, label="Steps", elem_id="vamp-steps")
    with gr.Row():
        c["cfg_scale"] = gr.Slider(1, 20, value=s.cfg_scale, step=0.5, label="CFG scale", elem_id="vamp-cfg")
        c["cfg_rescale"] = gr.Slider(0, 1, value=s.cfg_rescale, step=0.05, label="CFG rescale", elem_id="vamp-rescale")
    with gr.Row():
        c["sampler"] = gr.Dropdown(list(SAMPLER_NAMES.values()), value=SAMPLER_NAMES[s.sampler], label="Sampler",
                                   elem_id="vamp-sampler")
        c["size"] = gr.Dropdown(sizes, value=square if square in sizes else sizes[0], label="Size (trained buckets)",
                                elem_id="vamp-size")
    with gr.Row():
        c["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="vamp-batch-size")
        c["batch_count"] = gr.Slider(1, 16, value=1, step=1, label="Batch count", elem_id="vamp-batch-count")
    return c


def output_controls() -> dict:
    return {"gallery": gr.Gallery(label="Images", columns=4, format="png", elem_id="vamp-gallery"),
            "infotext": gr.Textbox(label="Parameters (PNG info)", lines=4, elem_id="vamp-infotext",
                                   interactive=False),
            "routing": gr.HTML(elem_id="vamp-routing"),
            "status": gr.Markdown(elem_id="vamp-status")}


def on_generate(gen, out_dir: Path, names: list[str]):
    def run(*values, progress=gr.Progress()):
        try:
            form = S.Form(*values)
            req = S.request_from_form(form)
            paths, routing = S.run_request(
                gen, req, out_dir, int(form.batch_size),
                lambda done, total: progress((done, total), desc="sampling", unit="steps"))
        except (ValueError, FileNotFoundError) as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # any failure of the work: shown in the page, the server goes on
            log.exception("generation failed")
            raise gr.Error(f"generation failed: {type(e).__name__}: {e}") from None
        from vampdiffusion.generation.infotext import read_png_parameters
        items = [(str(p), p.stem) for p in paths]
        status = f"{len(paths)} image(s) in {out_dir}"
        return items, read_png_parameters(paths[0]), S.routing_html(routing, names), [str(p) for p in paths], status
    return run


def on_png(names: list[str], keys: list[str]):
    def load(path):
        try:
            values = S.form_from_png(path, names)
        except (ValueError, FileNotFoundError) as e:
            raise gr.Error(str(e)) from None
        if "quality" in values:
            tier = int(values["quality"])
            values["quality"] = f"{tier} ({QUALITY_NAMES[tier]})"
        return [values.get(k, gr.skip()) for k in keys]
    return load


def wire(gen, out_dir: Path, names: list[str], c: dict) -> None:
    vocab = gen.vocab

    def typed(prompt):
        return gr.Radio(choices=S.suggest_tags(vocab, prompt), value=None)

    def picked(prompt, tag):
        return S.complete_prompt(prompt, tag), gr.Radio(choices=[], value=None)

    quiet = dict(queue=False, show_progress="hidden")
    # suggestions follow typing (input); the checks follow every change, a PNG dropped on the page too
    c["prompt"].input(typed, c["prompt"], c["suggestions"], trigger_mode="always_last", **quiet)
    c["prompt"].change(lambda p: S.prompt_report(vocab, p), c["prompt"], c["prompt_info"],
                       trigger_mode="always_last", **quiet)
    c["suggestions"].input(picked, [c["prompt"], c["suggestions"]], [c["prompt"], c["suggestions"]], **quiet)
    c["negative"].change(lambda p: S.prompt_report(vocab, p, negative=True), c["negative"], c["negative_info"],
                         trigger_mode="always_last", **quiet)
    c["generate"].click(on_generate(gen, out_dir, names), form_inputs(c),
                        [c["gallery"], c["infotext"], c["routing"], c["paths"], c["status"]], concurrency_limit=1)

    def selected(paths, evt: gr.SelectData):
        from vampdiffusion.generation.infotext import read_png_parameters
        return read_png_parameters(paths[evt.index]) if paths and evt.index is not None else ""

    c["gallery"].select(selected, c["paths"], c["infotext"], **quiet)
    keys = ["prompt", "negative", "quality", "style_mode", "expert_a", "weight_a", "expert_b", "weight_b", "seed",
            "steps", "cfg_scale", "cfg_rescale", "sampler", "size"]
    c["png"].upload(on_png(names, keys), c["png"], [c[k] for k in keys], **quiet)


def build(gen, out_dir: Path) -> gr.Blocks:
    names = S.cluster_names(gen.cfg)
    with gr.Blocks(title="VampDiffusion", analytics_enabled=False) as page:
        gr.Markdown(f"## VampDiffusion · model `{gen.model_name or 'model'}` · hash `{gen.model_hash}`")
        with gr.Row():
            with gr.Column(scale=3):
                c = prompt_controls(gen)
                c.update(style_controls(names))
                c.update(sampler_controls(gen))
                c["generate"] = gr.Button("Generate", variant="primary", elem_id="vamp-generate")
                c["png"] = gr.Image(type="filepath", image_mode=None, sources=["upload"], elem_id="vamp-png-drop",
                                    label="Drop a PNG (vamp generate, vamp serve, A1111) to load its parameters")
            with gr.Column(scale=4):
                c.update(output_controls())
        c["paths"] = gr.State([])
        wire(gen, out_dir, names, c)
    return page


def launch(page: gr.Blocks, host: str, port: int, block: bool = True):
    """Start the server (one generation at a time, in gradio's queue); returns once it is listening
    when block is False."""
    page.queue(default_concurrency_limit=1, max_size=64)
    return page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=True,
                       share=False, inbrowser=False, quiet=True, ssr_mode=False, css=CSS,
                       theme=gr.themes.Default(**THEME_FONTS))
