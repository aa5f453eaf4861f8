"""Brevitas -> QONNX -> qonnx cleanup -> `model.qonnx.onnx` + `manifest.json` (the host/board contract).

Runs the TorchScript exporter (`dynamo=False`, opset 13): Brevitas's QONNX export is stable there on torch 2.13,
and FINN's importer expects that graph shape. The input carries no Quant node: it is declared UINT8 (raw pixels),
so FINN sees integer input and the ARM only letterboxes.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from board.manifest import InputSpec, Manifest, OutputSpec, Packing
from board.postprocess import DECODE_VERSION
from flow.errors import FlowError
from flow.files import atomic_write_bytes, read_checkpoint, sha256
from flow.samples import sample_images, to_nchw_float
from models import PRESETS, QuantSpec, build_model, spec_for
from models.lpyolo import STRIDE, spec_hash

INPUT_NAME, OUTPUT_NAME = "global_in", "global_out"
# The camera frame a bilinear-exact model's accelerator takes by default: VGA, what the PYNQ-Z2 notebooks' USB
# camera and MJPEG files give; the letterbox in the fabric resizes it to the network's canvas.
DEFAULT_FRAME = (640, 480)
EXACT_RESAMPLE = "bilinear-exact"  # the fabric letterbox's arithmetic: the only resample a frame build can have
RUN_FILES = ("model.qonnx.onnx", "manifest.json", "model.pt")  # what export and import write into a run folder


class ExportError(FlowError):
    pass


def written_by_flow(run_dir: Path, names=RUN_FILES) -> set[str]:
    """Those of `names` in run_dir that the flow wrote itself and nobody changed since (their provenance records;
    an export stopped by a full disk or a kill recorded each file it finished)."""
    from flow.provenance import ours

    def mine(name: str) -> bool:
        try:
            return ours(Path(run_dir) / name)
        except FlowError:  # an unreadable provenance.json vouches for nothing
            return False

    return {n for n in names if mine(n)}


def refuse_to_overwrite(run_dir: Path, names=RUN_FILES, force: bool = False) -> None:
    """Before anything is written: a model, checkpoint or manifest in run_dir that the flow did not write itself
    (or that changed since) is the user's, and is not replaced unless force."""
    present = [n for n in names if (Path(run_dir) / n).exists()]
    foreign = sorted(set(present) - written_by_flow(run_dir, names))
    if foreign and not force:
        raise ExportError(f"{run_dir}: {', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not the flow's own "
                          "output (not recorded with this content in the run's provenance.json), so nothing was written; "
                          "choose another --out, or pass --force (make: FORCE=1) to replace "
                          f"{'it' if len(foreign) == 1 else 'them'}")


def load_checkpoint(path: Path, variant: str | None = None, img: int | None = None):
    """A training checkpoint -> (model in eval mode, spec). A checkpoint of another variant is refused."""
    path = Path(path)
    if path.is_dir():  # a run folder: its best checkpoint
        found = [path / n for n in ("best.pt", "last.pt", "model.pt") if (path / n).is_file()]
        if not found:
            raise ExportError(f"{path}: a folder without best.pt, last.pt or model.pt; give the checkpoint file")
        path = found[0]
    try:
        ckpt = read_checkpoint(path)
    except FlowError as e:
        raise ExportError(str(e)) from e.__cause__
    if "spec" not in ckpt:
        raise ExportError(f"{path}: not an lpyolo-flow checkpoint (no 'spec' entry)")
    spec = QuantSpec.from_json(ckpt["spec"])
    if variant is not None and spec.name.split("+")[0] != variant:
        raise ExportError(f"{path}: checkpoint is variant {spec.name!r}, but --variant {variant} was asked; "
                          f"drop --variant or pick the matching checkpoint")
    if img is not None and img != spec.img:
        import dataclasses

        spec = dataclasses.replace(spec, img=img).validate()  # convs are size-agnostic; the grid follows
    model = build_model(spec)
    state = ckpt.get("ema") or ckpt["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ExportError(f"{path}: weights do not fit spec {spec.describe()}: {str(e).splitlines()[0]}") from e
    return model.eval(), spec


@torch.no_grad()
def calibrate(model, images_nhwc: np.ndarray, steps: int = 8):
    """Fresh model -> BN running statistics and activation scales collected from real images (train-mode passes)."""
    model.train()
    x = torch.from_numpy(to_nchw_float(images_nhwc))
    for _ in range(steps):
        model(x)
    return model.eval()


def fresh_model(spec: QuantSpec, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(spec, collect_stats_steps=4)
    return calibrate(model, sample_images(spec.img, n_real=6, n_random=2, seed=seed, resample=spec.resample), steps=8)


def _strip_metadata(model_proto: onnx.ModelProto) -> None:
    """torch's exporter stores Python stack traces with local paths in node metadata: drop them (reproducible files)."""
    model_proto.doc_string = ""
    del model_proto.metadata_props[:]
    for node in model_proto.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]


def export_qonnx(model, spec: QuantSpec, path: Path) -> Path:
    """Brevitas model -> cleaned QONNX file with UINT8 input annotation and fixed tensor names."""
    from brevitas.export import export_qonnx as brevitas_export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    model = model.eval()
    dummy = torch.zeros(1, 3, spec.img, spec.img)
    with tempfile.TemporaryDirectory() as td, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(td) / "raw.onnx"
        brevitas_export_qonnx(model, args=dummy, export_path=str(raw), dynamo=False, opset_version=13,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        mw = ModelWrapper(str(raw))
    mw = cleanup_model(mw)
    mw.set_tensor_datatype(INPUT_NAME, DataType["UINT8"])
    _strip_metadata(mw.model)
    onnx.checker.check_model(mw.model)
    atomic_write_bytes(path, mw.model.SerializeToString())
    return Path(path)


def parse_frame(text: str | None, resample: str) -> tuple[int, int] | None:
    """--frame: "WxH" (the accelerator takes W x H camera frames and letterboxes them in the fabric), "none" (it
    takes the letterboxed canvas, the ARM letterboxes), or not given: DEFAULT_FRAME for a bilinear-exact model,
    none for the others (their resize is not the fabric's)."""
    if text is None:
        return DEFAULT_FRAME if resample == EXACT_RESAMPLE else None
    if text.strip().lower() == "none":
        return None
    w, sep, h = text.strip().lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ExportError(f"--frame {text!r}: give the camera frame as WIDTHxHEIGHT (e.g. 640x480), or none")
    if resample != EXACT_RESAMPLE:
        raise ExportError(f"--frame {text}: the fabric letterbox computes {EXACT_RESAMPLE}, but this model was "
                          f"trained with {resample!r} resizes; pass --frame none (the ARM letterboxes), or train "
                          f"with --resample {EXACT_RESAMPLE}")
    return int(w), int(h)


def make_manifest(spec: QuantSpec, output_scale: float, qonnx_path: Path, source: str,
                  frame: tuple[int, int] | None = None) -> Manifest:
    g = spec.grid
    return Manifest(
        variant=spec.name, spec=spec.to_json(), spec_hash=spec_hash(spec),
        input=InputSpec(size=spec.img, resample=spec.resample, name=INPUT_NAME, frame=frame),
        output=OutputSpec(grid=g, channels=spec.num_outputs, bits=spec.output_bits, signed=True, narrow=True,
                          scale=output_scale, name=OUTPUT_NAME),
        anchors=[list(a) for a in spec.anchors], stride=STRIDE,
        classes=["face"] if spec.num_classes == 1 else [f"class{i}" for i in range(spec.num_classes)],
        decode=DECODE_VERSION, packing=Packing(input_bits=8, output_bits=spec.output_bits, output_container="int8"),
        files={"qonnx": {"path": qonnx_path.name, "sha256": sha256(qonnx_path)},
               "torch": {"path": "model.pt", "sha256": sha256(qonnx_path.parent / "model.pt")}},
        source=source)


def export_run(out_dir: Path, variant: str | None = None, img: int | None = None, checkpoint: Path | None = None,
               overrides=None, seed: int = 0, force: bool = False, frame: str | None = None) -> Manifest:
    """The `export` step: checkpoint (or fresh calibrated model) -> out_dir/{model.qonnx.onnx, manifest.json, model.pt}.

    A checkpoint brings its own variant and input size; variant/img given with one are checks (img: re-size,
    the convolutions do not depend on it). Without a checkpoint they default to 4w4a at 416. frame: --frame's text
    (`parse_frame`), written as the manifest's input.frame. Files in out_dir that the flow did not write are refused
    (`refuse_to_overwrite`) unless force."""
    from flow.provenance import record
    from flow.runlock import run_lock

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: an existing file, not a run folder")
    if img is not None and (img <= 0 or img % STRIDE):
        raise ExportError(f"--img {img}: not a positive multiple of {STRIDE} (the network's stride)")
    refuse_to_overwrite(out_dir, force=force)
    if checkpoint:
        model, spec = load_checkpoint(checkpoint, variant=variant, img=img)
        if overrides:  # the checkpoint's weights were trained at its own bit widths: other ones are a new model
            asked = spec_for(spec.name.split("+")[0], img=spec.img, overrides=overrides, anchors=spec.anchors)
            if [list(asked.weight_bits), list(asked.act_bits)] != [list(spec.weight_bits), list(spec.act_bits)]:
                raise ExportError(f"{checkpoint}: --override {','.join(overrides)} asks for other bit widths than "
                                  f"the checkpoint was trained with ({spec.describe()}); drop --override, or train "
                                  "with it (`python -m flow train --override ...`)")
        source = f"checkpoint:{Path(checkpoint).name}"
        command = f"python -m flow export --checkpoint {checkpoint} --out {out_dir}"
    else:
        spec = spec_for(variant or "4w4a", img=img or 416, overrides=overrides)
        model = None
        source = f"calibrated:seed={seed}"
        command = (f"python -m flow export --variant {variant or '4w4a'} --img {spec.img} --seed {seed} --out {out_dir}"
                   + "".join(f" --override {o}" for o in overrides or ()))
    input_frame = parse_frame(frame, spec.resample)  # a bad --frame is refused before any work
    if frame is not None:
        command += f" --frame {frame}"
    model = model if model is not None else fresh_model(spec, seed=seed)
    with run_lock(out_dir, command, create=True):
        (out_dir / "model.qcdq.onnx").unlink(missing_ok=True)  # the replaced model's lowering: stale
        qonnx_path = export_qonnx(model, spec, out_dir / "model.qonnx.onnx")
        record(qonnx_path, [Path(checkpoint)] if checkpoint else [], command, source=source)
        # The exact torch model behind the export, so the cross-check's Brevitas backend runs the same weights.
        buf = _torch_bytes({"spec": spec.to_json(), "model": model.state_dict()})
        atomic_write_bytes(out_dir / "model.pt", buf)
        record(out_dir / "model.pt", [qonnx_path], command)
        manifest = make_manifest(spec, model.output_scale(), qonnx_path, source, input_frame)
        manifest.write(out_dir / "manifest.json")
        record(out_dir / "manifest.json", [qonnx_path], command)
    return manifest


def check_export(run_dir: Path, *names: str) -> None:
    """model.pt / manifest.json / model.qcdq.onnx of run_dir must be made from its current model.qonnx.onnx."""
    from flow.provenance import check

    run_dir = Path(run_dir)
    qonnx = run_dir / "model.qonnx.onnx"
    remake = {"model.qcdq.onnx": f"python -m flow qcdq {qonnx} {run_dir / 'model.qcdq.onnx'}"}
    for name in names:
        if (run_dir / name).exists():
            check(run_dir / name, [qonnx], remake.get(name))


def _torch_bytes(obj) -> bytes:
    import io

    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


FRAME_HELP = (f"the camera frame the accelerator takes and letterboxes in the fabric, WIDTHxHEIGHT (default "
              f"{DEFAULT_FRAME[0]}x{DEFAULT_FRAME[1]} for a {EXACT_RESAMPLE} model), or none: it takes the canvas and "
              "the ARM letterboxes (always so for other resamples)")


def cli(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m flow export", description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=list(PRESETS), help="preset; default: the checkpoint's, or 4w4a")
    p.add_argument("--img", type=int, help="input size, a multiple of 32; default: the checkpoint's, or 416")
    p.add_argument("--checkpoint", type=Path, help="training checkpoint; without it a fresh BN-calibrated model")
    p.add_argument("--override", action="append", help="per-layer bits, e.g. conv3.w=2,conv5.a=3 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="run directory to write model.qonnx.onnx + manifest.json")
    p.add_argument("--force", action="store_true", help="replace a model/manifest in --out that the flow did not write")
    p.add_argument("--frame", metavar="WxH|none", help=FRAME_HELP)
    a = p.parse_args(argv)
    m = export_run(a.out, a.variant, a.img, a.checkpoint, a.override, a.seed, force=a.force, frame=a.frame)
    where = (f"the accelerator letterboxes {m.input.frame[0]}x{m.input.frame[1]} frames" if m.input.frame else
             "the ARM letterboxes")
    print(f"exported {m.variant} ({m.source}; {where}) -> {a.out / 'model.qonnx.onnx'}, {a.out / 'manifest.json'}")
    return 0
