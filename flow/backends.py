"""Executors of one run's network, behind one interface, for the cross-check and the benchmarks.

A backend takes the network input (N, 3, H, W) float32 pixel values 0..255 and returns the output's integer codes
(N, C, H/32, W/32) int32 — the accelerator's integer domain (HardTanh value = code * manifest scale).
Other stages add backends through the cross-check's PROVIDERS: `module:function(run_dir, options) -> list[Backend]`, returning []
when the run holds none of their artifacts (e.g. no FINN build yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from board.manifest import Manifest
from flow.errors import FlowError


def to_codes(values: np.ndarray, scale: float) -> np.ndarray:
    """Dequantized values -> integer codes. Exact: values are code * scale in float32, the division recovers code."""
    return np.round(np.asarray(values, np.float64) / scale).astype(np.int32)


def check_input(x: np.ndarray, shape: list[int], where: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise FlowError(f"{where}: input must be a float32 numpy array of pixel values, got {getattr(x, 'dtype', type(x))}")
    if x.ndim != 4 or list(x.shape[1:]) != list(shape[1:]):
        raise FlowError(f"{where}: input shape {list(x.shape)} does not match the model's (N, {', '.join(map(str, shape[1:]))})")


@dataclass(frozen=True)
class LayerCut:
    """One layer of the reference graph, conv `index` -> its activation quantizer, to be run alone."""

    index: int
    in_name: str  # the reference's tensor feeding the conv (dequantized, NCHW)
    out_name: str  # the tensor its activation quantizer writes
    in_scale: float  # in_name's values are integer codes times this (1.0: raw pixels)
    out_scale: float


class Backend:
    """Base: `name`, `exact_integer` (True where arithmetic is integer, e.g. FINN thresholds, RTL, the board),
    `takes_frame` (True where the backend letterboxes itself, as the fabric does: in a run whose manifest has
    input.frame it is fed (N, 3, height, width) camera frames instead of the canvas; a model input of the frame's
    shape, `in_shape`, says the same: flow.crosscheck.takes_frame)."""

    name = "backend"
    exact_integer = False
    takes_frame = False

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def info(self) -> dict:
        return {}

    def tensors(self, x: np.ndarray) -> dict[str, np.ndarray] | None:
        """All intermediate tensors by name for one input (for bisecting a mismatch); None if not exposable."""
        return None

    def run_layer(self, layer: LayerCut, x: np.ndarray) -> np.ndarray | None:
        """`layer` alone, fed x = the reference's values of layer.in_name (batch); returns this backend's values of
        layer.out_name in the reference's units and layout, or None where a backend cannot run one layer alone."""
        return None


class BrevitasBackend(Backend):
    name = "brevitas"

    def __init__(self, run_dir: Path, manifest: Manifest):
        from flow.export import load_checkpoint

        self.model, self.spec = load_checkpoint(Path(run_dir) / "model.pt")
        self.scale = manifest.output.scale
        self.shape = manifest.input.shape

    def run(self, x):
        import torch

        check_input(x, self.shape, self.name)
        with torch.no_grad():
            return to_codes(self.model(torch.from_numpy(x)).numpy(), self.scale)

    def run_layer(self, layer, x):
        import torch

        blocks = list(self.model.blocks.values())
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
            if layer.index < len(blocks):
                b = blocks[layer.index]
                return b.act(b.bn(b.conv(t))).numpy()
            return self.model.head.act(self.model.head.conv(t) * 0.5).numpy()

    def info(self):
        import torch

        return {"torch": torch.__version__, "threads": torch.get_num_threads()}


def with_shapes(model, path: Path):
    """qonnx's executor needs every tensor's shape; a QONNX file saved without annotations gets them from qonnx's
    own shape inference (the graph is not otherwise changed)."""
    from qonnx.transformation.infer_shapes import InferShapes

    names = {t for n in model.graph.node for t in n.output}
    known = {v.name for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    if names <= known:
        return model
    try:
        model = model.transform(InferShapes())
    except Exception as e:  # noqa: BLE001 - qonnx raises assorted types; the file is what the user can fix
        raise FlowError(f"{path}: tensor shapes are not annotated and qonnx cannot infer them ({type(e).__name__}: "
                        f"{e}); re-export it, or run qonnx's cleanup (`qonnx-cleanup`) on it") from e
    missing = sorted(names - {v.name for v in [*model.graph.value_info, *model.graph.output]})
    if missing:
        raise FlowError(f"{path}: no shape for tensors {', '.join(missing[:4])} even after qonnx's shape inference")
    return model


class QONNXBackend(Backend):
    """qonnx's reference executor (numpy/ORT per node) on the cleaned QONNX graph."""

    name = "qonnx"

    def __init__(self, path: Path, manifest: Manifest, name: str | None = None):
        from qonnx.core.modelwrapper import ModelWrapper

        self.path = Path(path)
        self.model = with_shapes(load_onnx_model(self.path, ModelWrapper), self.path)
        self.scale = manifest.output.scale
        self.shape = manifest.input.shape
        self.iname = self.model.graph.input[0].name
        self.oname = self.model.graph.output[0].name
        if name:
            self.name = name

    def _exec(self, x1, full=False):
        from qonnx.core.onnx_exec import execute_onnx

        return execute_onnx(self.model, {self.iname: x1}, return_full_exec_context=full)

    def run(self, x):
        check_input(x, self.shape, self.name)
        return np.concatenate([to_codes(self._exec(x[i : i + 1])[self.oname], self.scale) for i in range(len(x))])

    def tensors(self, x):
        return dict(self._exec(x[:1], full=True))

    def pre_activation(self, x):
        """Float input of the output quantizer for each image: tells whether a differing code sits on a tie."""
        node = self.model.find_producer(self.oname)
        name = node.input[0]
        return np.concatenate([self._exec(x[i : i + 1], full=True)[name] for i in range(len(x))]) / self.scale


class ORTBackend(Backend):
    """A plain ONNX file (QCDQ) on ONNX Runtime. ORT_ENABLE_BASIC: higher levels fuse QLinearConv and move ties."""

    cuda_options: dict = {}  # CUDA EP provider options beyond TF32 off

    def __init__(self, path: Path, manifest: Manifest, device: str = "cpu", name: str | None = None, batch_ok=True):
        import onnxruntime as ort

        self.path = Path(path)
        self.scale = manifest.output.scale
        self.shape = manifest.input.shape
        self.device = device
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.log_severity_level = 3
        self.level = "ORT_ENABLE_BASIC"
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21 finds CUDA/cuDNN from the nvidia-* wheels
                ort.preload_dlls()
            # TF32 off: it would change the float sums and so the ties.
            providers = [("CUDAExecutionProvider", {"use_tf32": 0, **self.cuda_options}), "CPUExecutionProvider"]
        try:
            self.sess = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # noqa: BLE001
            raise FlowError(f"{self.path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from e
        self.provider = self.sess.get_providers()[0]
        if device == "cuda" and self.provider != "CUDAExecutionProvider":
            raise FlowError(f"{self.path}: CUDA EP did not initialise (got {self.provider}); install onnxruntime-gpu "
                            "matching your CUDA, or use --device cpu")
        self._layer_sessions = {}
        self.iname = self.sess.get_inputs()[0].name
        self.batch_dim = self.sess.get_inputs()[0].shape[0]
        self.name = name or f"qcdq-ort-{'cuda' if self.provider.startswith('CUDA') else 'cpu'}"

    def run(self, x):
        check_input(x, self.shape, self.name)
        if isinstance(self.batch_dim, int) and self.batch_dim != len(x):
            outs = [self.sess.run(None, {self.iname: x[i : i + self.batch_dim]})[0] for i in range(0, len(x), self.batch_dim)]
            out = np.concatenate(outs)
        else:
            out = self.sess.run(None, {self.iname: x})[0]
        return to_codes(out, self.scale)

    def info(self):
        import onnxruntime as ort

        return {"provider": self.provider, "ort_optimization_level": self.level, "onnxruntime": ort.__version__}

    def run_layer(self, layer, x):
        import tempfile

        import onnx.utils
        import onnxruntime as ort

        in_name, out_name = key = (layer.in_name, layer.out_name)
        if key not in self._layer_sessions:
            with tempfile.TemporaryDirectory() as td:
                sub = f"{td}/layer.onnx"
                onnx.utils.extract_model(str(self.path), sub, [in_name], [out_name])
                so = ort.SessionOptions()
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
                self._layer_sessions[key] = ort.InferenceSession(sub, so, providers=self.sess.get_providers())
        return self._layer_sessions[key].run(None, {in_name: np.ascontiguousarray(x, np.float32)})[0]

    def tensors(self, x):
        import onnx
        import onnxruntime as ort

        model = onnx.shape_inference.infer_shapes(onnx.load(str(self.path)))
        known = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output)}
        have = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for t in node.output:
                if t in known and t not in have:
                    model.graph.output.append(known[t])
                    have.add(t)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(None, {self.iname: x[:1]}), strict=True))


class IntORTBackend(ORTBackend):
    """The integer golden model (model.int.onnx, `flow qcdq --integer`) on ONNX Runtime: FINN's integer
    accumulators and thresholds in standard ops, exact in float32, so integer like the hardware (no ties)."""

    exact_integer = True
    # ORT's default cuDNN algorithm is implicit precomputed GEMM (a sum of products: exact on integers below 2^24);
    # an exhaustive search may pick Winograd or FFT, whose transforms round
    cuda_options = {"cudnn_conv_algo_search": "DEFAULT"}

    def __init__(self, path: Path, manifest: dict, device: str = "cpu"):
        super().__init__(path, manifest, device, name=f"int-ort-{device}")

    def run_layer(self, layer, x):
        """Layer `layer.index` of the integer graph (conv{i} -> act{i}) fed the reference's input codes."""
        import tempfile

        import onnx.utils
        import onnxruntime as ort

        i = layer.index
        if i not in self._layer_sessions:
            graph = onnx.load(str(self.path)).graph
            conv = next((n for n in graph.node if n.name == f"conv{i}"), None)
            if conv is None:
                return None
            with tempfile.TemporaryDirectory() as td:
                onnx.utils.extract_model(str(self.path), f"{td}/layer.onnx", [conv.input[0]], [f"act{i}"])
                so = ort.SessionOptions()
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
                sess = ort.InferenceSession(f"{td}/layer.onnx", so, providers=self.sess.get_providers())
            self._layer_sessions[i] = sess
        sess = self._layer_sessions[i]
        codes = np.round(np.asarray(x, np.float64) / layer.in_scale).astype(np.float32)
        return sess.run(None, {sess.get_inputs()[0].name: codes})[0].astype(np.float64) * layer.out_scale


def load_onnx_model(path: Path, wrapper=None):
    """Load an ONNX file with a clear error for a missing, corrupt or non-ONNX file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FlowError(f"{path}: file not found")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises assorted types for garbage
        raise FlowError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    if not proto.graph.node:
        raise FlowError(f"{path}: ONNX model has no nodes")
    return wrapper(proto) if wrapper else proto
