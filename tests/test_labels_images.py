"""Label tables (parse/format/validate) and RGBY image reading/writing (Kaggle PNG, HPAv18 JPEG)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from hpa.data.images import (check_id, read_hpav18_rgby, read_kaggle_rgby, resize, to_rgb,
                             write_kaggle_rgby)
from hpa.data.labels import (format_target, from_multihot, label_matrix, parse_target, read_labels,
                             to_multihot)
from hpa.errors import HPAError


# ----------------------------------------------------------------------------- labels
def test_parse_and_format_target():
    assert parse_target("16 0") == [0, 16]
    assert parse_target("5 5 27") == [5, 27]
    assert format_target([16, 0, 16]) == "0 16"
    m = to_multihot([[0, 16], [27]])
    assert m.dtype == np.uint8 and m.shape == (2, 28) and m.sum() == 3 and m[1, 27] == 1
    assert from_multihot(m) == [[0, 16], [27]]


def _csv(tmp_path, text):
    p = tmp_path / "train.csv"
    p.write_text(text)
    return p


def test_read_labels_normalises(tmp_path):
    df = read_labels(_csv(tmp_path, "Id,Target\na,16 0\nb,25\n"))
    assert df["Target"].tolist() == ["0 16", "25"] and df["labels"].tolist() == [[0, 16], [25]]
    y = label_matrix(df)
    assert y.shape == (2, 28) and np.flatnonzero(y[0]).tolist() == [0, 16]


@pytest.mark.parametrize("row, message", [
    ("b,x 1", "row 3 (Id b): label 'x' is not an integer"),
    ("b,", "row 3 (Id b): empty Target"),
    ("b,28", "row 3 (Id b): label 28 outside 0-27"),
    ("b,3 -1", "row 3 (Id b): label -1 outside 0-27"),
    ("a,3", "duplicate Id 'a' at row 3"),
    (",3", "empty Id at row 3"),
])
def test_read_labels_bad_rows_name_the_row(tmp_path, row, message):
    p = _csv(tmp_path, f"Id,Target\na,0\n{row}\n")
    with pytest.raises(HPAError) as e:
        read_labels(p)
    assert str(e.value) == f"{p}: {message}"


def test_read_labels_missing_column_and_file(tmp_path):
    p = _csv(tmp_path, "Id,Labels\na,0\n")
    with pytest.raises(HPAError) as e:
        read_labels(p)
    assert str(e.value) == f"{p}: missing column(s) Target (found: Id, Labels)"
    with pytest.raises(HPAError, match=r"nope.csv: file not found"):
        read_labels(tmp_path / "nope.csv")


def test_real_train_csv(shared_hpa):
    from hpa.classes import TRAIN_COUNTS
    y = label_matrix(read_labels(shared_hpa / "train.csv"))
    assert y.shape == (31072, 28) and y.sum(axis=0).tolist() == list(TRAIN_COUNTS)


# ----------------------------------------------------------------------------- Kaggle PNGs
@pytest.fixture
def sample(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    write_kaggle_rgby(tmp_path, "abc", img)
    return tmp_path, img


def test_write_read_round_trip(sample):
    d, img = sample
    assert sorted(p.name for p in d.iterdir()) == [f"abc_{c}.png" for c in ("blue", "green", "red", "yellow")]
    np.testing.assert_array_equal(read_kaggle_rgby(d, "abc"), img)
    np.testing.assert_array_equal(cv2.imread(str(d / "abc_blue.png"), cv2.IMREAD_UNCHANGED), img[..., 2])
    small = read_kaggle_rgby(d, "abc", 16)
    assert small.shape == (16, 16, 4) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, cv2.resize(img, (16, 16), interpolation=cv2.INTER_AREA))


def test_missing_channel(sample):
    d, _ = sample
    (d / "abc_yellow.png").unlink()
    with pytest.raises(HPAError) as e:
        read_kaggle_rgby(d, "abc")
    assert str(e.value) == f"{d / 'abc_yellow.png'}: missing channel file"


def test_truncated_png(sample):
    d, _ = sample
    data = (d / "abc_green.png").read_bytes()
    (d / "abc_green.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(HPAError) as e:
        read_kaggle_rgby(d, "abc")
    assert str(e.value) == f"{d / 'abc_green.png'}: unreadable or truncated image"


def test_rgb_png_refused(sample):
    d, img = sample
    cv2.imwrite(str(d / "abc_red.png"), img[..., :3])
    with pytest.raises(HPAError) as e:
        read_kaggle_rgby(d, "abc")
    assert str(e.value) == f"{d / 'abc_red.png'}: expected a single-channel (grayscale) PNG, found 3 channels"


def test_16bit_png_scaled_to_8bit(sample):
    d, img = sample
    deep = (img[..., 1].astype(np.uint16) << 8) | 0xFF
    cv2.imwrite(str(d / "abc_green.png"), deep)
    out = read_kaggle_rgby(d, "abc")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], img[..., 1])


def test_wrong_size_channel_is_resized(sample):
    d, img = sample
    big = cv2.resize(img[..., 3], (64, 64), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(d / "abc_yellow.png"), big)
    out = read_kaggle_rgby(d, "abc")                    # size None: follow the red channel (32)
    assert out.shape == (32, 32, 4)
    np.testing.assert_array_equal(out[..., :3], img[..., :3])
    np.testing.assert_array_equal(out[..., 3], cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA))
    assert resize(img, 48).shape == (48, 48, 4) and resize(img[..., 0], 8).shape == (8, 8)


def test_bad_ids_and_arrays(tmp_path):
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(HPAError, match="is not a plain file-name stem"):
            check_id(bad)
    with pytest.raises(HPAError, match=r"x: expected an HxWx4 uint8 image, got \(8, 8, 3\) uint8"):
        write_kaggle_rgby(tmp_path, "x", np.zeros((8, 8, 3), np.uint8))


def test_to_rgb_adds_yellow_to_red_and_green():
    img = np.zeros((1, 1, 4), np.uint8)
    img[0, 0] = [10, 20, 30, 100]
    assert to_rgb(img)[0, 0].tolist() == [60, 70, 30]


# ----------------------------------------------------------------------------- HPAv18 JPEGs
@pytest.mark.parametrize("image_id, full", [("89_B5_1", 1728), ("800_A6_1", 2048)])
def test_hpav18_reader_on_real_images(shared_hpa, image_id, full):
    d = shared_hpa / "real-samples" / "hpav18"
    img = read_hpav18_rgby(d, image_id, 64)
    assert img.shape == (64, 64, 4) and img.dtype == np.uint8

    def plane(stain, k):
        jpg = cv2.imread(str(d / f"{image_id}_{stain}.jpg"), cv2.IMREAD_COLOR)
        assert jpg.shape == (full, full, 3)
        return cv2.resize(jpg[..., k], (64, 64), interpolation=cv2.INTER_AREA).astype(float)

    corr = lambda a, b: np.corrcoef(a.ravel().astype(float), b.ravel())[0, 1]
    assert corr(img[..., 2], plane("blue", 0)) > 0.99   # blue stain: BGR plane 0
    assert corr(img[..., 0], plane("red", 2)) > 0.99    # red stain: BGR plane 2
    assert corr(img[..., 1], plane("green", 1)) > 0.99  # green stain: BGR plane 1
    assert img[..., 3].mean() > 5                       # yellow (mean of R and G) is not empty
    assert corr(img[..., 3], (plane("yellow", 2) + plane("yellow", 1)) / 2) > 0.99
    assert corr(img[..., 0], img[..., 2]) < 0.9         # channels are different stains


def test_hpav18_missing_file(tmp_path):
    with pytest.raises(HPAError) as e:
        read_hpav18_rgby(tmp_path, "1_A1_1", 32)
    assert str(e.value) == f"{tmp_path / '1_A1_1_red.jpg'}: missing channel file"


# ----------------------------------------------------------------------------- strict labels (issue 17)
@pytest.mark.parametrize("target, message", [
    ("+3", "label '+3' is not an integer (ASCII digits 0-9 only)"),
    ("３", "label '３' is not an integer (ASCII digits 0-9 only)"),      # full-width: int() reads it as 3
    ("²", "label '²' is not an integer (ASCII digits 0-9 only)"),       # isdigit() is True, int() fails
    ("1 ٣", "label '٣' is not an integer (ASCII digits 0-9 only)"),     # Arabic-Indic three
    ("3\t5", "labels must be separated by single spaces, found '3\\t5'"),
    ("3  5", "labels must be separated by single spaces, found '3  5'"),
    (" 3", "labels must be separated by single spaces, found ' 3'"),
    ("3\u00a05", "labels must be separated by single spaces, found '3\\xa05'"),
])
def test_labels_are_ascii_digits_separated_by_single_spaces(tmp_path, target, message):
    with pytest.raises(HPAError) as e:
        parse_target(target, "W")
    assert str(e.value) == f"W: {message}"
    p = _csv(tmp_path, f'Id,Target\na,0\nb,"{target}"\n')
    with pytest.raises(HPAError) as e:
        read_labels(p)
    assert str(e.value) == f"{p}: row 3 (Id b): {message}"


def test_real_label_files_follow_the_strict_format(shared_hpa):
    """The real train.csv and the HPAv18 label file are ASCII digits and single spaces throughout."""
    assert len(read_labels(shared_hpa / "HPAv18RBGY_wodpl.csv")) == 74606
