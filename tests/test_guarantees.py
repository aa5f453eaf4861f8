"""Bad input, as a hostile or unlucky user makes it: each case is refused with one line naming the file and what to
do (exit 1, no traceback), or the last good state is kept; nothing outside the run folder is touched, and the same
command can be run again. 64x64 runs; every test works on its own copy of a shared run."""

import contextlib
import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class Ran:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def refused(self, *needles) -> bool:
        """Exit 1, one `error:` line holding every needle, no traceback."""
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("error: ")]
        return (self.returncode == 1 and "Traceback" not in self.stderr and len(lines) == 1
                and all(n in lines[0] for n in needles))


def flow(*args):
    """`python -m flow ARGS` as the user types it, in this process (the same `flow.cli.main`)."""
    from flow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return Ran(rc, out.getvalue(), err.getvalue())


def tree(folder: Path) -> dict:
    """Every file under folder (links not followed) -> its bytes: what a test compares before and after."""
    return {str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()}


@pytest.fixture(scope="session")
def estimated_4w4a(run_4w4a, tmp_path_factory):
    """run_4w4a with a FINN estimate build (finn/) that fits the PYNQ-Z2."""
    from flow.hw.build import FinnConfig, run_estimate

    d = tmp_path_factory.mktemp("estimated") / "run"
    shutil.copytree(run_4w4a, d)
    assert run_estimate(FinnConfig(run_dir=str(d)), quiet=True)["fits"]
    return d


@pytest.fixture
def run(run_4w4a, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run_4w4a, d)
    return d


# ------------------------------------------------------------------------------------------------- the lock file
def test_a_lock_file_that_is_a_symlink_is_refused_not_followed(run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's")
    (run / ".flow.lock").symlink_to(victim)
    p = flow("crosscheck", "--run", run, "--real", "1", "--random", "0", "--device", "cpu")
    assert p.refused(".flow.lock: is a symlink", "rm "), p.stderr[-1500:]
    assert victim.read_text() == "the user's" and (run / ".flow.lock").is_symlink()


def test_a_read_only_run_folder_is_a_clear_error(run, monkeypatch):
    """As root (the suite's container) permissions are not enforced, so a read-only folder is simulated where
    they are not: os.open of the lock file raises what the kernel raises for a non-root user."""
    run.chmod(0o555)
    try:
        if os.geteuid() == 0:
            real_open = os.open

            def read_only(path, flags, *a, **k):
                if str(path).startswith(str(run)) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(path, flags, *a, **k)

            monkeypatch.setattr(os, "open", read_only)
        for cmd in (["crosscheck", "--run", run, "--real", "1", "--random", "0", "--device", "cpu"],
                    ["estimate", "--run", run], ["deploy", "--run", run],
                    ["export", "--variant", "4w4a", "--img", "64", "--out", run]):
            p = flow(*cmd)
            assert p.refused(f"{run}: not writable", "chmod u+w"), (cmd, p.stderr[-1500:])
    finally:
        run.chmod(0o755)


# ----------------------------------------------------------------------------------------- the FINN build (finn/)
def test_an_over_budget_estimate_keeps_the_last_good_build(estimated_4w4a, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(estimated_4w4a, run)
    good = tree(run / "finn")
    p = flow("estimate", "--run", run, "--no-committed-folding", "--target-fps", 10000000, "--mvau-wwidth-max", 100000)
    assert p.refused("over the PYNQ-Z2 budget", "set aside in", "not deployable"), p.stderr[-1500:]
    assert tree(run / "finn") == good  # the good build, as it was
    aside = list(run.glob("finn.over-budget-*"))
    assert len(aside) == 1 and json.loads((aside[0] / "report" / "estimate.json").read_text())["fits"] is False
    p = flow("deploy", "--run", run)
    assert p.returncode == 0, p.stderr[-1500:]
    # a run with no good build before: nothing over budget is left where deploy reads, and deploy says so if it is
    lone = tmp_path / "lone"
    shutil.copytree(estimated_4w4a, lone, ignore=shutil.ignore_patterns("finn"))
    p = flow("estimate", "--run", lone, "--no-committed-folding", "--target-fps", 10000000, "--mvau-wwidth-max", 100000)
    assert p.returncode == 1 and not (lone / "finn").exists()
    next(lone.glob("finn.over-budget-*")).rename(lone / "finn")  # as older versions of the flow left it
    p = flow("deploy", "--run", lone)
    assert p.refused("estimate.json: the run's FINN build is over the PYNQ-Z2 budget", "python -m flow fold"), p.stderr
    assert not (lone / "deploy").exists()


# ------------------------------------------------------------------------------------------------------ deploy
def test_a_crafted_deploy_record_deletes_nothing(run, tmp_path):
    """A package's records (its provenance.json) travel inside its zip: someone else's unzipped package may carry
    any record. Records naming files outside the package, or a record that is a symlink, touch nothing outside it."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("the user's")
    pkg = tmp_path / "pkg"
    assert flow("deploy", "--run", run, "--out", pkg).returncode == 0
    records = json.loads((pkg / "provenance.json").read_text())
    entry = next(iter(records.values()))
    for key in ("../victim/thesis.tex", str(victim / "thesis.tex"), "board/../../victim/thesis.tex", "../victim"):
        (pkg / "provenance.json").write_text(json.dumps({**records, key: entry}))
        p = flow("deploy", "--run", run, "--out", pkg)
        assert p.returncode in (0, 1) and "Traceback" not in p.stderr, (key, p.stderr[-1500:])
        assert (victim / "thesis.tex").read_text() == "the user's"
    # a record that is a symlink is not followed
    (tmp_path / "elsewhere.json").write_text(json.dumps(records))
    (pkg / "provenance.json").unlink()
    (pkg / "provenance.json").symlink_to(tmp_path / "elsewhere.json")
    assert flow("deploy", "--run", run, "--out", pkg).refused("provenance.json: not readable", "a symlink")
    assert (tmp_path / "elsewhere.json").read_text() == json.dumps(records)
    # a zip beside the folder that no deploy recorded is the user's: not replaced
    (tmp_path / "pkg2.zip").write_text("the user's")
    assert flow("deploy", "--run", run, "--out", tmp_path / "pkg2").refused("pkg2.zip: exists and was not written")
    assert (tmp_path / "pkg2.zip").read_text() == "the user's" and (victim / "thesis.tex").read_text() == "the user's"


def test_deploy_onto_another_run_folder_overwrites_nothing(run, run_4w4a, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_4w4a, other)
    before = tree(other)
    p = flow("deploy", "--run", run, "--out", other)
    assert p.refused(f"--out {other}: is a run folder", f"{other / 'deploy'}"), p.stderr[-1500:]
    assert tree(other) == before
    # the same run folder without its model: its remaining files are still not a deploy's
    (other / "model.qonnx.onnx").unlink()
    p = flow("deploy", "--run", run, "--out", other)
    assert p.refused("holds files no deploy of ours wrote"), p.stderr[-1500:]
    assert tree(other) == {k: v for k, v in before.items() if k != "model.qonnx.onnx"}


def test_a_failed_deploy_keeps_the_last_package(run, tmp_path, monkeypatch):
    import flow.deploy as deploy

    pkg = tmp_path / "pkg"
    assert flow("deploy", "--run", run, "--out", pkg).returncode == 0
    before, zip_before = tree(pkg), (tmp_path / "pkg.zip").read_bytes()

    def full_disk(folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))

    monkeypatch.setattr(deploy, "write_samples", full_disk)
    p = flow("deploy", "--run", run, "--out", pkg)
    assert p.refused("No space left on device"), p.stderr[-1500:]
    assert tree(pkg) == before and (tmp_path / "pkg.zip").read_bytes() == zip_before
    # no half package beside it (provenance.json: the record of the zip, which lies in this folder)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["pkg", "pkg.zip", "provenance.json", "run"]
    monkeypatch.undo()
    assert flow("deploy", "--run", run, "--out", pkg).returncode == 0


# ------------------------------------------------------------------------------------------------------ import
def test_an_in_place_import_twice_keeps_the_users_original(tmp_path):
    from test_import import user_brevitas_qonnx

    theirs = tmp_path / "theirs"
    user_brevitas_qonnx(theirs / "model.qonnx.onnx")
    original = (theirs / "model.qonnx.onnx").read_bytes()
    assert flow("import", theirs / "model.qonnx.onnx", "--out", theirs, "--force").returncode == 0
    assert (theirs / "model.original.onnx").read_bytes() == original
    for force in ([], ["--force"]):
        p = flow("import", theirs / "model.qonnx.onnx", "--out", theirs, *force)
        assert p.refused("is the model `flow import` made in", f"python -m flow import {theirs / 'model.original.onnx'}"
                         ), p.stderr[-1500:]
        assert (theirs / "model.original.onnx").read_bytes() == original
    shutil.copy(theirs / "model.qonnx.onnx", tmp_path / "copy.onnx")  # the flow's output under another name
    assert flow("import", tmp_path / "copy.onnx", "--out", theirs, "--force").refused("is the model `flow import`")
    p = flow("import", theirs / "model.original.onnx", "--out", theirs)  # what the error says to run
    assert p.returncode == 0 and (theirs / "model.original.onnx").read_bytes() == original, p.stderr[-1500:]


# ------------------------------------------------------------------------------------------------------ export
def test_a_full_disk_during_export_is_one_line_and_the_rerun_works(run, monkeypatch):
    import flow.export as export

    real = export.atomic_write_bytes

    def full_disk(path, data):
        if Path(path).name == "model.pt":  # after the new model.qonnx.onnx, before the manifest that lists it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(export, "atomic_write_bytes", full_disk)
    cmd = ("export", "--variant", "4w4a", "--img", "64", "--seed", "1", "--out", run)
    p = flow(*cmd)
    assert p.refused("model.pt: No space left on device", "run the same command again"), p.stderr[-1500:]
    assert not list(run.glob(".*.tmp-*"))
    monkeypatch.undo()
    p = flow(*cmd)
    assert p.returncode == 0, p.stderr[-1500:]
    from flow.export import check_export

    check_export(run, "model.pt", "manifest.json")


def test_an_export_killed_mid_way_can_be_run_again(tmp_path):
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    kill_at_model_pt = (
        "import os, signal, sys\nsys.path.insert(0, sys.argv[1])\nimport flow.export as e\nreal = e.atomic_write_bytes\n"
        "def write(path, data):\n    if path.name != 'model.pt':\n        return real(path, data)\n"
        "    (path.parent / ('.model.pt.tmp-' + str(os.getpid()))).write_bytes(data[: len(data) // 2])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "e.atomic_write_bytes = write\nfrom flow.cli import main\n"
        "main(['export', '--variant', '4w4a', '--img', '64', '--out', sys.argv[2]])\n")
    for _ in range(2):  # a first export, then a re-export, each killed (kill -9) writing model.pt, after the model
        p = subprocess.run([sys.executable, "-c", kill_at_model_pt, str(ROOT), str(run)], capture_output=True)
        assert p.returncode == -signal.SIGKILL and (run / "model.qonnx.onnx").is_file(), p.stderr[-1500:]
        p = flow("export", "--variant", "4w4a", "--img", "64", "--out", run)
        assert p.returncode == 0, p.stderr[-1500:]
        assert not list(run.glob(".*.tmp-*"))  # the half-written file is gone


# ------------------------------------------------------------------------------------- WIDER FACE annotations
def _wider_root(tmp_path, train_text: bytes, names=("0--Parade/a.jpg", "0--Parade/b.jpg")) -> Path:
    import numpy as np
    from PIL import Image

    root = tmp_path / "wider"
    for split, text in (("train", train_text), ("val", "\n".join(f"{n}\n1\n4 4 20 20 0 0 0 0 0 0" for n in names[:1])
                                                    .encode())):
        for n in names:
            f = root / f"WIDER_{split}" / "images" / n
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(f)
        txt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_bytes(text)
    return root


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e30", "NaN"])
def test_a_box_that_is_no_coordinate_is_refused_by_line(tmp_path, value):
    from flow.train.wider import AnnotationError, read_wider_annotations

    text = f"0--Parade/a.jpg\n2\n4 4 20 20 0 0 0 0 0 0\n4 4 {value} 20 0 0 0 0 0 0\n0--Parade/b.jpg\n1\n1 1 9 9 0 0 0 0 0 0\n"
    root = _wider_root(tmp_path, text.encode())
    txt = root / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    p = flow("data", "check", "--data", root)
    assert p.refused(f"{txt}:4: face line", "no pixel coordinate", "correct or delete the line"), p.stderr[-1500:]
    with pytest.warns(UserWarning, match="skipped 1 bad entry"):  # --skip-bad drops that image, keeps the rest
        kept = read_wider_annotations(txt, root / "WIDER_train" / "images", skip_bad=True)
    assert [s.path.name for s in kept] == ["b.jpg"]
    with pytest.raises(AnnotationError, match=":4: "):
        read_wider_annotations(txt, root / "WIDER_train" / "images")


def test_a_latin1_annotation_file_is_read_with_a_warning(tmp_path):
    from flow.train.wider import read_wider_annotations

    names = ("0--Parade/a.jpg", "0--Parade/caf\u00e9.jpg")
    text = "".join(f"{n}\n1\n4 4 20 20 0 0 0 0 0 0\n" for n in names).encode("latin-1")
    root = _wider_root(tmp_path, text, names)
    txt = root / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    with pytest.warns(UserWarning, match=r"gt.txt:4: not UTF-8 \(byte 0xe9\); read as Latin-1"):
        samples = read_wider_annotations(txt, root / "WIDER_train" / "images")
    assert [s.path.name for s in samples] == ["a.jpg", "caf\u00e9.jpg"]
    p = flow("data", "check", "--data", root)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-1500:]


# ------------------------------------------------------------------------------------------- a copied run folder
def test_remake_commands_in_a_copied_run_folder_name_the_copy(estimated_4w4a, tmp_path):
    from flow.export import export_run

    copy = tmp_path / "copy"
    shutil.copytree(estimated_4w4a, copy)
    export_run(copy, "4w4a", 64, seed=1)  # a new model: the copied build is stale
    p = flow("deploy", "--run", copy)
    assert p.refused("build_done.json is stale", f"remake it: `python -m flow estimate --run {copy}`"), p.stderr
    assert str(estimated_4w4a) not in p.stderr
    (copy / "finn" / "build_done.json").write_text("{}")  # replaced by hand: `changed since <command> wrote it`
    p = flow("deploy", "--run", copy)
    assert p.refused("changed since `python -m flow estimate --run", f"--run {copy}`"), p.stderr
    assert str(estimated_4w4a) not in p.stderr


# ------------------------------------------------------------------------------------------- the board's batch
def test_a_frame_too_large_for_memory_is_skipped_and_the_batch_kept(run, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import board.pipeline as pipeline
    from board.__main__ import main as board_main
    from flow.deploy import make_deploy

    pkg = tmp_path / "pkg"
    make_deploy(run, pkg)
    images = tmp_path / "images"
    images.mkdir()
    for name, (w, h) in (("a.jpg", (96, 64)), ("b.jpg", (80, 100)), ("huge.jpg", (8000, 6000))):
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(images / name, quality=50)
    real = pipeline.letterbox

    def out_of_memory(img, *a, **k):  # b.jpg's arrays do not fit, as under a memory limit (ulimit -v)
        if img.shape[:2] == (100, 80):
            raise MemoryError
        return real(img, *a, **k)

    monkeypatch.setattr(pipeline, "letterbox", out_of_memory)
    out = tmp_path / "out"
    with pytest.warns(UserWarning) as caught:
        rc = board_main(["run", "--deploy", str(pkg), "--images", str(images), "--out", str(out), "--sim"])
    said = [str(w.message) for w in caught]
    assert rc == 0
    assert any("huge.jpg: 8000x6000 pixels, more than the 40 MP" in s and "not decoded" in s for s in said), said
    assert any("b.jpg: not enough memory left" in s for s in said), said
    dets = json.loads((out / "detections.json").read_text())
    assert list(dets["detections"]) == ["a.jpg"] and dets["stats"]["undecodable"] == 2


def test_a_build_folder_symlinked_to_another_disk(estimated_4w4a, tmp_path):
    run, disk = tmp_path / "run", tmp_path / "other-disk"
    shutil.copytree(estimated_4w4a, run)
    disk.mkdir()
    shutil.move(run / "finn", disk / "run-finn")
    (run / "finn").symlink_to(disk / "run-finn")
    p = flow("estimate", "--run", run, "--no-committed-folding", "--target-fps", 30)  # a new build replaces the old
    assert p.returncode == 0, p.stderr[-1500:]
    assert (run / "finn").is_symlink() and sorted(q.name for q in disk.iterdir()) == ["run-finn"]
    assert json.loads((run / "finn/build_config.json").read_text())["target_fps"] == 30
    assert flow("deploy", "--run", run).returncode == 0
    shutil.rmtree(disk)  # the disk unmounted: refused, nothing created where it was
    p = flow("estimate", "--run", run)
    assert p.refused(f"{run / 'finn'}: a symlink to", "is that disk mounted?"), p.stderr[-1500:]
    assert not disk.exists()


def test_a_folding_search_reads_over_budget_builds_where_they_were_set_aside(estimated_4w4a, tmp_path):
    from flow.hw.fold import search_folding

    run = tmp_path / "run"
    shutil.copytree(estimated_4w4a, run)
    good = tree(run / "finn")
    search_folding(run, targets=(10000000,), wwidths=(100000,), quiet=True)  # nothing at that target fits
    tried = json.loads((run / "folding_search.json").read_text())["tried"]
    assert tried[0]["fits"] is False and tree(run / "finn") == good
    assert [t["how"] for t in tried][:1] == ["heuristic"]


def test_a_crafted_provenance_record_is_refused_not_followed(run, tmp_path):
    crosscheck = ("crosscheck", "--run", run, "--real", "1", "--random", "0", "--device", "cpu")
    (tmp_path / "elsewhere.json").write_text((run / "provenance.json").read_text())
    for crafted in ('["model.pt"]', '{"manifest.json": "x"}', '{"manifest.json": {"sha256": 1}}', "link"):
        (run / "provenance.json").unlink()
        if crafted == "link":
            (run / "provenance.json").symlink_to(tmp_path / "elsewhere.json")
        else:
            (run / "provenance.json").write_text(crafted)
        p = flow(*crosscheck)
        assert p.refused("provenance.json: not", "move it away"), (crafted, p.stderr[-1500:])
