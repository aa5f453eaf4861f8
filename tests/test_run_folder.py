"""A run folder you can trust: no code runs from a checkpoint, stale artifacts are named instead of used,
one writer at a time, nothing deleted that the flow did not write, options take effect or are refused."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flow.errors import FlowError
from flow.export import ExportError, export_run, load_checkpoint
from flow.provenance import StaleError, check, record

ROOT = Path(__file__).resolve().parents[1]


class Ran:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def flow(*args):
    """`python -m flow ARGS` as the user types it, in this process (the same `flow.cli.main`, without the imports)."""
    import contextlib
    import io

    from flow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return Ran(rc, out.getvalue(), err.getvalue())


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # what a crafted checkpoint does when unpickled with weights_only=False
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_no_code(tmp_path, run_4w4a):
    from flow.train.loop import read_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"spec": {}, "model": {}, "x": _Payload(marker)}, evil)
    with pytest.raises(ExportError, match="evil.pt: not a readable torch checkpoint.*weights_only=True"):
        load_checkpoint(evil)  # export, crosscheck's Brevitas backend and eval read checkpoints through here
    with pytest.raises(FlowError, match="weights_only=True"):
        read_checkpoint(evil)  # train --resume and --init-from
    # a crafted model.pt in someone else's run: the cross-check refuses it before loading (not the exported one)
    run = tmp_path / "run"
    shutil.copytree(run_4w4a, run)
    shutil.copy(evil, run / "model.pt")
    p = flow("crosscheck", "--run", run, "--real", "1", "--random", "0", "--device", "cpu")
    assert p.returncode == 1 and "model.pt" in p.stderr and "Traceback" not in p.stderr, p.stderr[-1500:]
    assert not marker.exists()
    # our own checkpoints load with weights_only=True
    assert torch.load(run_4w4a / "model.pt", weights_only=True)["spec"]


def test_deploy_never_deletes_what_it_did_not_write(tmp_path, run_4w4a, monkeypatch):
    board_files = sorted(p.name for p in (ROOT / "board").iterdir())
    monkeypatch.chdir(ROOT)
    p = flow("deploy", "--run", run_4w4a, "--out", ".")
    assert p.returncode == 1 and "repository" in p.stderr, p.stderr[-1500:]
    assert sorted(p.name for p in (ROOT / "board").iterdir()) == board_files
    for out, why in ((run_4w4a, "is the run folder"), (run_4w4a.parent, "a folder holding the run")):
        p = flow("deploy", "--run", run_4w4a, "--out", out)
        assert p.returncode == 1 and why in p.stderr and "Traceback" not in p.stderr, p.stderr[-1500:]
    (tmp_path / "a-file").write_text("mine")
    p = flow("deploy", "--run", run_4w4a, "--out", tmp_path / "a-file")
    assert p.returncode == 1 and "an existing file" in p.stderr
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    p = flow("deploy", "--run", run_4w4a, "--out", users)
    assert p.returncode == 1 and "notes.txt" in p.stderr and (users / "notes.txt").read_text() == "mine"
    # a package of ours is remade in place: what the last deploy wrote goes, nothing else
    from flow.deploy import make_deploy

    pkg = tmp_path / "pkg"
    info = make_deploy(run_4w4a, pkg)
    m = json.loads((pkg / "manifest.json").read_text())
    assert m["files"]["qcdq"]["sha256"] and (pkg / "board" / "sim.py").is_file() and Path(info["zip"]).is_file()
    check(pkg / "manifest.json", [run_4w4a / "model.qonnx.onnx", run_4w4a / "model.qcdq.onnx"])
    make_deploy(run_4w4a, pkg)
    (pkg / "extra.txt").write_text("user's")
    with pytest.raises(FlowError, match="extra.txt"):
        make_deploy(run_4w4a, pkg)


def test_a_reexport_makes_the_old_artifacts_stale_by_name(tmp_path):
    from flow.crosscheck import run_crosscheck
    from flow.deploy import make_deploy
    from flow.qcdq import lower_to_qcdq

    run, other = tmp_path / "run", tmp_path / "other"
    export_run(run, "4w4a", 64)
    lower_to_qcdq(run / "model.qonnx.onnx", run / "model.qcdq.onnx")
    export_run(run, "2w4a", 64)  # a re-export into the same run folder takes the 4w4a lowering with it
    assert not (run / "model.qcdq.onnx").exists()
    assert run_crosscheck(run, device="cpu", n_real=1, n_random=0)["variant"] == "2w4a"  # lowered afresh
    # a model put in by hand (not by export): everything made from the old one is named, with its remaking command
    export_run(other, "4w4a", 64)
    shutil.copy(other / "model.qonnx.onnx", run / "model.qonnx.onnx")
    with pytest.raises(StaleError, match=r"manifest.json is stale.*model.qonnx.onnx"):
        run_crosscheck(run, device="cpu", n_real=1, n_random=0)
    with pytest.raises(StaleError, match="is stale"):
        make_deploy(run, run / "deploy")
    export_run(run, "2w4a", 64, force=True)  # the hand-placed model is the user's: replaced only when told
    lower_to_qcdq(run / "model.qonnx.onnx", run / "model.qcdq.onnx")  # the command the error names
    shutil.copy(other / "model.qonnx.onnx", run / "model.qonnx.onnx")
    with pytest.raises(StaleError, match=r"is stale: it was made from an earlier .*model.qonnx.onnx"):
        make_deploy(run, run / "deploy")
    export_run(run, "2w4a", 64, force=True)
    lower_to_qcdq(run / "model.qonnx.onnx", run / "model.qcdq.onnx")
    assert run_crosscheck(run, device="cpu", n_real=1, n_random=0)["variant"] == "2w4a"
    # a file replaced by hand is not the recorded one
    shutil.copy(run / "model.qonnx.onnx", run / "model.qcdq.onnx")
    with pytest.raises(StaleError, match="changed since"):
        run_crosscheck(run, device="cpu", n_real=1, n_random=0)


def test_provenance_records_name_inputs_and_command(tmp_path):
    a, b = tmp_path / "in.bin", tmp_path / "out.bin"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    with pytest.raises(StaleError, match="no provenance record.*remake it: `make-b`"):
        check(b, [a], "make-b")
    record(b, [a], "make-b --from in.bin")
    check(b, [a])
    a.write_bytes(b"changed")
    with pytest.raises(StaleError, match=r"out.bin is stale: it was made from an earlier .*in.bin.*`make-b --from"):
        check(b, [a])
    rec = json.loads((tmp_path / "provenance.json").read_text())["out.bin"]
    assert rec["made_from"] == {"in.bin": rec["made_from"]["in.bin"]} and rec["command"] == "make-b --from in.bin"


def test_one_writer_per_run_folder(tmp_path, run_4w4a):
    run = tmp_path / "run"
    shutil.copytree(run_4w4a, run)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from flow.runlock import run_lock\n"
                               "with run_lock(sys.argv[2], 'python -m flow estimate --run X'):\n"
                               " print('held', flush=True); time.sleep(60)", str(ROOT), str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for cmd in (["estimate", "--run", run], ["crosscheck", "--run", run, "--device", "cpu"],
                    ["export", "--variant", "4w4a", "--img", "64", "--out", run]):
            p = flow(*cmd)
            assert p.returncode == 1, p.stderr[-1500:]
            assert f"in use by another flow command (pid {holder.pid}: `python -m flow estimate --run X`" in p.stderr
    finally:
        holder.kill()
        holder.wait()
    from flow.runlock import run_lock

    with run_lock(run), run_lock(run):  # free again once its holder died (SIGKILL); re-entrant in one process
        pass


def test_export_options_take_effect_or_are_refused(tmp_path, run_4w4a):
    ckpt = run_4w4a / "model.pt"
    with pytest.raises(ExportError, match="checkpoint is variant '4w4a', but --variant 8w8a"):
        export_run(tmp_path / "a", "8w8a", checkpoint=ckpt)
    with pytest.raises(ExportError, match="--override conv3.w=2 asks for other bit widths"):
        export_run(tmp_path / "b", checkpoint=ckpt, overrides=["conv3.w=2"])
    for img in (0, -32, 50):
        with pytest.raises(ExportError, match=f"--img {img}: not a positive multiple of 32"):
            export_run(tmp_path / "c", "4w4a", img)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="an existing file"):
        export_run(tmp_path / "file", "4w4a", 64)


def test_crosscheck_options_and_unannotated_qonnx(tmp_path, run_4w4a):
    import onnx

    from flow.crosscheck import run_crosscheck

    with pytest.raises(FlowError, match="--real 0 --random 0: cross-check at least one image"):
        run_crosscheck(run_4w4a, n_real=0, n_random=0)
    run = tmp_path / "run"
    shutil.copytree(run_4w4a, run)
    m = onnx.load(str(run / "model.qonnx.onnx"))
    del m.graph.value_info[:]  # a QONNX saved without shape annotations (e.g. by another tool)
    onnx.save(m, str(run / "model.qonnx.onnx"))
    for f in ("model.pt", "manifest.json"):  # as if exported that way
        record(run / f, [run / "model.qonnx.onnx"], "test")
    (run / "model.qcdq.onnx").unlink()
    r = run_crosscheck(run, device="cpu", n_real=1, n_random=0)
    assert r["all_bit_exact"], r


def test_atomic_writes_leave_no_orphans(tmp_path):
    from flow.files import atomic_write_bytes

    target = tmp_path / "last.pt"
    (tmp_path / ".last.pt.tmp-abc123").write_bytes(b"half a checkpoint")  # a writer SIGKILLed mid-write
    (tmp_path / "last.pt.bak").write_bytes(b"user's")
    atomic_write_bytes(target, b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.bak"]

    def interrupted(*a):
        raise KeyboardInterrupt  # Ctrl-C between the write and the rename

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            atomic_write_bytes(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.bak"] and target.read_bytes() == b"whole"


def test_ctrl_c_prints_no_traceback(monkeypatch):
    import flow.export as export

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "cli", interrupted)
    p = flow("export", "--out", "x")
    assert p.returncode == 130 and "interrupted: `export` stopped" in p.stderr
