import io
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vampdiffusion.data.images import FolderImages, ImageError, TarImages, decode, load_image, open_source


def _png(rgb=(255, 0, 0), size=(8, 6), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_folder_tree_is_found_by_id_modulo_1000(tmp_path):
    (tmp_path / "original" / "0123").mkdir(parents=True)
    (tmp_path / "original" / "0123" / "45123.png").write_bytes(_png())
    src = open_source(tmp_path)
    assert isinstance(src, FolderImages)
    ref = src.locate(45123, "png")
    assert load_image(ref).size == (8, 6) and ref.member == ""
    assert src.locate(45123, "jpg") is not None  # wrong extension in the metadata still finds the file
    assert src.locate(45124, "png") is None


def test_tar_members_are_read_by_offset_and_never_extracted(tmp_path):
    shard = tmp_path / "data-0007.tar"
    with tarfile.open(shard, "w") as tf:
        for name, data in [("1007.png", _png((0, 255, 0))), ("../../1008.png", _png()), ("notes.txt", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    src = open_source(tmp_path)
    assert isinstance(src, TarImages) and src.skipped_members == 1  # notes.txt
    ref = src.locate(1007, "png")
    assert (ref.file, ref.member) == (str(shard.resolve()), "1007.png") and ref.offset > 0
    assert load_image(ref).getpixel((0, 0)) == (0, 255, 0)
    assert load_image(src.locate(1008, "png")).size == (8, 6)  # a '../' name is only read, by offset
    assert not (tmp_path.parent.parent / "1008.png").exists() and not (tmp_path.parent / "1008.png").exists()


def test_rgba_is_composited_on_white():
    im = decode(_png((255, 0, 0, 0), mode="RGBA"))
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)


def test_gif_gives_its_first_frame():
    frames = [Image.new("P", (4, 4), c) for c in (1, 2)]
    pal = [0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (768 - 9)
    for f in frames:
        f.putpalette(pal)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode(buf.getvalue()).getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("data, reason", [(b"", "empty_image"), (b"not an image at all", "corrupt_image")])
def test_unusable_bytes_raise_with_a_reason(data, reason):
    with pytest.raises(ImageError) as e:
        decode(data)
    assert e.value.reason == reason


def test_truncated_jpeg_is_a_corrupt_image():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    with pytest.raises(ImageError) as e:
        decode(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert e.value.reason == "corrupt_image"


def test_missing_image_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --images DIR"):
        open_source(tmp_path / "nope")


def _header_prefixed_bytes():
    heads = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP", b""]
    return st.tuples(st.sampled_from(heads), st.binary(max_size=300)).map(lambda t: t[0] + t[1])


@settings(max_examples=150, deadline=None)
@given(_header_prefixed_bytes())
def test_decode_never_raises_anything_but_image_error(data):
    try:
        im = decode(data)
    except ImageError as e:
        assert e.reason in ("empty_image", "corrupt_image", "too_large")
    else:
        assert im.mode == "RGB"


# ----------------------------------------------------------------------------
# Images read as they look
# ----------------------------------------------------------------------------

def _encoded(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_16_bit_grey_png_keeps_its_grey_levels():
    levels = np.array([[0, 16448, 32896, 65535]], np.uint16)        # 0, 64, 128, 255 in 8 bits (× 257)
    im = decode(_encoded(Image.fromarray(levels)))
    assert im.mode == "RGB"
    assert np.asarray(im)[0, :, 0].tolist() == [0, 64, 128, 255]


def test_float_image_in_0_1_is_scaled_to_8_bits_and_out_of_range_is_unsupported():
    im = decode(_encoded(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), "TIFF"))
    assert np.asarray(im)[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ImageError) as e:
        decode(_encoded(Image.fromarray(np.array([[-3.0, 9e4]], np.float32)), "TIFF"))
    assert e.value.reason == "unsupported_image"


def test_exif_orientation_is_applied_before_anything_is_measured():
    im = Image.new("RGB", (8, 4), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 1, 4))                              # a blue left column
    exif = Image.Exif()
    exif[0x0112] = 6                                                 # "rotate 90° clockwise to display"
    out = decode(_encoded(im, exif=exif))
    assert out.size == (4, 8)                                        # portrait, as a viewer shows it
    assert np.asarray(out)[0, :, 2].max() > 200                     # the blue column is now the top row


def test_a_fifo_is_never_opened(tmp_path):
    import os
    os.mkfifo(tmp_path / "data-0998.tar")                            # opening it would block forever
    (tmp_path / "original" / "0123").mkdir(parents=True)
    (tmp_path / "original" / "0123" / "123.png").write_bytes(_png())
    src = open_source(tmp_path)                                      # no regular .tar: the folder tree
    assert isinstance(src, FolderImages) and src.locate(123, "png") is not None
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "data-0998.tar")
    assert e.value.reason == "not_a_file"


def test_paths_with_double_colons_are_plain_paths(tmp_path):
    folder = tmp_path / "a::b"
    folder.mkdir()
    (folder / "x.png").write_bytes(_png((1, 2, 3)))
    assert load_image(folder / "x.png").getpixel((0, 0)) == (1, 2, 3)
    shard = folder / "data-0001.tar"
    with tarfile.open(shard, "w") as tf:
        data = _png((4, 5, 6))
        info = tarfile.TarInfo("1001.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert load_image(open_source(folder).locate(1001, "png")).getpixel((0, 0)) == (4, 5, 6)


def test_a_member_whose_bytes_differ_from_the_index_is_corrupt(tmp_path):
    from vampdiffusion.data.images import ImageRef
    shard = tmp_path / "0001.tar"
    data = _png((7, 7, 7))
    with tarfile.open(shard, "w") as tf:
        info = tarfile.TarInfo("1.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    src = open_source(tmp_path)
    ref = src.locate(1, "png")
    assert load_image(ref).getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(ImageError, match="sha256 differs"):
        load_image(ImageRef(ref.file, ref.member, ref.offset, ref.size, "0" * 64))
