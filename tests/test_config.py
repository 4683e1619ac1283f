import pytest

from vampdiffusion.config import Config, ConfigError, config_to_dict, load_config, save_config_yaml


def test_v1_preset_equals_every_default():
    assert config_to_dict(load_config("v1")) == config_to_dict(Config())


def test_tiny_preset_keeps_the_block_pattern_and_expert_counts():
    tiny, v1 = load_config("tiny"), Config()
    assert tiny.model.num_style_experts == v1.model.num_style_experts == 8
    assert tiny.model.num_quality_experts == v1.model.num_quality_experts == 4
    assert tiny.model.depth % 4 == 0 and tiny.model.hidden_size < v1.model.hidden_size


def test_override_sets_nested_fields_with_types():
    cfg = load_config(None, ["model.depth=8", "train.phase2.lr=3e-5", "diffusion.zero_terminal_snr=false"])
    assert cfg.model.depth == 8 and cfg.train.phase2.lr == 3e-5 and cfg.diffusion.zero_terminal_snr is False


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid keys: .*depth"):
        load_config(None, ["model.detph=8"])


def test_wrong_type_is_a_clear_error():
    with pytest.raises(ConfigError, match="model.depth: expected int"):
        load_config(None, ["model.depth=eight"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  widht: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*unknown key.*widht"):
        load_config(p)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("tiny", ["model.depth=12"])
    save_config_yaml(cfg, tmp_path / "c.yaml")
    assert config_to_dict(load_config(tmp_path / "c.yaml")) == config_to_dict(cfg)


def test_a_config_file_that_is_not_yaml_or_not_utf8_is_one_line_naming_the_place(tmp_path, capsys):
    from vampdiffusion.cli import main
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  depth: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML \(line 3, column 1: expected the node"):
        load_config(broken)
    assert main(["plan", "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.yaml is not valid YAML" in err and "Traceback" not in err
    broken.write_bytes(b"model:\n  depth: \xff\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: byte 16 is not UTF-8"):
        load_config(broken)
