import pytest

from vampdiffusion.data.vocab import BOS, EOS, PAD, UNK, TagVocab, normalize_tag, parse_prompt


def test_normalize_tag_lowercases_and_joins_spaces_with_underscores():
    assert normalize_tag("  Gothic  \\(Style\\) ") == "gothic_(style)"
    assert normalize_tag("red circle") == "red_circle"
    assert normalize_tag("red__circle") == "red_circle"


def test_parse_prompt_splits_commas_and_removes_duplicates():
    assert parse_prompt("1girl, Solo, gothic \\(style\\), solo,, red circle") == ["1girl", "solo", "gothic_(style)", "red_circle"]


def _vocab() -> TagVocab:
    # a on 4 images, b and c on 2 (tie -> by name), d on 1
    return TagVocab.build([["a", "b"], ["a", "c"], ["a", "b", "c"], ["a", "d"]], min_count=2)


def test_ids_follow_frequency_then_name_after_four_special_tokens():
    v = _vocab()
    assert v.tokens == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "b", "c"]
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert v.counts[4:] == [4, 2, 2]


def test_encode_sorts_by_frequency_and_wraps_in_bos_eos():
    v = _vocab()
    assert v.encode(["c", "a", "b"]) == [BOS, 4, 5, 6, EOS]
    assert v.encode([]) == [BOS, EOS]


def test_encode_maps_unknown_tags_to_one_unk_after_known_tags():
    v = _vocab()
    assert v.encode(["zz", "c", "yy"]) == [BOS, 6, UNK, EOS]
    assert v.unknown(["ZZ", "c", "yy"]) == ["zz", "yy"]


def test_encode_truncates_rarest_first_to_max_tags():
    v = _vocab()
    assert v.encode(["c", "b", "a", "zz"], max_tags=4) == [BOS, 4, 5, EOS]


def test_pad_and_decode_roundtrip():
    v = _vocab()
    ids = v.encode_padded(["b", "a"], max_tags=6)
    assert ids == [BOS, 4, 5, EOS, PAD, PAD]
    assert v.decode(ids) == ["a", "b"]
    with pytest.raises(ValueError, match="longer than max_tags"):
        v.pad([BOS, 4, 5, EOS], 3)


def test_save_and_load_roundtrip(tmp_path):
    v = _vocab()
    v.save(tmp_path / "vocab.json")
    w = TagVocab.load(tmp_path)
    assert w.tokens == v.tokens and w.counts == v.counts and len(w) == 7
    assert w.encode_prompt("C, a") == [BOS, 4, 6, EOS]


def test_load_rejects_a_file_that_is_not_a_vocabulary(tmp_path):
    (tmp_path / "vocab.json").write_text('{"tags": ["a"]}')
    with pytest.raises(ValueError, match="not a vampdiffusion-tag-vocab-1 file"):
        TagVocab.load(tmp_path / "vocab.json")

    (tmp_path / "vocab.json").write_text('{"tags": ["a"')
    with pytest.raises(ValueError, match=r"vocab.json is not a vampdiffusion-tag-vocab-1 file \(not JSON: .*vamp data prepare"):
        TagVocab.load(tmp_path / "vocab.json")
