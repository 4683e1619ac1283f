"""`vamp eval` refuses a held-out dataset whose vocabulary is not the model's, before loading anything."""
import pytest

from vampdiffusion.cli import main
from vampdiffusion.config import Config, ModelConfig
from vampdiffusion.data.vocab import TagVocab
from vampdiffusion.generation import generate as G
from vampdiffusion.models.dit import VampDiT

TAGS = ["1girl", "solo", "gothic", "dark"]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "load_generator", lambda *a, **k: pytest.fail("loaded the model before checking"))
    cfg = Config(model=ModelConfig(patch_size=2, hidden_size=16, depth=2, num_heads=2, max_grid=4,
                                   vocab_size=4 + len(TAGS), max_tags=8, enc_dim=16, enc_depth=1, enc_heads=2))
    model, data = tmp_path / "model", tmp_path / "latents"
    VampDiT(cfg.model).save_pretrained(model, config=cfg)
    TagVocab(TAGS, [4, 3, 2, 1]).save(model / "vocab.json")
    data.mkdir()
    return model, data


def run_eval(model, data, capsys) -> tuple[int, str]:
    code = main(["eval", "--model", str(model), "--data", str(data), "--out", str(data.parent / "out")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return code, err


@pytest.mark.parametrize("tags,difference", [
    (["1girl", "gothic", "solo", "dark"], "id 5 is 'gothic' vs 'solo'"),          # same tags, other ids
    (TAGS + ["smile"], "(9 vs 8 tokens; id 8 is 'smile' vs absent)"),
])
def test_dataset_with_another_vocabulary_is_refused_naming_both_files(folders, capsys, tags, difference):
    model, data = folders
    TagVocab(tags, list(range(len(tags), 0, -1))).save(data / "vocab.json")
    code, err = run_eval(model, data, capsys)
    assert code == 2
    assert f"{data / 'vocab.json'} is not the model's vocabulary {model / 'vocab.json'}" in err and difference in err
    assert "evaluate with the dataset the model was trained on, or re-encode this one" in err


def test_dataset_without_a_vocabulary_is_refused(folders, capsys):
    model, data = folders
    code, err = run_eval(model, data, capsys)
    assert code == 2 and f"{data / 'vocab.json'} not found" in err
