"""The WIDER FACE reader against hand-written annotation files, and the built-in set."""

import numpy as np
import pytest

from flow.train.builtin import synth_dataset
from flow.train.wider import AnnotationError, read_wider_annotations


def _tree(tmp_path, text, images=("0--Parade/a.jpg", "0--Parade/b.jpg", "0--Parade/c.jpg")):
    root = tmp_path / "images"
    for name in images:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"jpg")
    txt = tmp_path / "gt.txt"
    txt.write_text(text)
    return txt, root


GOOD = (
    "0--Parade/a.jpg\n2\n10 20 30 40 1 0 0 0 0 0 \n5 5 0 0 0 0 0 0 0 0\n"  # trailing space; a zero-size box
    "0--Parade/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n"  # 0 faces, still followed by one dummy line
    "0--Parade/c.jpg  \n1\n1 2 3 4 0 0 0 1 0 0\n"  # invalid=1; trailing spaces after the name
)


def test_reader_handles_every_quirk(tmp_path):
    txt, root = _tree(tmp_path, GOOD)
    a, b, c = read_wider_annotations(txt, root)
    assert a.path == root / "0--Parade/a.jpg"
    assert a.boxes.tolist() == [[10, 20, 30, 40]] and a.ignore.tolist() == [[5, 5, 0, 0]]
    assert a.attrs[0, 0] == 1  # blur of the valid face kept
    assert len(b.boxes) == 0 and len(b.ignore) == 0
    assert len(c.boxes) == 0 and c.ignore.tolist() == [[1, 2, 3, 4]]


def test_small_faces_go_to_ignore(tmp_path):
    txt, root = _tree(tmp_path, GOOD)
    a, _, _ = read_wider_annotations(txt, root, min_size=35)
    assert len(a.boxes) == 0 and len(a.ignore) == 2  # 30 px wide: below the filter, ignored not dropped


@pytest.mark.parametrize("text, line, needle", [
    ("0--Parade/a.jpg\nabc\n", 2, "expected a face count"),
    ("0--Parade/a.jpg\n1\n10 20 x 40 0 0 0 0 0 0\n", 3, "is not `x1 y1 w h"),
    ("0--Parade/a.jpg\n2\n10 20 30 40 0 0 0 0 0 0\n", 2, "announces 2 faces"),  # at the count
    ("0--Parade/zzz.jpg\n1\n10 20 30 40 0 0 0 0 0 0\n", 1, "not found"),
])
def test_malformed_input_names_file_and_line(tmp_path, text, line, needle):
    txt, root = _tree(tmp_path, text)
    with pytest.raises(AnnotationError, match=needle) as e:
        read_wider_annotations(txt, root)
    assert f"{txt}:{line}:" in str(e.value)


def test_skip_bad_warns_with_a_count_and_keeps_the_rest(tmp_path):
    text = GOOD + "0--Parade/zzz.jpg\n1\n10 20 30 40 0 0 0 0 0 0\n0--Parade/a.jpg\nfour\n"
    txt, root = _tree(tmp_path, text)
    with pytest.warns(UserWarning, match="skipped 2 bad entries"):
        samples = read_wider_annotations(txt, root, skip_bad=True)
    assert len(samples) == 3


def test_builtin_set_is_deterministic_and_in_wider_format(tmp_path):
    from flow.train.wider import load_split

    a = synth_dataset(tmp_path / "a", seed=3, n_train=6, n_val=3, size=96)
    b = synth_dataset(tmp_path / "b", seed=3, n_train=6, n_val=3, size=96)
    for rel in ("wider_face_split/wider_face_train_bbx_gt.txt", "wider_face_split/wider_face_val_bbx_gt.txt"):
        assert (a / rel).read_text() == (b / rel).read_text()
    train, val = load_split(a, "train"), load_split(a, "val")
    assert len(train) == 6 and len(val) == 3
    first = train[0].path.relative_to(a / "WIDER_train" / "images")
    assert (b / "WIDER_train/images" / first).read_bytes() == train[0].path.read_bytes()
    faces = np.concatenate([s.boxes for s in train + val if len(s.boxes)])
    assert len(faces) > 0 and (faces[:, 2:] >= 14).all()
    mtime = (a / "builtin.json").stat().st_mtime
    synth_dataset(tmp_path / "a", seed=3, n_train=6, n_val=3, size=96)  # cached: not regenerated
    assert (a / "builtin.json").stat().st_mtime == mtime


def test_a_face_count_too_large_is_reported_at_the_count_and_loses_nothing_else(tmp_path):
    text = ("0--Parade/a.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\n"  # announces 3, gives 2
            "0--Parade/b.jpg\n1\n10 20 30 40 0 0 0 0 0 0\n")
    txt, root = _tree(tmp_path, text)
    with pytest.raises(AnnotationError, match="announces 3 faces but only 2 face lines follow") as e:
        read_wider_annotations(txt, root)
    assert f"{txt}:2:" in str(e.value) and "line 5 is the next image" in str(e.value)
    with pytest.warns(UserWarning, match="skipped 1 bad entry"):
        samples = read_wider_annotations(txt, root, skip_bad=True)
    assert [s.path.name for s in samples] == ["b.jpg"] and samples[0].boxes.tolist() == [[10, 20, 30, 40]]


@pytest.mark.parametrize("text, needle", [("", "the file is empty"), ("\n\n", "the file is empty"),
                                          ("0--Parade/zzz.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", "all 1 skipped")])
def test_an_empty_annotation_file_is_an_error_naming_it(tmp_path, text, needle):
    txt, root = _tree(tmp_path, text)
    with pytest.raises(AnnotationError, match=needle) as e:
        read_wider_annotations(txt, root, skip_bad=True)
    assert str(txt) in str(e.value)


def _dataset(tmp_path, train_text, val_text=None):
    """A WIDER-layout root whose images are real (tiny) JPEGs."""
    from PIL import Image

    root = tmp_path / "ds"
    for split, text in (("train", train_text), ("val", val_text or train_text)):
        (root / "wider_face_split").mkdir(parents=True, exist_ok=True)
        (root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text(text)
        for line in text.splitlines():
            if line.endswith(".jpg"):
                p = root / f"WIDER_{split}" / "images" / line.strip()
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(p, quality=90)
    return root


def test_a_faceless_dataset_is_an_error_naming_the_file(tmp_path):
    from flow.errors import FlowError
    from flow.train.anchors import dataset_wh
    from flow.train.wider import load_split

    root = _dataset(tmp_path, "0--Parade/a.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n0--Parade/b.jpg\n1\n1 2 3 4 0 0 0 1 0 0\n")
    with pytest.raises(AnnotationError, match="none of its 2 images has a valid face") as e:
        load_split(root, "train")
    assert "wider_face_train_bbx_gt.txt" in str(e.value)
    few = _dataset(tmp_path / "few", "0--Parade/a.jpg\n1\n1 2 30 40 0 0 0 0 0 0\n")
    with pytest.raises(FlowError, match="too few for the 3 k-means anchors") as e:  # was a raw ValueError
        dataset_wh(few, 64)
    assert "wider_face_train_bbx_gt.txt" in str(e.value)


def test_a_truncated_jpeg_is_found_by_data_check_and_skipped_with_skip_bad(tmp_path, capsys):
    from flow.train.data import cli

    root = _dataset(tmp_path, "0--Parade/a.jpg\n1\n1 2 30 40 0 0 0 0 0 0\n0--Parade/b.jpg\n1\n1 2 30 40 0 0 0 0 0 0\n")
    bad = root / "WIDER_val" / "images" / "0--Parade" / "b.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(Exception, match="cannot decode image") as e:
        cli(["check", "--data", str(root)])
    assert str(bad) in str(e.value)
    with pytest.warns(UserWarning, match="skipped 1 undecodable image"):
        assert cli(["check", "--data", str(root), "--skip-bad"]) == 0
    assert "val: 1 images" in capsys.readouterr().out
