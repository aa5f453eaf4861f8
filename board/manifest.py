"""manifest.json, the contract between the host flow and the board: its one writer and its one reader.

`Manifest` (with `InputSpec`: what the accelerator takes, and `OutputSpec`: what it gives back) is built by the
flow's export, import and deploy and written with `Manifest.write`; every reader (the board runtime, the
simulated overlay, the cross-check, FINN's steps, deploy) gets it from `load_manifest`, which checks each field
against the schema below and names the file and the field of anything missing, mistyped or out of range.

The writer records a sha256 of each contract section (`contract_sha256`): a section edited by hand afterwards (an
output scale multiplied by 10, a stride, a model hash) is refused by name instead of decoding garbage on the board.
Manifests from before a field existed still read: no `input.resample` is bilinear (the only resample there was), no
`input.pad_value` is 114, no `contract_sha256` is not checked.

Standard library only: it ships to the board (Python 3.10 on PYNQ 3.0.1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FORMAT, VERSION, FILENAME = "lpyolo-flow-manifest", 1, "manifest.json"
RESAMPLES = ("bilinear", "nearest", "bilinear-exact")  # board/preprocess.py implements these
PAD_VALUE = 114  # YOLOv5's grey, the letterbox's padding
CONTRACT = ("variant", "spec", "input", "output", "anchors", "stride", "classes", "decode", "packing", "files")
WHAT_TO_RUN = ("write it again with `python -m flow export` / `python -m flow import` (a run folder) or "
               "`python -m flow deploy` (a deploy folder) rather than by hand")


class ManifestError(ValueError):
    """manifest.json is missing, unreadable or breaks the contract; the message names the file, the field and what
    to run."""


@dataclass(frozen=True)
class InputSpec:
    """What the network reads: size x size RGB uint8 pixels, letterboxed with `resample` and padded with
    `pad_value` (board/preprocess.py), NCHW in the ONNX models. What the accelerator reads (NHWC on the stream):
    that canvas, or, where `frame` = (width, height) is set, the camera's whole frame, which a letterbox in the
    fabric in front of the network resizes to the canvas."""

    size: int
    resample: str
    name: str = "global_in"
    pad_value: int = PAD_VALUE
    datatype: str = "UINT8"
    meaning: str = "raw pixel values 0..255, letterboxed RGB"
    frame: tuple[int, int] | None = None  # (width, height) of the frames the accelerator letterboxes itself

    @property
    def shape(self) -> list[int]:  # the ONNX models' input (NCHW)
        return [1, 3, self.size, self.size]

    @property
    def accel_shape(self) -> list[int]:  # the accelerator's stream (NHWC)
        if self.frame is not None:
            return [1, self.frame[1], self.frame[0], 3]
        return [1, self.size, self.size, 3]

    def to_json(self) -> dict:
        d = {"name": self.name, "shape": self.shape, "layout": "NCHW", "accel_shape": self.accel_shape,
             "accel_layout": "NHWC", "datatype": self.datatype, "resample": self.resample,
             "pad_value": self.pad_value, "meaning": self.meaning}
        if self.frame is not None:  # absent otherwise: the manifests written before it keep their contract hash
            d["frame"] = list(self.frame)
        return d


@dataclass(frozen=True)
class OutputSpec:
    """What the accelerator writes: grid x grid x channels integer codes of `bits` (signed or not), NHWC on the
    stream; the network's value is code * scale."""

    grid: int
    channels: int
    bits: int
    signed: bool
    scale: float
    name: str = "global_out"
    narrow: bool = True
    meaning: str = "HardTanh(x/2) = code * scale"

    @property
    def datatype(self) -> str:  # FINN/QONNX's name for it
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    @property
    def shape(self) -> list[int]:
        return [1, self.channels, self.grid, self.grid]

    @property
    def accel_shape(self) -> list[int]:
        return [1, self.grid, self.grid, self.channels]

    def to_json(self) -> dict:
        return {"name": self.name, "shape": self.shape, "layout": "NCHW", "accel_shape": self.accel_shape,
                "accel_layout": "NHWC", "datatype": self.datatype, "bits": self.bits, "narrow": self.narrow,
                "scale": self.scale, "meaning": self.meaning}


@dataclass(frozen=True)
class Packing:
    """How the stream words carry the elements: bits per element and elements per word (FINN's folding of the
    first and last layer, which deploy reads off the built design; unset: one pixel / one output row per word)."""

    input_bits: int = 8
    output_bits: int = 8
    output_container: str = "int8"
    input_word_elems: int | None = None
    output_word_elems: int | None = None

    def to_json(self) -> dict:
        d = {"input_bits": self.input_bits, "output_bits": self.output_bits, "output_container": self.output_container}
        d.update({k: v for k, v in (("input_word_elems", self.input_word_elems),
                                    ("output_word_elems", self.output_word_elems)) if v is not None})
        return d


@dataclass(frozen=True)
class StreamGeometry:
    """Bits and elements per stream word at the accelerator's input and output."""

    in_bits: int
    in_fold: int
    out_bits: int
    out_fold: int
    out_signed: bool


@dataclass(frozen=True)
class Manifest:
    variant: str
    input: InputSpec
    output: OutputSpec
    anchors: list
    stride: int
    classes: list
    decode: str
    packing: Packing
    files: dict = field(default_factory=dict)  # name -> {"path", "sha256"}: the files this manifest describes
    source: str = ""
    spec: dict | None = None  # the QuantSpec (models/lpyolo.py) of an exported model; None for an imported one
    spec_hash: str | None = None
    conf_thresh: float = 0.25
    iou_thresh: float = 0.45
    imported: dict | None = None  # `flow import`'s record ("import" in the file)
    path: Path | None = field(default=None, compare=False)  # where it was read from (for messages)

    @property
    def geometry(self) -> StreamGeometry:
        p = self.packing
        return StreamGeometry(p.input_bits, p.input_word_elems or 3, p.output_bits,
                              p.output_word_elems or self.output.channels, self.output.signed)

    def replace(self, **changes) -> Manifest:
        return dataclasses.replace(self, **changes)

    def with_files(self, **entries: dict) -> Manifest:
        return self.replace(files={**self.files, **entries})

    def to_json(self) -> dict:
        d = {"format": FORMAT, "version": VERSION, "variant": self.variant, "spec": self.spec,
             "spec_hash": self.spec_hash, "input": self.input.to_json(), "output": self.output.to_json(),
             "anchors": [[float(v) for v in a] for a in self.anchors], "stride": self.stride,
             "classes": list(self.classes), "decode": self.decode,
             "postprocess": {"conf_thresh": self.conf_thresh, "iou_thresh": self.iou_thresh},
             "packing": self.packing.to_json(), "files": {k: dict(v) for k, v in self.files.items()},
             "source": self.source}
        if self.imported is not None:
            d["import"] = self.imported
        d["contract_sha256"] = contract_hashes(d)
        return d

    def write(self, path: Path) -> Path:
        """Atomically (temp file + rename, so a reader never sees half a manifest); checked first, as a reader
        would check it."""
        path = Path(path)
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        parse(json.loads(text), path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")  # the flow's temp-file names
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def contract_hashes(d: dict) -> dict:
    """sha256 of each contract section's canonical JSON (postprocess thresholds are the user's to tune: not in it)."""
    return {k: hashlib.sha256(json.dumps(d.get(k), sort_keys=True).encode()).hexdigest() for k in CONTRACT}


def load_manifest(path) -> Manifest:
    """A manifest file, or the manifest.json of a run or deploy folder -> Manifest, checked; ManifestError names
    the file and every field that is missing, mistyped or out of range, and what to run."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / FILENAME
    if not path.is_file():
        beside = path.parent / "model.qonnx.onnx"
        hint = (f"if {beside} was made elsewhere, `python -m flow import {beside} --out NEW_RUN` makes a run folder "
                "of it (shapes, scales and anchors, checked)" if beside.is_file() else
                f"`python -m flow export --out {path.parent}` (our models) or `python -m flow import MODEL.onnx "
                f"--out {path.parent}` (a QONNX model from elsewhere) make a run folder, `python -m flow deploy "
                "--run RUN` a deploy folder")
        raise ManifestError(f"{path}: manifest.json missing (no manifest to read); {hint}")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e}); {WHAT_TO_RUN}") from e
    return parse(d, path)


def parse(d, path: Path) -> Manifest:
    """The schema: a JSON object -> Manifest, or one ManifestError listing every problem."""
    if not isinstance(d, dict) or d.get("format", FORMAT) != FORMAT:
        raise ManifestError(f"{path}: not an lpyolo-flow manifest (no \"format\": \"{FORMAT}\"); {WHAT_TO_RUN}")
    missing, bad = [], []

    def get(key: str, kind, check=None, why: str = "", default=...):
        cur = d
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                if default is not ...:
                    return default
                missing.append(key)
                return None
            cur = cur[part]
        if not isinstance(cur, kind) or (kind is not bool and isinstance(cur, bool)):
            bad.append(f"{key} = {json.dumps(cur)[:60]} (expected {_kind_name(kind)})")
            return None
        if check is not None:
            try:
                ok = bool(check(cur))
            except (TypeError, ValueError, IndexError):
                ok = False
            if not ok:
                bad.append(f"{key} = {json.dumps(cur)[:60]} ({why})")
                return None
        return cur

    positive = (lambda v: v > 0), "a positive integer"
    variant = get("variant", str)
    size = get("input.shape", list, lambda s: len(s) == 4 and s[1] == 3 and s[2] == s[3] and _pos_int(s[2]),
               "[1, 3, size, size] with a positive size")
    accel_in = get("input.accel_shape", list, None)
    resample = get("input.resample", str, lambda r: r in RESAMPLES, f"unknown resample; use one of: {', '.join(RESAMPLES)}",
                   default="bilinear")
    pad = get("input.pad_value", int, lambda v: v == PAD_VALUE,
              f"this runtime letterboxes with grey {PAD_VALUE}, as training did", default=PAD_VALUE)
    frame = get("input.frame", list, lambda f: len(f) == 2 and all(_pos_int(v) for v in f),
                "[width, height] of the frames the fabric letterboxes, positive integers", default=None)
    in_dtype = get("input.datatype", str, lambda t: t == "UINT8", "the accelerator reads UINT8 pixels")
    oshape = get("output.shape", list, lambda s: len(s) == 4 and _pos_int(s[1]) and s[2] == s[3] and _pos_int(s[2]),
                 "[1, channels, grid, grid]")
    accel_out = get("output.accel_shape", list, None)
    bits = get("output.bits", int, lambda b: 1 <= b <= 32, "1..32")
    odtype = get("output.datatype", str, lambda t: t.startswith(("INT", "UINT")), "INTn or UINTn")
    scale = get("output.scale", (int, float), lambda s: math.isfinite(s) and s > 0, "a positive finite number")
    narrow = get("output.narrow", bool, default=True)
    anchors = get("anchors", list, lambda a: a and all(isinstance(p, list) and len(p) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in p) for p in a),
        "a non-empty list of [w, h] pairs in pixels, each positive")
    stride = get("stride", int, positive[0], positive[1])
    classes = get("classes", list, lambda c: c and all(isinstance(n, str) for n in c), "a non-empty list of names")
    decode = get("decode", str)
    packing = get("packing", dict)
    files = get("files", dict, lambda f: all(isinstance(v, dict) for v in f.values()), "name -> {path, sha256}",
                default={})
    conf = get("postprocess.conf_thresh", (int, float), lambda v: 0 <= v <= 1, "0..1", default=0.25)
    iou = get("postprocess.iou_thresh", (int, float), lambda v: 0 <= v <= 1, "0..1", default=0.45)
    pk = {}
    if packing is not None:
        pk["input_bits"] = get("packing.input_bits", int, lambda b: 1 <= b <= 8, "1..8", default=8)
        pk["output_bits"] = get("packing.output_bits", int, lambda b: 1 <= b <= 32, "1..32", default=bits or 8)
        pk["output_container"] = get("packing.output_container", str, default="int8")
        pk["input_word_elems"] = get("packing.input_word_elems", int, positive[0], positive[1], default=None)
        pk["output_word_elems"] = get("packing.output_word_elems", int, positive[0], positive[1], default=None)
    if missing or bad:
        raise ManifestError(f"{path}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + bad) + f"; {WHAT_TO_RUN}")

    # consistency of the facts with one another: the network's geometry, the datatype's name, the stream's widths
    size, channels, grid = size[2], oshape[1], oshape[2]
    signed = odtype.startswith("INT")
    want_in = [1, frame[1], frame[0], 3] if frame else [1, size, size, 3]
    if accel_in != want_in:
        bad.append(f"input.accel_shape = {accel_in} (the accelerator reads " + (
            f"the {frame[0]}x{frame[1]} frame of input.frame: {want_in})" if frame else
            f"the NHWC form of input.shape: {want_in})"))
    if accel_out != [1, grid, grid, channels]:
        bad.append(f"output.accel_shape = {accel_out} (the NHWC form of output.shape is [1, {grid}, {grid}, {channels}])")
    if stride * grid != size:
        bad.append(f"stride = {stride} (the network maps input {size} to a {grid}x{grid} grid: stride {size / grid:g})")
    if odtype != f"{'INT' if signed else 'UINT'}{bits}":
        bad.append(f"output.datatype = {odtype!r} (output.bits is {bits}: INT{bits} or UINT{bits})")
    if pk["output_bits"] != bits:
        bad.append(f"packing.output_bits = {pk['output_bits']} (output.bits is {bits})")
    if channels % len(anchors) or channels // len(anchors) != 5 + len(classes):
        bad.append(f"output.shape channels = {channels} ({len(anchors)} anchors x (5 + {len(classes)} classes) = "
                   f"{len(anchors) * (5 + len(classes))})")
    for name, fold, n in (("input", pk["input_word_elems"], 3), ("output", pk["output_word_elems"], channels)):
        if fold is not None and n % fold:
            bad.append(f"packing.{name}_word_elems = {fold} (does not divide the {n} elements per pixel)")
    recorded = d.get("contract_sha256")
    if recorded is not None:
        if not isinstance(recorded, dict):
            bad.append("contract_sha256 (expected an object of section -> sha256)")
        else:
            edited = [k for k, h in contract_hashes(d).items() if k in recorded and recorded[k] != h]
            if edited:
                bad.append(f"{', '.join(edited)} changed after the flow wrote this manifest (contract_sha256 differs)")
    if bad:
        raise ManifestError(f"{path}: " + "; ".join(bad) + f"; {WHAT_TO_RUN}")
    out_meaning = d["output"].get("meaning", OutputSpec.meaning)
    return Manifest(
        variant=variant,
        input=InputSpec(size=size, resample=resample, name=str(d["input"].get("name", InputSpec.name)), pad_value=pad,
                        datatype=in_dtype, meaning=str(d["input"].get("meaning", InputSpec.meaning)),
                        frame=tuple(frame) if frame else None),
        output=OutputSpec(grid=grid, channels=channels, bits=bits, signed=signed, scale=float(scale),
                          name=str(d["output"].get("name", OutputSpec.name)), narrow=narrow, meaning=str(out_meaning)),
        anchors=[[float(v) for v in a] for a in anchors], stride=stride, classes=list(classes), decode=decode,
        packing=Packing(**pk), files=files, source=str(d.get("source", "")), spec=d.get("spec"),
        spec_hash=d.get("spec_hash"), conf_thresh=float(conf), iou_thresh=float(iou), imported=d.get("import"),
        path=path)


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object"}
    return " or ".join(names.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))


def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
