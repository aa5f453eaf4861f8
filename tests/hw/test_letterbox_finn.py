"""The letterbox in the fabric as a FINN node: StreamLetterbox executes as letterbox_fixed; a frame build (the
manifest's input.frame) puts it at the accelerator's input, estimates it, simulates the whole chain from camera
frames bit for bit in Verilator, sizes it in Yosys; a model trained on another resize is refused."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from board.manifest import load_manifest
from board.preprocess import letterbox_fixed
from flow.errors import FlowError

FRAME = (96, 64)  # width, height: a small camera frame for the 64x64 test model


def with_frame(run: Path, frame=FRAME, resample="bilinear-exact") -> Path:
    """The run's manifest with the fabric letterbox asked for (input.frame) and the model's resample set, recorded
    as the export's (as an export of such a model writes it)."""
    from flow.provenance import record, recorded

    m = load_manifest(run)
    m.replace(input=dataclasses.replace(m.input, frame=frame, resample=resample)).write(run / "manifest.json")
    record(run / "manifest.json", [run / "model.qonnx.onnx"], recorded(run / "manifest.json")["command"])
    return run


def letterbox_model(w: int, h: int, size: int, op: str = "StreamLetterbox"):
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    from flow.hw.compat import init_finn

    init_finn(Path("/tmp"))  # registers our ops
    node = helper.make_node(op, ["frame"], ["canvas"], name=f"{op}_0", domain="finn.custom_op.fpgadataflow"
                            + (".rtl" if op.endswith("_rtl") else ""), backend="fpgadataflow", FrameDim=[h, w], Size=size)
    graph = helper.make_graph([node], "lb", [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, h, w, 3])],
                              [helper.make_tensor_value_info("canvas", TensorProto.FLOAT, [1, size, size, 3])])
    return ModelWrapper(qonnx_make_model(graph))


@pytest.mark.parametrize("op", ["StreamLetterbox", "StreamLetterbox_rtl"])
@pytest.mark.parametrize("w, h, size", [(96, 64, 64), (37, 23, 16), (8, 6, 32)])
def test_streamletterbox_executes_as_letterbox_fixed(op, w, h, size):
    from finn.core.onnx_exec import execute_onnx
    from qonnx.custom_op.registry import getCustomOp

    from flow.hw.rtl.letterbox import Letterbox

    model = letterbox_model(w, h, size, op)
    frame = np.random.default_rng(size).integers(0, 256, (1, h, w, 3)).astype(np.uint8)
    got = execute_onnx(model, {"frame": frame.astype(np.float32)})["canvas"]
    np.testing.assert_array_equal(got[0], letterbox_fixed(frame[0], size))
    inst = getCustomOp(model.graph.node[0])
    lb = Letterbox(w, h, size)
    assert inst.get_instream_width() == inst.get_outstream_width() == 24  # the module's in0_V/out0_V
    assert inst.get_folded_input_shape()[-1] == 3 and inst.get_number_output_values() == size * size
    assert inst.get_exp_cycles() == lb.cycles() >= w * h
    assert (inst.lut_estimation(), inst.bram_estimation(), inst.dsp_estimation()) == (570, 6, 9)
    with pytest.raises(FlowError, match="not UINT8 pixels"):
        execute_onnx(model, {"frame": frame.astype(np.float32) + 0.5})


def test_letterbox_cycle_estimate_bounds_the_simulated_module():
    """The estimate (input beats + padding rows + a line) against the module in Verilator: an upper bound within 5 %
    (landscape: padding rows; portrait: padding columns; upscaling: output-bound)."""
    from flow.hw.rtl.letterbox import Letterbox, sample_frames

    for w, h, size in ((96, 64, 64), (64, 96, 64), (8, 6, 32)):
        lb = Letterbox(w, h, size)
        cycles = lb.check(sample_frames(w, h))["cycles_per_frame"][0]
        assert 0.95 * lb.cycles() <= cycles <= lb.cycles(), (w, h, cycles, lb.cycles())


def test_frame_build_refused_for_another_resample(run_4w4a, tmp_path):
    from conftest import copy_run

    from flow.hw.build import FinnConfig, run_estimate

    run = with_frame(copy_run(run_4w4a, tmp_path / "run"), resample="bilinear")
    with pytest.raises(FlowError, match=r"manifest.json: input.frame 96x64 .* 'bilinear'.*--resample bilinear-exact"
                                        r".*or build without a frame"):
        run_estimate(FinnConfig(run_dir=str(run), standalone_thresholds=True), quiet=True)
    assert not (run / "finn").exists()  # refused before the build folder is touched


def test_frame_build_at_416_takes_the_committed_folding_not_its_fifo_sizes(run_4w4a, tmp_path):
    """The committed 416 all-RTL folding applies to a frame build (the letterbox has nothing to fold); the FIFO sizes
    committed beside it were made for the design without the letterbox (other FIFOs), so 32-deep FIFOs until
    `python -m flow fifos` sizes the frame build's own."""
    from flow.hw.commands import _config, _parser
    from flow.hw.foldings import committed_folding, fifos_beside

    m = load_manifest(run_4w4a)
    folding = committed_folding("4w4a", 416, True)
    assert folding.exists() and fifos_beside(folding).exists()
    for frame, fifos in ((None, str(fifos_beside(folding))), ((640, 480), None)):
        run = tmp_path / str(frame)
        m.replace(input=dataclasses.replace(m.input, size=416, frame=frame, resample="bilinear-exact"),
                  output=dataclasses.replace(m.output, grid=13)).write(run / "manifest.json")
        cfg = _config(_parser("python -m flow estimate").parse_args(["--run", str(run), "--standalone-thresholds"]))
        assert cfg.folding == str(folding) and cfg.fifo_config == fifos


@pytest.fixture(scope="module")
def frame_build(run_4w4a, tmp_path_factory):
    """The 64x64 4w4a run with input.frame 96x64, all-RTL estimate: (run folder, estimate summary)."""
    from conftest import copy_run

    from flow.hw.build import FinnConfig, run_estimate

    run = with_frame(copy_run(run_4w4a, tmp_path_factory.mktemp("frame_build") / "run"))
    return run, run_estimate(FinnConfig(run_dir=str(run), standalone_thresholds=True), quiet=True)


def test_frame_build_estimate_counts_the_letterbox(frame_build):
    from flow.deploy import make_deploy
    from flow.hw.rtl.letterbox import Letterbox
    from flow.hw.rtlgen import load_hw_model

    run, est = frame_build
    model = load_hw_model(run)
    ops = [n.op_type for n in model.graph.node if n.op_type != "StreamingFIFO_rtl"]
    assert ops[0] == "StreamLetterbox_rtl" and ops.count("StreamLetterbox_rtl") == 1, ops[:3]
    assert model.get_tensor_shape(model.graph.input[0].name) == [1, 64, 96, 3]  # the accelerator reads the frame
    assert not [n for n in model.graph.node if n.op_type == "Transpose"]
    lb = Letterbox(96, 64, 64)
    assert est["layers"]["StreamLetterbox_rtl_0"] == {"cycles": lb.cycles(), **lb.resources()}
    assert est["total_layers"]["DSP"] >= 9 and est["total_layers"]["BRAM_18K"] >= 6 and est["fits"]
    assert est["slowest_layer"] != "StreamLetterbox_rtl_0" and est["max_cycles"] > lb.cycles()
    # the cross-check's finn-hw backend runs the network of this model from the letterbox's canvas
    from flow.hw.finn_backend import crosscheck_backends
    from flow.hw.rtlsim import golden
    from flow.samples import sample_images

    hw = next(b for b in crosscheck_backends(run, {"manifest": load_manifest(run)}) if b.name == "finn-hw")
    canvases = sample_images(64, n_real=1, n_random=1, resample="bilinear-exact")
    net = strip_letterbox(model)
    _, want = golden(net, canvases.astype(np.int64), (net.graph.input[0].name, net.graph.output[0].name))
    got = hw.run(canvases.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(got, want.reshape(got.shape[0], *got.shape[2:], got.shape[1]).transpose(0, 3, 1, 2))
    # the deploy package: the manifest keeps the frame, the input words carry one RGB pixel each
    make_deploy(run)
    deployed = load_manifest(run / "deploy")
    assert deployed.input.frame == FRAME and deployed.input.accel_shape == [1, 64, 96, 3]
    assert deployed.packing.input_word_elems == 3


def strip_letterbox(model):
    """The same HW model without its letterbox node (and the FIFO before it): the network alone, reading the canvas."""
    from onnx import helper

    m = model.transform(_Copy())
    nodes = list(m.graph.node)
    k = next(i for i, n in enumerate(nodes) if n.op_type == "StreamLetterbox_rtl")
    assert all(n.op_type == "StreamingFIFO_rtl" for n in nodes[:k])
    canvas = nodes[k].output[0]
    for n in nodes[: k + 1]:
        m.graph.node.remove(n)
    shape = m.get_tensor_shape(canvas)
    for vi in [vi for vi in m.graph.value_info if vi.name == canvas]:
        m.graph.value_info.remove(vi)
    m.graph.input.remove(m.graph.input[0])
    m.graph.input.insert(0, helper.make_tensor_value_info(canvas, 1, shape))
    return m


class _Copy:
    def apply(self, model):
        return model, False


@pytest.mark.slow  # Verilator builds the whole 92-node chain: ~3 minutes
def test_rtlsim_frame_build_whole_chain_bit_exact(frame_build):
    """Camera frames through the stitched accelerator (letterbox + FINN's dataflow) in Verilator: every output code
    equals letterbox_fixed followed by the network's python execution; the letterbox does not set the pace."""
    from flow.hw.rtl.letterbox import sample_frames
    from flow.hw.rtl.verilator import build
    from flow.hw.rtlgen import load_hw_model, stitched_sources
    from flow.hw.rtlsim import golden, run_rtlsim, simulate

    run, est = frame_build
    r = run_rtlsim(run, frames=3)
    assert r["bit_exact"] and r["elements"] > 0 and r["slowest_node"]["name"] != "StreamLetterbox_rtl_0", r
    assert r["node_cycles_per_frame"]["StreamLetterbox_rtl_0"]["simulated"] < r["cycles_per_frame"]
    # the golden, independently: letterbox_fixed in numpy, then the network without the letterbox node
    model = load_hw_model(run)
    insts, sources = stitched_sources(model, run / "finn/rtl")
    sim = build("lpyolo_accel", sources, {}, cache=run / "finn/rtl/verilator")  # cached: the same sources
    frames = sample_frames(96, 64, seed=5)
    got, _ = simulate(sim, insts, frames.astype(np.int64), stall_pct=20)
    canvases = np.stack([letterbox_fixed(f, 64) for f in frames]).astype(np.int64)
    net = strip_letterbox(model)
    _, want = golden(net, canvases, (net.graph.input[0].name, net.graph.output[0].name))
    np.testing.assert_array_equal(got, want.reshape(got.shape))


@pytest.mark.slow  # Yosys on the whole chain
def test_synth_frame_build_sizes_the_letterbox(frame_build):
    from flow.hw.synth import run_synth

    run, _ = frame_build
    s = run_synth(run)
    lb = s["nodes"]["StreamLetterbox_rtl_0"]["yosys"]  # -nodsp, as every node there: its 9 products in LUTs
    assert lb["DSP"] == 0 and lb["BRAM_18K"] == 6 and 1000 < lb["LUT"] < 3000, lb
    assert s["total"]["BRAM_18K"] >= 6 and s["fits"], s

