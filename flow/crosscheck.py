"""Run every backend of one run on the same inputs and compare them in the integer domain.

Reference (`--reference`): qonnx's executor on the cleaned QONNX file (`qonnx`, the default), or the integer
golden model on ORT's CPU EP (`int-ort`: model.int.onnx, `flow qcdq --integer`, made when missing). Every other
backend's output codes are compared code for code. A differing code of a float backend is a **tie flip** when it is
off by one and the QONNX executor's float pre-activation sits on a rounding boundary (within TIE_TOL codes of x.5):
float executors sum in different orders (oneDNN, MLAS, cuDNN), and the hardware compares integers with thresholds,
so such a value may round either way. Against the integer reference an integer backend (FINN's models, rtlsim, the
board) has no ties: every differing code is a mismatch. Anything else is a **mismatch**: the command reports the
first tensor where the two graphs diverge and exits non-zero.

A run whose manifest has input.frame (the accelerator takes camera frames and letterboxes them in the fabric) is
checked on frames of that size: a backend whose model starts at the network's canvas gets letterbox_fixed's canvas
of each frame (the fabric letterbox's bit-exact specification), one whose model includes the letterbox gets the
frame itself (`takes_frame`); the report says which each got.
"""

from __future__ import annotations

import argparse
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from board.manifest import Manifest, load_manifest
from board.postprocess import detect_with_manifest
from flow.backends import (
    Backend,
    BrevitasBackend,
    IntORTBackend,
    LayerCut,
    ORTBackend,
    QONNXBackend,
)
from flow.errors import FlowError
from flow.samples import as_frame, sample_frames, sample_images, to_nchw_float

# Largest distance (in output codes) from a .5 boundary that float summation order can plausibly bridge. The
# pre-activations are sums of up to 9*208 products in float32 (relative error ~1e-6 of the sum of magnitudes).
# Measured on 4w4a/8w8a at 416: layer-isolated tie flips sit within 1e-6 codes of the boundary (CPU and CUDA).
PROVIDERS = [
    "flow.importer:crosscheck_backends",  # an imported run: the user's original file on its own inputs
    "flow.hw.finn_backend:crosscheck_backends",  # FINN intermediate models (python execution)
    "flow.hw.rtlsim:crosscheck_backends",  # the generated RTL in Verilator
    "flow.boardsim:crosscheck_backends",  # the simulated board overlay (packing + DMA path)
]
TIE_TOL = 2.0**-10
REFERENCES = ("qonnx", "int-ort")


@dataclass
class Comparison:
    elements: int = 0
    tie_flips: int = 0
    mismatches: int = 0
    max_abs_diff: int = 0
    detections_equal: bool = True
    max_tie_distance: float = 0.0  # largest |pre - x.5| (codes) among the tie flips: how close to the boundary
    examples: list = field(default_factory=list)

    @property
    def bit_exact(self) -> bool:
        return self.tie_flips == 0 and self.mismatches == 0


def classify(ref: np.ndarray, got: np.ndarray, ref_pre: np.ndarray | None) -> Comparison:
    """Compare integer codes; ref_pre = the reference's pre-rounding value in code units (same shape) or None."""
    if ref.shape != got.shape:
        raise FlowError(f"output shape {list(got.shape)} differs from the reference's {list(ref.shape)}")
    diff = got.astype(np.int64) - ref.astype(np.int64)
    idx = np.flatnonzero(diff)
    c = Comparison(elements=int(ref.size), max_abs_diff=int(np.abs(diff).max(initial=0)))
    if idx.size == 0:
        return c
    d = diff.flat[idx]
    if ref_pre is None:
        tie = np.zeros(idx.size, bool)
    else:
        pre = ref_pre.reshape(-1)[idx]
        dist = np.abs(np.abs(pre - np.floor(pre)) - 0.5)
        tie = (np.abs(d) == 1) & (dist <= TIE_TOL)
        c.max_tie_distance = float(dist[tie].max(initial=0.0))
    c.tie_flips, c.mismatches = int(tie.sum()), int((~tie).sum())
    for i in idx[~tie][:5]:
        pos = np.unravel_index(i, ref.shape)
        c.examples.append({"index": [int(p) for p in pos], "reference": int(ref.flat[i]), "backend": int(got.flat[i]),
                           "reference_pre": None if ref_pre is None else float(ref_pre.reshape(-1)[i])})
    return c


def same_detections(ref_codes: np.ndarray, got_codes: np.ndarray, manifest: Manifest) -> bool:
    """Decode + NMS both (NCHW codes -> the board's NHWC) and require identical boxes, scores and classes."""
    for r, g in zip(ref_codes, got_codes, strict=True):
        a = detect_with_manifest(r.transpose(1, 2, 0), manifest)
        b = detect_with_manifest(g.transpose(1, 2, 0), manifest)
        if a.shape != b.shape or not np.array_equal(a, b):
            return False
    return True


def first_divergence(ref: QONNXBackend, other: Backend, x: np.ndarray, manifest: Manifest) -> dict | None:
    """Walk the reference graph in order and name the first tensor whose value differs in `other`."""
    theirs = other.tensors(x[:1]) if other is not None else None
    if theirs is None:
        return None
    ours = ref.tensors(x[:1])
    producers = {o: n for n in ref.model.graph.node for o in n.output}
    their_producers = _producers_of(other)
    for node in ref.model.graph.node:
        for t in node.output:
            if t not in theirs or t not in ours:
                continue
            a, b = np.asarray(ours[t], np.float64), np.asarray(theirs[t], np.float64)
            if a.shape != b.shape:
                return {"tensor": t, "node": producers[t].name, "op": producers[t].op_type,
                        "reason": f"shape {list(a.shape)} vs {list(b.shape)}"}
            tol = 1e-4 * max(1.0, float(np.abs(a).max(initial=0)))
            err = float(np.abs(a - b).max(initial=0))
            if err > tol:
                theirs_node = their_producers.get(t)
                return {"tensor": t, "node": producers[t].name, "op": producers[t].op_type,
                        "backend_node": theirs_node, "max_abs_diff": err, "tolerance": tol,
                        "differing_elements": int((np.abs(a - b) > tol).sum())}
    return {"tensor": None, "reason": "no shared intermediate tensor differs; the difference is at the output"}


def _producers_of(backend: Backend) -> dict:
    path = getattr(backend, "path", None)
    if path is None:
        return {}
    import onnx

    return {o: f"{n.name} ({n.op_type})" for n in onnx.load(str(path)).graph.node for o in n.output}


def brevitas_layer_codes(backend: BrevitasBackend, ref: QONNXBackend, x: np.ndarray) -> dict[str, np.ndarray]:
    """Brevitas activation-quantizer outputs, named after the matching QONNX Quant node outputs (same order)."""
    import torch

    mods = [m for m in backend.model.modules() if hasattr(m, "act_quant") and type(m).__name__.startswith("Quant")]
    outs = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o.detach().numpy())) for m in mods]
    try:
        with torch.no_grad():
            backend.model(torch.from_numpy(x[:1]))
    finally:
        for h in hooks:
            h.remove()
    names = [n.output[0] for n in ref.model.graph.node
             if n.op_type == "Quant" and ref.model.get_initializer(n.input[0]) is None]
    return dict(zip(names, outs, strict=False))


def layer_report(ref: QONNXBackend, others: list[Backend], x: np.ndarray) -> dict:
    """Every activation quantizer's codes, reference vs each backend that exposes intermediate tensors."""
    quants = [n for n in ref.model.graph.node if n.op_type == "Quant" and ref.model.get_initializer(n.input[0]) is None]
    report = {}
    for b in others:
        theirs = brevitas_layer_codes(b, ref, x) if isinstance(b, BrevitasBackend) else b.tensors(x[:1])
        if not theirs:
            continue
        rows = {}
        for img in range(len(x)):
            ours = ref.tensors(x[img : img + 1])
            if img and isinstance(b, BrevitasBackend):
                theirs = brevitas_layer_codes(b, ref, x[img : img + 1])
            elif img:
                theirs = b.tensors(x[img : img + 1])
            for n in quants:
                t = n.output[0]
                if t not in theirs:
                    continue
                s = float(np.asarray(ref.model.get_initializer(n.input[1])).reshape(-1)[0])
                pre = np.asarray(ours[n.input[0]], np.float64) / s
                c = classify(np.round(ours[t] / s).astype(np.int64), np.round(theirs[t] / s).astype(np.int64),
                             pre if np.asarray(ref.model.get_initializer(n.input[1])).size == 1 else None)
                r = rows.setdefault(n.name, {"tensor": t, "elements": 0, "tie_flips": 0, "mismatches": 0})
                r["elements"] += c.elements
                r["tie_flips"] += c.tie_flips
                r["mismatches"] += c.mismatches
        report[b.name] = rows
    return report


def layer_boundaries(ref: QONNXBackend) -> list[LayerCut]:
    """Each conv -> its activation quantizer, in graph order, with the scales of the codes going in and out."""
    m = ref.model

    def scale_of(quant) -> float:
        s = np.asarray(m.get_initializer(quant.input[1]), np.float64).reshape(-1)
        return float(s[0]) if s.size == 1 else float("nan")  # per-channel: no single code unit

    out = []
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    for i, conv in enumerate(convs):
        node = conv
        while node is not None and node.op_type != "Quant":
            node = m.find_consumer(node.output[0])
        if node is None:
            raise FlowError(f"{ref.path}: no activation quantizer after {conv.name}; not an lpyolo-flow graph")
        src = m.find_producer(conv.input[0])  # the max pool or quantizer before the conv; None: raw pixels
        pixels = 1.0  # or, in an imported model trained on pixels / 255, the Mul that scales them (flow/importer.py)
        while src is not None and src.op_type != "Quant":
            init = m.get_initializer(src.input[1]) if src.op_type == "Mul" else None
            if init is not None and np.size(init) == 1 and m.find_producer(src.input[0]) is None:
                pixels = float(np.asarray(init).reshape(-1)[0])
            src = m.find_producer(src.input[0])
        out.append(LayerCut(i, conv.input[0], node.output[0], pixels if src is None else scale_of(src), scale_of(node)))
    return out


def isolated_layers(ref: QONNXBackend, backend: Backend, x: np.ndarray) -> dict | None:
    """Run each layer of `backend` alone on the reference's input to that layer and classify its output codes.

    End-to-end, a tie flip in one layer moves the next layer's sums by a whole code and so shows up downstream as
    ordinary-looking +-1 differences. In isolation every layer must be exact up to ties; if so, the end-to-end
    differences are propagated tie flips, not a fault. The layers run on the whole batch at once, as the end-to-end
    run did: some executors pick different kernels (and so summation orders) for different batch sizes.
    None when the backend cannot run single layers.
    """
    cuts = layer_boundaries(ref)
    if any(np.isnan(c.out_scale) for c in cuts):
        return None
    per_image = [ref.tensors(x[i : i + 1]) for i in range(len(x))]
    quant = {c.out_name: ref.model.find_producer(c.out_name) for c in cuts}  # its input: the pre-activation
    needed = {t for c in cuts for t in (c.in_name, c.out_name, quant[c.out_name].input[0])}
    ctx = {t: np.concatenate([p[t] for p in per_image]) for t in needed}
    rows: dict[str, dict] = {}
    for cut in cuts:
        got = backend.run_layer(cut, ctx[cut.in_name])
        if got is None:
            return None
        s = cut.out_scale
        c = classify(np.round(ctx[cut.out_name] / s).astype(np.int64), np.round(got / s).astype(np.int64),
                     np.asarray(ctx[quant[cut.out_name].input[0]], np.float64) / s)
        rows[f"conv{cut.index}"] = {"quantizer": quant[cut.out_name].name, "elements": c.elements,
                                    "tie_flips": c.tie_flips, "mismatches": c.mismatches,
                                    "max_tie_distance": c.max_tie_distance}
    return rows


def explained_by_ties(*isos: dict | None) -> bool:
    """Layer by layer, only ties differ, and some do (zero ties cannot explain an end-to-end difference)."""
    if any(iso is None for iso in isos):
        return False
    rows = [r for iso in isos for r in iso.values()]
    return not any(r["mismatches"] for r in rows) and sum(r["tie_flips"] for r in rows) > 0


def provided_backends(run_dir: Path, options: dict) -> list[Backend]:
    out = []
    for target in PROVIDERS:
        module, func = target.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue  # that stage is not in this checkout
            raise
        out += getattr(mod, func)(Path(run_dir), options)
    return out


def pick_device(device: str, allow_cpu_fallback: bool) -> str:
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        msg = (f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA EP (providers: "
               f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a GPU machine")
        if not allow_cpu_fallback:
            raise FlowError(msg + ", or pass --allow-cpu-fallback")
        print(f"warning: {msg}; falling back to the CPU EP as asked")
        return "cpu"
    return device


def input_frames(manifest: Manifest, n_real: int, n_random: int, seed: int) -> tuple[np.ndarray, str]:
    """For a frame run: (N, height, width, 3) uint8 camera frames of the manifest's input.frame, made from the
    pictures `input_batch` letterboxes (the built-in val split's, else scikit-image's photos), then random pixels."""
    frame = manifest.input.frame
    source = "skimage photos"
    try:
        from flow.train.data import val_pictures

        real = [as_frame(p, frame) for p in val_pictures(n_real)] if n_real else []
        real = np.stack(real) if real else np.zeros((0, frame[1], frame[0], 3), np.uint8)
        source = "built-in val split"
    except (ImportError, FileNotFoundError, FlowError):
        real = sample_frames(frame, n_real, 0, seed)
    rnd = sample_frames(frame, 0, n_random, seed)
    return np.concatenate([real, rnd]), f"{len(real)} real ({source}) + {n_random} random, as {frame[0]}x{frame[1]} frames"


def canvases(frames: np.ndarray, size: int) -> np.ndarray:
    """letterbox_fixed of each frame: what the fabric letterbox hands the network (NHWC uint8)."""
    from board.preprocess import letterbox_fixed

    return np.stack([letterbox_fixed(f, size) for f in frames])


def takes_frame(backend: Backend, manifest: Manifest) -> bool:
    """Whether `backend` runs the letterbox itself, so it gets the camera frame instead of the canvas: it says so
    (`takes_frame`, e.g. the simulated board of a frame build), or its model's input (`in_shape`, FINN's models)
    has the frame's shape rather than the canvas's. A frame run whose FINN build has no letterbox yet is fed
    canvases."""
    frame = manifest.input.frame
    if frame is None:
        return False
    if getattr(backend, "takes_frame", False):
        return True
    shape = getattr(backend, "in_shape", None)
    return shape is not None and list(shape[1:]) in ([frame[1], frame[0], 3], [3, frame[1], frame[0]])


def input_batch(manifest: Manifest, n_real: int, n_random: int, seed: int) -> tuple[np.ndarray, str]:
    """Real images of the built-in val split when it exists, else photos scikit-image ships; then random pixels.
    For a frame run: letterbox_fixed's canvases of `input_frames`."""
    if manifest.input.frame is not None:
        frames, source = input_frames(manifest, n_real, n_random, seed)
        return to_nchw_float(canvases(frames, manifest.input.size)), source
    img, resample = manifest.input.size, manifest.input.resample
    source = "skimage photos"
    try:
        from flow.train.data import val_images

        real = val_images(img, n_real, resample=resample) if n_real else np.zeros((0, img, img, 3), np.uint8)
        source = "built-in val split"
    except (ImportError, FileNotFoundError, FlowError):
        real = sample_images(img, n_real, 0, seed, resample=resample)
    rnd = sample_images(img, 0, n_random, seed, resample=resample)
    return to_nchw_float(np.concatenate([real, rnd])), f"{len(real)} real ({source}) + {n_random} random"


def compare_board_outputs(path: Path, ref: QONNXBackend, manifest: Manifest) -> dict:
    """Saved board outputs (npz: inputs N,H,W,3 uint8; outputs N,g,g,C codes) against the golden model."""
    path = Path(path)
    if not path.is_file():
        raise FlowError(f"{path}: board output file not found")
    try:
        data = np.load(path)
        inputs, outputs = data["inputs"], data["outputs"]
    except Exception as e:  # noqa: BLE001 - zip/pickle/key errors all mean "not our file"
        raise FlowError(f"{path}: not a board output file (npz with 'inputs' and 'outputs'): {e}") from e
    want = tuple(manifest.output.accel_shape[1:])
    if inputs.dtype != np.uint8 or inputs.shape[1:] != tuple(manifest.input.accel_shape[1:]):
        raise FlowError(f"{path}: inputs are {inputs.dtype}{list(inputs.shape)}; the manifest expects uint8 "
                        f"(N, {', '.join(map(str, manifest.input.accel_shape[1:]))})")
    if outputs.shape[1:] != want or len(outputs) != len(inputs):
        raise FlowError(f"{path}: outputs have shape {list(outputs.shape)}; expected ({len(inputs)}, "
                        f"{', '.join(map(str, want))}) — wrong layout or output size from the board")
    if manifest.input.frame is not None:  # the board took frames: the reference takes the fabric letterbox's canvases
        inputs = canvases(inputs, manifest.input.size)
    x = to_nchw_float(inputs)
    ref_codes = ref.run(x)
    got = outputs.transpose(0, 3, 1, 2).astype(np.int32)
    c = classify(ref_codes, got, None)  # the board is integer hardware: any difference is a mismatch
    c.detections_equal = same_detections(ref_codes, got, manifest)
    return _row(c, {"file": str(path), "images": int(len(inputs))})


def _row(c: Comparison, info: dict) -> dict:
    return {"bit_exact": c.bit_exact, "tie_flips": c.tie_flips, "max_tie_distance": c.max_tie_distance,
            "mismatches": c.mismatches,
            "max_abs_diff": c.max_abs_diff, "elements": c.elements, "detections_equal": c.detections_equal,
            "info": info, **({"mismatch_examples": c.examples} if c.examples else {})}


def run_crosscheck(run_dir: Path, device: str = "auto", allow_cpu_fallback: bool = False, layers: bool = False,
                   n_real: int = 4, n_random: int = 2, seed: int = 0, board_outputs: Path | None = None,
                   extra_backends: list[Backend] | None = None, reference: str = "qonnx") -> dict:
    from flow.runlock import run_lock

    if n_real < 0 or n_random < 0 or n_real + n_random < 1:
        raise FlowError(f"--real {n_real} --random {n_random}: cross-check at least one image (neither negative)")
    if reference not in REFERENCES:
        raise FlowError(f"--reference {reference}: one of {', '.join(REFERENCES)}")
    run_dir = Path(run_dir)
    with run_lock(run_dir, f"python -m flow crosscheck --run {run_dir}"):
        return _run_crosscheck(run_dir, device, allow_cpu_fallback, layers, n_real, n_random, seed, board_outputs,
                               extra_backends, reference)


def _run_crosscheck(run_dir: Path, device: str, allow_cpu_fallback: bool, layers: bool, n_real: int, n_random: int,
                    seed: int, board_outputs: Path | None, extra_backends: list[Backend] | None,
                    reference: str) -> dict:
    from flow.export import check_export
    from flow.files import atomic_write_json
    from flow.intonnx import check_integer_model, lower_to_integer
    from flow.qcdq import lower_to_qcdq

    manifest = load_manifest(run_dir)
    qonnx_path, qcdq_path = run_dir / "model.qonnx.onnx", run_dir / "model.qcdq.onnx"
    if not qonnx_path.is_file():
        raise FlowError(f"{qonnx_path}: missing; run `python -m flow export --out {run_dir}` first")
    if not qcdq_path.exists():
        lower_to_qcdq(qonnx_path, qcdq_path)
    # every backend runs the run's current model: a file left from an earlier export is named, not compared
    check_export(run_dir, "manifest.json", "model.pt", "model.qcdq.onnx")
    int_path = run_dir / "model.int.onnx"
    if reference == "int-ort" and not int_path.exists():
        lower_to_integer(qonnx_path, int_path)
    if int_path.exists():
        check_integer_model(run_dir, int_path)
    frame = manifest.input.frame
    if frame is not None:
        frames, source = input_frames(manifest, n_real, n_random, seed)
        x, x_frames = to_nchw_float(canvases(frames, manifest.input.size)), to_nchw_float(frames)
    else:
        (x, source), x_frames = input_batch(manifest, n_real, n_random, seed), None
    canvas_is = f"canvas {manifest.input.size}x{manifest.input.size}" + (
        f" (letterbox_fixed of the {frame[0]}x{frame[1]} frame)" if frame else "")
    dev = pick_device(device, allow_cpu_fallback)
    # the QONNX executor: the float reference, and in every case the oracle of the float path's ties
    floatref = QONNXBackend(qonnx_path, manifest)
    t0 = time.perf_counter()
    float_codes = floatref.run(x)
    float_secs = time.perf_counter() - t0
    float_pre = floatref.pre_activation(x)
    integer: list[Backend] = []
    if int_path.exists():
        integer = [IntORTBackend(int_path, manifest, "cpu")] + ([IntORTBackend(int_path, manifest, "cuda")]
                                                               if dev == "cuda" else [])
    backends: list[Backend] = []
    if (run_dir / "model.pt").exists():
        backends.append(BrevitasBackend(run_dir, manifest))
    if reference == "int-ort":
        ref = integer.pop(0)
        t0 = time.perf_counter()
        ref_codes = ref.run(x)
        ref_secs = time.perf_counter() - t0
        backends.append(floatref)
    else:
        ref, ref_codes, ref_secs = floatref, float_codes, float_secs
    report = {"run": str(run_dir), "variant": manifest.variant, "reference": ref.name,
              "reference_kind": REFERENCE_KINDS[reference], "inputs": source, "tie_tolerance_codes": TIE_TOL,
              "tie_classification": TIE_CLASSIFICATION[reference],
              "backends": {ref.name: {"reference": True, "seconds": round(ref_secs, 3), "input": canvas_is}}}
    if frame is not None:
        report["frame"] = list(frame)
    backends.append(ORTBackend(qcdq_path, manifest, "cpu"))
    if dev == "cuda":
        backends.append(ORTBackend(qcdq_path, manifest, "cuda"))
    backends += integer
    backends += provided_backends(run_dir, {"manifest": manifest, "device": dev})
    backends += extra_backends or []

    failing = []
    explained: dict[str, np.ndarray] = {}  # outputs of backends whose differences are ties, isolated layer by layer
    iso_ref = None  # against the integer reference: its own layers isolated on the QONNX executor's inputs
    for b in backends:
        on_frames = takes_frame(b, manifest)
        t0 = time.perf_counter()
        got = float_codes if b is floatref else b.run(x_frames if on_frames else x)
        secs = float_secs if b is floatref else time.perf_counter() - t0
        strict = reference == "int-ort" and b.exact_integer  # integer against integer: no tie can excuse a code
        c = classify(ref_codes, got, None if strict else float_pre)
        c.detections_equal = same_detections(ref_codes, got, manifest)
        iso = None
        if c.mismatches:  # layer by layer against the QONNX executor: where a fault is, or that only ties differ
            iso = {} if b is floatref else isolated_layers(floatref, b, x)
        isos = [iso]
        if c.mismatches and reference == "int-ort" and not strict:
            # a float backend against the integer golden: its layers match the float graph's up to ties, and the
            # integer golden's layers match the float graph's up to ties
            iso_ref = isolated_layers(floatref, ref, x) if iso_ref is None else iso_ref
            isos.append(iso_ref)
        propagated, same_as = 0, None
        if iso is None and c.mismatches and not strict:
            # A backend that cannot run one layer alone (the stitched RTL) but writes exactly the codes of one whose
            # differences are explained has those same differences: the same ties, propagated.
            same_as = next((k for k, v in explained.items() if np.array_equal(v, got)), None)
        if (not strict and explained_by_ties(*isos)) or same_as:
            # every layer is exact up to ties on its own: the output differences are those ties, propagated
            propagated, c.mismatches, c.examples = c.mismatches, 0, []
            explained[b.name] = got
        row = _row(c, {**b.info(), "exact_integer": b.exact_integer, "seconds": round(secs, 3)})
        row["input"] = f"frame {frame[0]}x{frame[1]}" if on_frames else canvas_is
        row["propagated_tie_flips"] = propagated
        if same_as:
            row["same_codes_as"] = same_as
        row["bit_exact"] = c.bit_exact and not propagated
        row["compared_as"] = "integer (bit for bit)" if strict else "float (ties classified)"
        if iso:
            row["isolated_layers"] = iso
        if len(isos) > 1 and isos[1] is not None:
            row["isolated_layers_of_reference"] = isos[1]
        if c.mismatches:
            failing.append(b.name)
            img = c.examples[0]["index"][0]  # the first image with a mismatching code: image 0 may be clean
            # a backend on frames has no tensor of the reference's graph before its letterbox: none to walk
            row["first_divergence"] = None if on_frames else first_divergence(floatref, b, x[img : img + 1], manifest)
            if iso is not None:
                row["first_mismatching_layer"] = next((k for k, r in iso.items() if r["mismatches"]), None)
        report["backends"][b.name] = row
    if board_outputs:
        row = compare_board_outputs(board_outputs, ref, manifest)
        report["backends"]["board-outputs"] = row
        if row["mismatches"]:
            failing.append("board-outputs")
    if layers:
        report["layers"] = layer_report(floatref, [b for b in backends if b is not floatref and
                                                   not takes_frame(b, manifest)], x)
    rows = [r for r in report["backends"].values() if not r.get("reference")]
    report["all_bit_exact"] = all(r["bit_exact"] for r in rows)
    report["any_mismatch"] = bool(failing)
    report["mismatching_backends"] = failing
    atomic_write_json(run_dir / "crosscheck.json", report)
    return report


REFERENCE_KINDS = {
    "qonnx": "float: qonnx's executor on model.qonnx.onnx (rounds acc * scale + bias)",
    "int-ort": "integer: model.int.onnx on ORT (FINN's integer accumulators and thresholds, the hardware's arithmetic)",
}
TIE_CLASSIFICATION = {
    "qonnx": "every backend: an off-by-one code on a .5 boundary of the QONNX executor's pre-activation is a tie",
    "int-ort": "float backends only (ties from the QONNX executor's pre-activations); integer backends bit for bit",
}


def print_report(report: dict) -> None:
    from rich.table import Table

    from flow.terminal import console as terminal_console

    t = Table(title=f"cross-check {report['variant']} vs {report['reference']} ({report['inputs']})")
    for col in ("backend", "bit exact", "tie flips (+propagated)", "mismatches", "max |diff|", "elements", "same boxes", "where"):
        t.add_column(col)
    for name, r in report["backends"].items():
        if r.get("reference"):
            t.add_row(name, "reference", "", "", "", "", "", "")
            continue
        info = r["info"]
        where = info.get("provider", "") + (f" {info['ort_optimization_level']}" if "ort_optimization_level" in info else "")
        where = (where + (f" same codes as {r['same_codes_as']}" if "same_codes_as" in r else "")).strip()
        if "frame" in report:  # which input each got: the frame (letterbox inside) or the canvas
            where = (where + (" on frames" if r.get("input", "").startswith("frame") else " on canvases")).strip()
        t.add_row(name, "[green]yes[/]" if r["bit_exact"] else ("[yellow]ties[/]" if not r["mismatches"] else "[red]no[/]"),
                  f"{r['tie_flips']} (+{r.get('propagated_tie_flips', 0)})", str(r["mismatches"]),
                  str(r["max_abs_diff"]), str(r["elements"]),
                  "yes" if r["detections_equal"] else "no", where or info.get("file", ""))
    console = terminal_console(130)
    console.print(t)
    console.print(f"reference {report['reference']}, {report.get('reference_kind', '')}; tie classification: "
                  f"{report.get('tie_classification', '')}")
    for name, r in report["backends"].items():
        div = r.get("first_divergence")
        if div:
            layer = r.get("first_mismatching_layer")
            if layer:
                console.print(f"[red]{name}[/]: {layer} is not exact even on the reference's input (layer-isolated run)")
            console.print(f"[red]{name}[/]: first divergence at tensor {div.get('tensor')} "
                          f"(node {div.get('node')}, {div.get('op')}; theirs: {div.get('backend_node')}) {div.get('reason', '')}")
    verdict = "MISMATCH in " + ", ".join(report["mismatching_backends"]) if report["any_mismatch"] else (
        "all bit-exact" if report["all_bit_exact"] else "no mismatch (tie flips only)")
    console.print(f"verdict: {verdict}; written {report['run']}/crosscheck.json")


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow crosscheck", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="run directory (model.qonnx.onnx + manifest.json)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="ORT EP for the QCDQ backend")
    p.add_argument("--allow-cpu-fallback", action="store_true", help="with --device cuda and no GPU, use the CPU EP")
    p.add_argument("--layers", action="store_true", help="also compare every activation quantizer")
    p.add_argument("--real", type=int, default=4, help="real images")
    p.add_argument("--random", type=int, default=2, help="random-pixel images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--board-outputs", type=Path, help="raw outputs saved on the board (npz) to compare bit-exactly")
    p.add_argument("--reference", choices=REFERENCES, default="qonnx",
                   help="qonnx: the float QONNX executor (ties classified); int-ort: the integer golden model "
                   "(model.int.onnx, made when missing), which the hardware must match bit for bit")
    a = p.parse_args(argv)
    report = run_crosscheck(a.run, a.device, a.allow_cpu_fallback, a.layers, a.real, a.random, a.seed, a.board_outputs,
                            reference=a.reference)
    print_report(report)
    return 1 if report["any_mismatch"] else 0


def _throughput(fn, x: np.ndarray, min_seconds: float = 2.0, max_reps: int = 50) -> float:
    fn(x[:1])  # warm-up (session init, allocator)
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps and (reps == 0 or time.perf_counter() - t0 < min_seconds):
        fn(x)
        reps += 1
    return reps * len(x) / (time.perf_counter() - t0)


def bench(argv: list[str]) -> int:
    """Throughput of each backend on the 4W4A model (images/s at batch 1 and 32) as a ratio to float ORT (the float
    preset's graph on the ORT CPU EP) measured in the same process, then the full cross-check at that size."""
    import tempfile

    from rich.table import Table

    from flow.export import export_run
    from flow.intonnx import lower_to_integer
    from flow.qcdq import lower_to_qcdq
    from flow.terminal import console as terminal_console
    from models import PRESETS

    p = argparse.ArgumentParser(prog="python -m flow bench crosscheck", description=bench.__doc__)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--variant", default="4w4a", choices=list(PRESETS))
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", type=Path, help="keep the run directories here (default: a temporary folder)")
    p.add_argument("--reference", choices=REFERENCES, default="qonnx", help="the cross-check's reference")
    a = p.parse_args(argv)
    root = Path(a.out or tempfile.mkdtemp(prefix="bench-crosscheck-"))
    runs = {}
    for variant in ("float", a.variant):
        d = root / variant
        if not (d / "manifest.json").exists():
            export_run(d, variant, a.img)
        if not (d / "model.qcdq.onnx").exists():
            lower_to_qcdq(d / "model.qonnx.onnx", d / "model.qcdq.onnx")
        if variant != "float" and not (d / "model.int.onnx").exists():
            lower_to_integer(d / "model.qonnx.onnx", d / "model.int.onnx")
        runs[variant] = d
    dev = pick_device(a.device, allow_cpu_fallback=False)
    m = load_manifest(runs[a.variant])
    float_ort = ORTBackend(runs["float"] / "model.qcdq.onnx", load_manifest(runs["float"]), "cpu", name="float-ort-cpu")
    backends = [float_ort, BrevitasBackend(runs[a.variant], m), QONNXBackend(runs[a.variant] / "model.qonnx.onnx", m),
                ORTBackend(runs[a.variant] / "model.qcdq.onnx", m, "cpu"), IntORTBackend(runs[a.variant] / "model.int.onnx", m)]
    if dev == "cuda":
        backends.append(ORTBackend(runs[a.variant] / "model.qcdq.onnx", m, "cuda"))
        backends.append(IntORTBackend(runs[a.variant] / "model.int.onnx", m, "cuda"))
    x1 = to_nchw_float(sample_images(a.img, 1, 0, resample=m.input.resample))
    x32 = to_nchw_float(sample_images(a.img, 8, 24, resample=m.input.resample))
    table = Table(title=f"backend throughput, {a.variant} at {a.img}x{a.img} (ratio = images/s / float ORT's)")
    for col in ("backend", "batch 1 img/s", "ratio", "batch 32 img/s", "ratio", "where"):
        table.add_column(col)
    base = {}
    for b in backends:
        per_image = isinstance(b, QONNXBackend)  # qonnx executes image by image: batch 32 = 32 x batch 1
        t1 = _throughput(b.run, x1, min_seconds=1.0 if per_image else 2.0, max_reps=3 if per_image else 50)
        t32 = None if per_image else _throughput(b.run, x32, max_reps=10)
        if b is float_ort:
            base = {"1": t1, "32": t32}
        where = b.info().get("provider", b.info().get("torch", ""))
        table.add_row(b.name, f"{t1:.1f}", f"{t1 / base['1']:.3f}", "per-image executor" if t32 is None else f"{t32:.1f}",
                      "" if t32 is None else f"{t32 / base['32']:.3f}", str(where))
    terminal_console(130).print(table)
    report = run_crosscheck(runs[a.variant], device=dev, n_real=4, n_random=2, reference=a.reference)
    print_report(report)
    return 1 if report["any_mismatch"] else 0
