"""`python -m flow deploy --run DIR [--board IP]`: the folder (and zip) a PYNQ-Z2 needs: bitfile + hwh (when a
Vivado build made them), manifest.json, the numpy-only board package, the notebooks and their README.

Without a bitfile the package still runs everywhere with the simulated overlay (it carries model.qcdq.onnx for
that); the command says plainly that the hardware files are missing and how to make them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

from board.manifest import Manifest, load_manifest
from flow.errors import FlowError

BOARD_FILES = ("__init__.py", "__main__.py", "accelerator.py", "bench.py", "display.py", "manifest.py", "packing.py",
               "pipeline.py", "postprocess.py", "preprocess.py", "sim.py", "README.md")
# setup.py, not pyproject.toml: PYNQ 3.0.1 has pip 22.0.2 and setuptools 59.6 and no internet. A pyproject.toml makes
# pip build in an isolated environment, which downloads setuptools; setuptools 59 cannot read a [project] table.
# `pip3 install --no-index --no-build-isolation .` with this file uses the board's own setuptools, offline.
BOARD_SETUP_PY = """from setuptools import setup

setup(
    name="lpyolo-board",
    version="0.1.0",
    description="LPYOLO face detector runtime for the PYNQ-Z2 (numpy + pynq; OpenCV used where present)",
    python_requires=">=3.8",
    packages=["board"],
    install_requires=["numpy"],
)
"""


def stream_folds(run_dir: Path, manifest: Manifest) -> dict:
    """Elements per stream word at the accelerator's input and output, read off the folded FINN model; first, the
    output datatype FINN's last node streams must be the manifest's, which the board unpacks (bits and sign)."""
    models = sorted((run_dir / "finn" / "intermediate_models").glob("*_fifo_depths.onnx"))
    if not models:
        return {}
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    m = ModelWrapper(str(models[-1]))
    first, last = getCustomOp(m.graph.node[0]), getCustomOp(m.graph.node[-1])
    dt, out = last.get_output_datatype(), manifest.output
    if dt.bitwidth() != out.bits or dt.signed() != out.signed:
        raise FlowError(f"{run_dir / 'manifest.json'}: output.datatype {out.datatype} ({out.bits} bits, "
                        f"{'signed' if out.signed else 'unsigned'}), but FINN's last node {m.graph.node[-1].name} in "
                        f"{models[-1]} streams {dt.name}: the board would unpack other bits than the accelerator "
                        f"sends; rebuild from this run's model (`python -m flow estimate --run {run_dir}`, then "
                        "`bitstream`), or export the model again if the manifest is the stale one")
    return {"input_word_elems": int(first.get_folded_input_shape()[-1]),
            "output_word_elems": int(last.get_folded_output_shape()[-1])}


def find_bitfile(run_dir: Path) -> Path | None:
    for cand in (run_dir / "deploy" / "finn-accel.bit", *sorted((run_dir / "finn").glob("vivado/bitfile/*.bit"))):
        if cand.is_file():
            return cand
    return None


BIT_HEADER = bytes.fromhex("00090ff00ff00ff00ff000000161")  # every Vivado .bit opens so (its header's first field)


def check_vivado_bitfile(bit: Path) -> None:
    """A bitfile only if Vivado wrote it: the test suite's stand-in marks its outputs, and anything else must open
    with the .bit header."""
    from flow.hw.vivado import is_standin

    if is_standin(bit):
        raise FlowError(f"{bit} was written by the test suite's Vivado stand-in (tests/vivado_standin), not by "
                        "Vivado: it is not a bitstream. Run `make bitstream` with Vivado on the PATH (or `make "
                        "docker-bitstream`), or remove the file to package for the simulated overlay")
    with open(bit, "rb") as f:
        if f.read(len(BIT_HEADER)) != BIT_HEADER:
            raise FlowError(f"{bit} does not open with a Vivado bitfile header; it is not a .bit from write_bitstream")


REPO = Path(__file__).resolve().parents[1]


def check_out(run_dir: Path, out: Path) -> None:
    """Refuse a deploy folder whose writing would delete or overwrite what the flow did not make: the run itself,
    a folder holding the run, another run folder, the repository (or a folder holding it, or its source packages),
    an existing file, a symlink, or a non-empty folder that is not a deploy package we made."""
    run, o = run_dir.resolve(), out.resolve()
    if o == run or run.is_relative_to(o):
        raise FlowError(f"--out {out}: is {'the run folder' if o == run else 'a folder holding the run'} {run_dir}; "
                        f"the package goes into its own folder (default {run_dir / 'deploy'})")
    if REPO.is_relative_to(o) or any(o.is_relative_to(REPO / pkg) for pkg in ("board", "flow", "models", "tests",
                                                                              "docker", ".git")):
        raise FlowError(f"--out {out}: is the repository {REPO} or inside its sources; writing the package there "
                        f"would replace the repository's own files. Use e.g. {run_dir / 'deploy'}")
    if out.is_symlink():
        raise FlowError(f"--out {out}: is a symlink (to {os.readlink(out)}); name the folder itself")
    if o.exists() and not o.is_dir():
        raise FlowError(f"--out {out}: an existing file, not a folder; name a new folder")
    if (o / "model.qonnx.onnx").exists():
        raise FlowError(f"--out {out}: is a run folder (it holds model.qonnx.onnx), not a deploy package; nothing "
                        f"was written. The package goes into a folder of its own, e.g. {out / 'deploy'}")
    from flow.provenance import ours

    foreign = _not_ours(o) if o.is_dir() else []
    if foreign:
        raise FlowError(f"--out {out}: holds files no deploy of ours wrote, or changed since ({', '.join(foreign[:5])}); "
                        "nothing is deleted or overwritten that the flow did not make: name an empty or new folder")
    z = Path(f"{o}.zip")
    if (z.exists() or z.is_symlink()) and not ours(z):
        raise FlowError(f"{z}: exists and was not written by a deploy of {out}; move it away or name another --out")


# the commands that write into a deploy package: another run folder's files are the flow's too, not a package's to replace
PACKAGERS = ("python -m flow deploy ", "python -m flow bitstream ")


def _not_ours(folder: Path) -> list[str]:
    """The paths in a deploy folder that its provenance.json does not record with their current content (links
    included: never ours); Python's __pycache__ beside the package's modules is a cache, not the user's."""
    from flow.provenance import RECORD, ours

    out = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files + [d for d in dirs if (Path(top) / d).is_symlink()]:
            p = Path(top) / name
            if p != folder / RECORD and not ours(p, folder, made_by=PACKAGERS):
                out.append(p.relative_to(folder).as_posix())
    return sorted(out)


def check_bitfile(run_dir: Path, bit: Path, force: bool = False) -> None:
    """The bitfile must be Vivado's, come from the run's current FINN build, itself made from the run's current
    model, and meet timing (unless `force`)."""
    from flow.hw.build import check_build
    from flow.provenance import check

    check_vivado_bitfile(bit)
    check_build(run_dir)
    check(bit, [run_dir / "finn" / "build_done.json"], remake=f"python -m flow bitstream --run {run_dir}")
    check_timing(run_dir, bit, force)


def check_timing(run_dir: Path, bit: Path, force: bool = False) -> None:
    """Vivado writes a bitstream whatever the post-route slack, and a board running one that misses timing computes
    wrong results without saying so: refuse it, from the timing `bitstream` recorded for this very bitfile
    (finn/report/vivado.json, tied by sha256), unless `force`."""
    from flow.files import sha256
    from flow.hw.vivado import timing_verdict

    rec = run_dir / "finn" / "report" / "vivado.json"
    remake = f"python -m flow bitstream --run {run_dir}"
    try:
        timing = json.loads(rec.read_text())
    except (OSError, json.JSONDecodeError):
        problem = f"{bit}: no post-route timing recorded for it ({rec} missing or unreadable; `{remake}` writes it)"
    else:
        if timing.get("bitfile_sha256") != sha256(bit):
            problem = f"{rec} is the timing of another bitfile than {bit}; `{remake}` makes both again"
        else:
            verdict = timing_verdict(timing["timing"], timing["clock_ns"])
            problem = verdict and f"{bit} misses timing: {verdict}"
    if problem and not force:
        raise FlowError(f"{problem}. `python -m flow deploy --force` packages it anyway (the board may then compute "
                        "wrong results)")
    if problem:
        print(f"warning (--force): {problem}")


def check_fits(run_dir: Path) -> None:
    """A build over the PYNQ-Z2 budget is no design for the board: its folding is not packaged."""
    est = run_dir / "finn" / "report" / "estimate.json"
    try:
        fits = json.loads(est.read_text()).get("fits")
    except (OSError, ValueError, AttributeError):
        fits = None
    if fits is not True:
        what = "over the PYNQ-Z2 budget" if fits is False else "without a readable estimate"
        raise FlowError(f"{est}: the run's FINN build is {what}, so it is not deployed; estimate one that fits "
                        f"(`python -m flow fold --run {run_dir}`, or `python -m flow estimate --run {run_dir}` with a "
                        "lower --target-fps)")


def make_deploy(run_dir: Path, out: Path | None = None, force: bool = False) -> dict:
    from flow.runlock import run_lock

    run_dir = Path(run_dir)
    out = Path(out or run_dir / "deploy")
    with run_lock(run_dir, f"python -m flow deploy --run {run_dir} --out {out}"):
        return _make_deploy(run_dir, out, force)


def _make_deploy(run_dir: Path, out: Path, force: bool = False) -> dict:
    from flow.export import check_export
    from flow.files import TMP_MARK
    from flow.hw.build import check_build
    from flow.provenance import record
    from flow.qcdq import lower_to_qcdq

    manifest = load_manifest(run_dir)
    _recover(out)
    check_out(run_dir, out)
    qcdq = run_dir / "model.qcdq.onnx"
    if not qcdq.exists():
        lower_to_qcdq(run_dir / "model.qonnx.onnx", qcdq)
    check_export(run_dir, "manifest.json", "model.qcdq.onnx")  # the package carries the run's model, not an older one
    bit = find_bitfile(run_dir)
    if bit is not None:
        check_bitfile(run_dir, bit, force)
    elif (run_dir / "finn").exists():
        check_build(run_dir)  # the packing widths come from it
    if (run_dir / "finn").exists():
        check_fits(run_dir)
    folds = stream_folds(run_dir, manifest)  # checks the build's output datatype against the manifest's
    # built beside, then swapped in: a deploy that fails (or is killed) leaves the last package as it was
    tmp = _beside(out, TMP_MARK)
    tmp.mkdir(parents=True)
    try:
        bit = _fill(tmp, run_dir, out, manifest, folds, qcdq, bit)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # check_out made sure it is a package of ours
        old = _beside(out, ".old-")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    archive = Path(shutil.make_archive(str(_beside(out, ".zip" + TMP_MARK)), "zip", root_dir=out.parent,
                                       base_dir=out.name))
    zip_path = Path(f"{out}.zip")
    os.replace(archive, zip_path)
    record(zip_path, [out / "manifest.json"], f"python -m flow deploy --run {run_dir} --out {out}")
    return {"folder": str(out), "zip": str(zip_path), "bitfile": bool(bit), "manifest": str(out / "manifest.json")}


def _fill(tmp: Path, run_dir: Path, out: Path, manifest: Manifest, folds: dict, qcdq: Path,
          bit: Path | None) -> Path | None:
    """Write the package into the empty folder tmp (to become out), every file recorded in its provenance.json;
    returns the bitfile it carries."""
    from flow.files import sha256
    from flow.provenance import RECORD, forget, record, recorded_paths

    wrote = []
    if bit is not None and bit.parent.resolve() != Path(os.path.abspath(out)):
        shutil.copy(bit, tmp / "finn-accel.bit")
        hwh = bit.with_suffix(".hwh")
        if not hwh.is_file():
            raise FlowError(f"{hwh}: the bitfile's hardware handoff is missing; the board cannot load the overlay")
        shutil.copy(hwh, tmp / "finn-accel.hwh")
        wrote += ["finn-accel.bit", "finn-accel.hwh"]
    elif bit is not None:  # `bitstream` put it into out: it stays, with its provenance
        for name in ("finn-accel.bit", "finn-accel.hwh", RECORD):
            if (out / name).is_file():
                shutil.copy(out / name, tmp / name)
        forget(tmp, [k for k in recorded_paths(tmp) if not (tmp / k).is_file()])  # the old package's other files
        bit = tmp / bit.name
    shutil.copy(qcdq, tmp / "model.qcdq.onnx")
    manifest = manifest.replace(packing=dataclasses.replace(manifest.packing, **folds))
    manifest = manifest.with_files(qcdq={"path": "model.qcdq.onnx", "sha256": sha256(tmp / "model.qcdq.onnx")})
    if bit is not None:
        manifest = manifest.with_files(bitfile={"path": "finn-accel.bit", "sha256": sha256(tmp / "finn-accel.bit")})
    manifest.write(tmp / "manifest.json")
    src = REPO / "board"
    pkg = tmp / "board"
    pkg.mkdir()
    for f in BOARD_FILES:
        shutil.copy(src / f, pkg / f)
    shutil.copytree(src / "notebooks", tmp / "notebooks")
    shutil.copy(src / "README.md", tmp / "README.md")
    (tmp / "setup.py").write_text(BOARD_SETUP_PY)
    write_samples(tmp / "samples")
    wrote += ["model.qcdq.onnx", "manifest.json", "board", "notebooks", "README.md", "setup.py", "samples"]
    command = f"python -m flow deploy --run {run_dir} --out {out}"
    for name in wrote:  # every file the package holds is recorded: a later deploy replaces exactly these
        p = tmp / name
        for f in [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink()):
            if f != tmp / "manifest.json":
                record(f, [], command, folder=tmp)
    record(tmp / "manifest.json", [run_dir / "model.qonnx.onnx", qcdq, *([bit] if bit else [])], command)
    return bit


def _beside(out: Path, mark: str) -> Path:
    """The path `.<out name><mark><pid>` beside out, after clearing those a killed deploy left (hidden and named
    after out: ours by name, as flow.files names its temp files)."""
    out = Path(os.path.abspath(out))  # `--out ..` or `--out .`: the folder's own name and parent
    for orphan in out.parent.glob(f".{out.name}{mark}*"):
        if orphan.is_dir() and not orphan.is_symlink():
            shutil.rmtree(orphan)
        else:
            orphan.unlink()
    return out.parent / f".{out.name}{mark}{os.getpid()}"


def _recover(out: Path) -> None:
    """A deploy killed between its two renames left its last package as `.<name>.old-*` and no out: back it goes."""
    out = Path(os.path.abspath(out))
    left = sorted(out.parent.glob(f".{out.name}.old-*"))
    if left and not out.exists() and not out.is_symlink():
        left[-1].rename(out)


def write_samples(folder: Path) -> None:
    """A few real photos (scikit-image ships them) so the notebooks run out of the box."""
    from PIL import Image

    from flow.samples import photo

    folder.mkdir(exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(photo(name)).save(folder / f"{name}.jpg", quality=92)


def copy_to_board(folder: Path, host: str, user: str = "xilinx", timeout: int = 60) -> None:
    dest = f"{user}@{host}:/home/{user}/jupyter_notebooks/lpyolo"
    try:
        subprocess.run(["scp", "-r", "-o", f"ConnectTimeout={min(timeout, 15)}", str(folder), dest], check=True,
                       timeout=timeout, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FlowError("scp not found: install an OpenSSH client, or copy the deploy folder by hand") from e
    except subprocess.TimeoutExpired as e:
        raise FlowError(f"board {host} did not answer within {timeout} s (is it on the network? PYNQ_IP right?)") from e
    except subprocess.CalledProcessError as e:
        raise FlowError(f"copying to {dest} failed: {e.stderr.strip() or e}") from e


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m flow deploy", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, help="deploy folder (default RUN/deploy)")
    p.add_argument("--board", help="PYNQ-Z2 address: copy the folder there over scp")
    p.add_argument("--force", action="store_true", help="package a bitfile whose post-route timing fails (or is not "
                   "recorded); the board may then compute wrong results")
    a = p.parse_args(argv)
    info = make_deploy(a.run, a.out, a.force)
    print(json.dumps(info, indent=2))
    if not info["bitfile"]:
        print("note: no bitfile yet (needs Vivado: `make bitstream` or `make docker-bitstream`); the package runs with "
              "the simulated overlay (`use_hw = False` in the notebooks) until one is added")
    if a.board:
        copy_to_board(Path(info["folder"]), a.board)
        print(f"copied to {a.board}:/home/xilinx/jupyter_notebooks/lpyolo")
    return 0
