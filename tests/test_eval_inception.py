import pytest
import torch

from vampdiffusion.evaluation.inception import (
    FIDInceptionV3, inception_features, load_inception, resolve_inception_weights, tf_avg_pool,
)

# torchvision documents inception_v3 at 27,161,264 parameters (1000 classes, with AuxLogits).
# pytorch-fid's file has no AuxLogits (conv0 768·128 + bn 2·128, conv1 128·768·25 + bn 2·768, fc 768·1000 + 1000
# = 3,326,696) and a 1008-way fc (+ 8·2048 + 8 = 16,392).
FID_INCEPTION_PARAMS = 27_161_264 - 3_326_696 + 16_392

# (key, shape) pairs of pytorch-fid's pt_inception-2015-12-05 state dict, one per block type
KNOWN_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


def test_parameter_count_matches_pytorch_fid_inception():
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == FID_INCEPTION_PARAMS


def test_state_dict_keys_and_shapes_match_pytorch_fid_layout():
    sd = FIDInceptionV3().state_dict()
    for key, shape in KNOWN_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert len([k for k in sd if k.endswith("conv.weight")]) == 94  # 94 BasicConv2d in Inception-v3


def test_tf_avg_pool_ignores_padding():
    x = torch.ones(1, 1, 5, 5)
    assert torch.equal(tf_avg_pool(x), x)


def test_forward_gives_2048_features_and_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = FIDInceptionV3().eval()
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    loaded = load_inception(path)
    images = torch.rand(1, 3, 64, 64)
    f = inception_features(loaded, images)
    assert f.shape == (1, 2048) and f.dtype == torch.float64
    assert torch.isfinite(f).all()
    with torch.no_grad():
        torch.testing.assert_close(f, model(images).double())


def test_load_names_a_missing_key(tmp_path):
    sd = FIDInceptionV3().state_dict()
    del sd["Mixed_6c.branch1x1.conv.weight"]
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="Mixed_6c.branch1x1.conv.weight"):
        load_inception(path)


def test_missing_file_resolves_to_none_and_load_says_where(tmp_path):
    assert resolve_inception_weights(tmp_path / "nope.pth") is None
    with pytest.raises(FileNotFoundError, match="eval.inception_weights"):
        load_inception(tmp_path / "nope.pth")
