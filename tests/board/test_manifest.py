"""board/manifest.py: the one writer and reader of manifest.json; every broken field named with its file."""

from __future__ import annotations

import dataclasses
import json

import pytest

from board.manifest import InputSpec, Manifest, ManifestError, OutputSpec, Packing, load_manifest
from board.postprocess import DECODE_VERSION


def manifest(**changes) -> Manifest:
    m = Manifest(variant="4w4a", input=InputSpec(size=64, resample="nearest"),
                 output=OutputSpec(grid=2, channels=18, bits=8, signed=True, scale=1 / 127),
                 anchors=[[10, 13], [16, 30], [33, 23]], stride=32, classes=["face"], decode=DECODE_VERSION,
                 packing=Packing(input_bits=8, output_bits=8), files={"qonnx": {"path": "model.qonnx.onnx",
                                                                                "sha256": "0" * 64}})
    return m.replace(**changes)


def written(tmp_path, m: Manifest, edit=None) -> dict:
    d = m.to_json()
    if edit:
        edit(d)
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    return d


def test_written_and_read_back_equal(tmp_path):
    m = manifest()
    m.write(tmp_path / "manifest.json")
    back = load_manifest(tmp_path)
    assert back == m and back.input.shape == [1, 3, 64, 64] and back.output.accel_shape == [1, 2, 2, 18]
    assert back.output.datatype == "INT8" and back.geometry.out_fold == 18 and back.geometry.in_fold == 3
    assert load_manifest(tmp_path / "manifest.json") == m  # the file itself, or its folder
    assert oct((tmp_path / "manifest.json").stat().st_mode & 0o777) == "0o644"


def test_a_scale_edited_by_hand_is_refused_by_name(tmp_path):
    written(tmp_path, manifest(), lambda d: d["output"].update(scale=d["output"]["scale"] * 10))
    with pytest.raises(ManifestError, match=r"manifest.json: output changed after the flow wrote this manifest"):
        load_manifest(tmp_path)
    written(tmp_path, manifest(), lambda d: d["files"]["qonnx"].update(sha256="1" * 64))
    with pytest.raises(ManifestError, match=r"files changed after the flow wrote"):
        load_manifest(tmp_path)
    # thresholds are the user's to tune: no contract
    written(tmp_path, manifest(), lambda d: d["postprocess"].update(conf_thresh=0.6))
    assert load_manifest(tmp_path).conf_thresh == 0.6


def unhashed(change):
    def edit(d):
        del d["contract_sha256"]
        change(d)
    return edit


@pytest.mark.parametrize("change, says", [
    (lambda d: d["input"].update(resample="lanczos"), r'input.resample = "lanczos" \(unknown resample; use one of: '
                                                      r"bilinear, nearest, bilinear-exact\)"),
    (lambda d: d["input"].update(shape=[1, 3, 0, 0]), r"input.shape = \[1, 3, 0, 0\] \(\[1, 3, size, size\] with a "
                                                      r"positive size\)"),
    (lambda d: d["input"].update(pad_value=0), r"input.pad_value = 0 \(this runtime letterboxes with grey 114"),
    (lambda d: d.update(stride=16), r"stride = 16 \(the network maps input 64 to a 2x2 grid: stride 32\)"),
    (lambda d: d["output"].update(scale=-0.1), r"output.scale = -0.1 \(a positive finite number\)"),
    (lambda d: d["output"].update(scale="0.1"), r'output.scale = "0.1" \(expected an integer or float\)'),
    (lambda d: d["output"].update(bits=40), r"output.bits = 40 \(1..32\)"),
    (lambda d: d["output"].update(datatype="INT4"), r"output.datatype = 'INT4' \(output.bits is 8: INT8 or UINT8\)"),
    (lambda d: d["packing"].update(output_bits=4), r"packing.output_bits = 4 \(output.bits is 8\)"),
    (lambda d: d.update(classes=["face", "hand"]), r"output.shape channels = 18 \(3 anchors x \(5 \+ 2 classes\) = 21\)"),
    (lambda d: d.update(anchors=[[10, -1]]), r"anchors = \[\[10, -1\]\] \(a non-empty list of \[w, h\] pairs"),
    (lambda d: (d.pop("anchors"), d["output"].pop("scale")), r"missing output.scale, anchors"),
])
def test_each_broken_field_is_named_with_the_file_and_what_to_run(tmp_path, change, says):
    written(tmp_path, manifest(), unhashed(change))
    with pytest.raises(ManifestError, match=says) as e:
        load_manifest(tmp_path)
    assert str(e.value).startswith(str(tmp_path / "manifest.json")) and "python -m flow export" in str(e.value)


def test_older_manifests_read_as_bilinear_and_the_writer_refuses_what_a_reader_would(tmp_path):
    written(tmp_path, manifest(), unhashed(lambda d: (d["input"].pop("resample"), d["input"].pop("pad_value"))))
    old = load_manifest(tmp_path)
    assert old.input.resample == "bilinear" and old.input.pad_value == 114
    with pytest.raises(ManifestError, match="stride = 16"):
        manifest(stride=16).write(tmp_path / "new" / "manifest.json")
    assert not (tmp_path / "new" / "manifest.json").exists()
    bad = manifest(input=dataclasses.replace(manifest().input, resample="bicubic"))
    with pytest.raises(ManifestError, match="unknown resample"):
        bad.write(tmp_path / "manifest.json")


def test_missing_or_foreign_files_say_what_to_run(tmp_path):
    with pytest.raises(ManifestError, match=r"manifest.json missing .*python -m flow export .*python -m flow deploy"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ManifestError, match="not an lpyolo-flow manifest"):
        load_manifest(tmp_path)


def test_a_frame_for_the_fabric_letterbox_is_the_accelerators_input(tmp_path):
    m = manifest(input=InputSpec(size=64, resample="nearest", frame=(640, 480)))
    m.write(tmp_path / "manifest.json")
    back = load_manifest(tmp_path)
    assert back == m and back.input.frame == (640, 480)
    assert back.input.accel_shape == [1, 480, 640, 3] and back.input.shape == [1, 3, 64, 64]
    # without a frame the key is absent, so manifests written before it keep their contract hash
    assert "frame" not in manifest().to_json()["input"]
    written(tmp_path, m, unhashed(lambda d: d["input"].update(frame=[640, 0])))
    with pytest.raises(ManifestError, match=r"input.frame = \[640, 0\] \(\[width, height\]"):
        load_manifest(tmp_path)
    written(tmp_path, m, unhashed(lambda d: d["input"].update(accel_shape=[1, 64, 64, 3])))
    with pytest.raises(ManifestError, match=r"input.accel_shape = \[1, 64, 64, 3\] \(the accelerator reads the "
                                            r"640x480 frame of input.frame"):
        load_manifest(tmp_path)
