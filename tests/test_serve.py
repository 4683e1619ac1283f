"""`vamp serve`: the page's logic as plain functions (no browser): autocomplete, the prompt check, the form
-> request, a dropped PNG -> the form, a generation with its routing chart, errors, and the bind address."""
import pytest
from PIL import Image

from test_generate_support import write_tiny_model
from vampdiffusion.cli import main
from vampdiffusion.generation import generate as G
from vampdiffusion.generation import serve as S


@pytest.fixture(scope="module")
def gen(tmp_path_factory, taesdxl_path):
    return G.load_generator(write_tiny_model(tmp_path_factory.mktemp("model"), taesdxl_path), device="cpu")


def test_suggestions_complete_the_tag_being_typed_most_frequent_first(gen):
    # prefix matches first, then tags holding the fragment, each in vocabulary (= frequency) order
    assert [t for _, t in S.suggest_tags(gen.vocab, "gothic, l")] == ["long_hair", "1girl", "solo", "smile",
                                                                       "low_quality"]
    assert [t for _, t in S.suggest_tags(gen.vocab, "1girl, long h")] == ["long_hair"]     # spaces = underscores
    assert [t for _, t in S.suggest_tags(gen.vocab, "o")][:3] == ["outdoors", "solo", "gothic"]  # prefix first
    assert S.suggest_tags(gen.vocab, "1girl, ") == []
    label, tag = S.suggest_tags(gen.vocab, "masterp")[0]
    assert tag == "masterpiece" and "quality 3" in label
    assert S.complete_prompt("1girl, lon", "long_hair") == "1girl, long_hair, "
    assert S.complete_prompt("lon", "long_hair") == "long_hair, "


def test_unknown_tags_are_flagged_but_not_the_one_being_typed(gen):
    assert "unknown" not in S.prompt_report(gen.vocab, "1girl, lon")
    report = S.prompt_report(gen.vocab, "1girl, mecha, lon")
    assert "unknown tags" in report and "mecha" in report and "lon" not in report.split("</span>")[0][-10:]
    assert "mecha" in S.prompt_report(gen.vocab, "1girl, mecha")
    assert "quality tier 3 (Ultra)" in S.prompt_report(gen.vocab, "masterpiece, 1girl")
    assert "negative quality 0 (Draft)" in S.prompt_report(gen.vocab, "worst quality", negative=True)
    assert "<td>3 (Ultra)</td><td>masterpiece, best_quality, amazing_quality</td>" in S.quality_table_html()


def test_the_style_mixer_controls(gen):
    names = S.cluster_names(gen.cfg)
    choices = S.style_choices(names)
    assert len(names) == 8 and choices[2].startswith("2 · ")
    assert S.style_from_form(S.AUTO_STYLE, choices[2], 0.7, choices[5], 0.3) is None
    assert S.style_from_form("mix", choices[2], 0.7, choices[5], 0.3) == {2: 0.7, 5: 0.3}
    assert S.style_from_form("mix", choices[4], 1.0, S.NO_EXPERT, 0.0) == {4: 1.0}
    with pytest.raises(ValueError, match="picked twice"):
        S.style_from_form("mix", choices[2], 0.5, choices[2], 0.5)
    with pytest.raises(ValueError, match="no expert is picked"):
        S.style_from_form("mix", S.NO_EXPERT, 1.0, S.NO_EXPERT, 0.0)


def test_the_form_becomes_a_request_with_a_drawn_seed(gen):
    form = S.Form("1girl", negative="worst quality", quality="2 (High)", seed=-1, steps=3, batch_size=2,
                  batch_count=3, size="64x64", sampler="DDIM")
    req = S.request_from_form(form, draw=lambda n: 1234)
    assert (req.seed, req.n, req.quality, req.size, req.steps, req.negative) == (1234, 6, 2, (64, 64), 3, "worst quality")
    assert S.request_from_form(S.Form("1girl", seed=7, size="64x64")).quality is None   # from the prompt
    assert S.size_choices(gen.cfg) == ["64x64"]


def test_a_generation_saves_pngs_and_the_chart_shows_the_forced_experts(gen, tmp_path):
    names = S.cluster_names(gen.cfg)
    choices = S.style_choices(names)
    done = []
    form = S.Form("1girl, solo", style_mode="mix", expert_a=choices[2], weight_a=0.7, expert_b=choices[5],
                  weight_b=0.3, seed=5, steps=2, size="64x64", batch_size=1, batch_count=2)
    paths, routing = S.run_request(gen, S.request_from_form(form), tmp_path, 1, lambda i, n: done.append((i, n)))
    assert [p.name for p in paths] == ["00000-5.png", "00001-6.png"] and done[-1] == (4, 4)
    chart = S.routing_html(routing, names)
    assert chart.count('data-expert="2" data-gate="0.700"') == 2 * len(routing["style_blocks"])  # both branches
    assert chart.count('data-expert="5" data-gate="0.300"') == 2 * len(routing["style_blocks"])
    assert 'data-style="forced"' in chart and "block 3 · quality" in chart
    # the PNG dropped back onto the page restores the form
    values = S.form_from_png(str(paths[1]), names)
    assert values["prompt"] == "1girl, solo" and values["seed"] == 6 and values["steps"] == 2
    assert (values["style_mode"], values["expert_a"], values["weight_a"]) == ("mix", choices[2], 0.7)
    assert values["expert_b"] == choices[5] and values["sampler"] == "DPM++ 2M" and values["size"] == "64x64"


def test_errors_are_shown_in_the_page_not_raised_to_the_server(gen, tmp_path):
    gr = pytest.importorskip("gradio")
    from vampdiffusion.generation.serve_ui import on_generate
    run = on_generate(gen, tmp_path, S.cluster_names(gen.cfg))
    values = list(vars(S.Form("1girl", style_mode="mix", seed=1, steps=1, size="64x64")).values())[:16]
    with pytest.raises(gr.Error, match="no expert is picked"):
        run(*values, progress=lambda *a, **k: None)
    values[13] = "72x64"
    values[3] = S.AUTO_STYLE
    with pytest.raises(gr.Error, match="multiple of 16"):
        run(*values, progress=lambda *a, **k: None)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(ValueError, match="holds no 'parameters'"):
        S.form_from_png(str(plain), S.cluster_names(gen.cfg))


def test_serve_binds_loopback_and_warns_otherwise(gen, tmp_path, monkeypatch, capsys, taesdxl_path):
    pytest.importorskip("gradio")
    from vampdiffusion.generation import serve_ui
    model = write_tiny_model(tmp_path / "model", taesdxl_path)
    calls = []
    monkeypatch.setattr(serve_ui, "launch", lambda page, host, port, block: calls.append((host, port, block)))
    assert main(["serve", "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    assert calls[-1] == ("127.0.0.1", 7860, True) and "warning" not in capsys.readouterr().out
    assert main(["serve", "--model", str(model), "--host", "0.0.0.0", "--port", "8000", "--out", str(tmp_path)]) == 0
    assert calls[-1] == ("0.0.0.0", 8000, True)
    assert "warning: listening on 0.0.0.0, not this machine only" in capsys.readouterr().out
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
