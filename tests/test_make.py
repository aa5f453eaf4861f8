"""The Make targets as the README types them: every target's dry run shows the `python -m flow` command it stands
for (with RUN/IMG/EPOCHS/DATA honoured), and the cheap ones run for real on a tiny run folder outside the repo."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from board.manifest import load_manifest
from models import PRESETS

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the environment running the tests: make's $(PY) is this interpreter


def make(*args, dry=False, timeout=600) -> subprocess.CompletedProcess:
    # -o: never (re)install from a test, whatever the stamp's age; VENV: this interpreter's environment
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), *(["-n"] if dry else []), "-o", f"{VENV}/.installed",
           f"VENV={VENV}", *map(str, args)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUN", "IMG", "EPOCHS", "DATA", "VARIANT", "FORCE", "SKIP_BAD", "RESAMPLE", "MODEL", "DEVICE",
                         "PYNQ_IP", "LPYOLO_VENV")}  # VENV= names this interpreter's venv; LPYOLO_VENV would swap `install`
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    heads = {m for m in re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}
    return heads | {f"train-{p}" for p in makefile_presets()}


def makefile_presets() -> list[str]:
    r = make("--eval", "print-presets: ; @echo $(PRESETS)", "print-presets")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_the_makefile_asks_the_flow_for_the_presets_without_the_venv():
    """The Makefile's train-<preset> targets are models.PRESETS, as `python -m flow presets` prints them; that
    command works without the venv (no site-packages: no torch), so the Makefile can ask before `make install`."""
    assert makefile_presets() == list(PRESETS)
    r = subprocess.run([sys.executable, "-S", "-m", "flow", "presets"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.split() == list(PRESETS), r.stderr
    r = make("--eval", "print-presets: ; @echo $(PRESETS)", "print-presets", "PY_SYS=false")
    assert "listed no presets" in r.stderr


def readme_targets() -> set[str]:
    text = (ROOT / "README.md").read_text() + (ROOT / "board" / "README.md").read_text()
    return set(re.findall(r"\bmake ([a-z][\w-]*)", text))


R = "/tmp/elsewhere/run-1"
PY = f"{VENV}/bin/python"
# target -> (extra make arguments, what its dry run must show)
EXPECTED = {
    "test": ([], [f"{VENV}/bin/ruff check flow models board tests", f'{PY} -m pytest -q -m "not slow"']),
    "test-slow": ([], [f"{PY} -m pytest -q -m slow"]),
    "lock": (["LOCK_VENV=/tmp/lock"], ["python3 -m venv /tmp/lock", f"{PY} -m flow env finn-requirements > /tmp/lock/finn-requirements.txt",
                                       "/tmp/lock/bin/python -m pip install -q -e '.[dev,finn]' -r /tmp/lock/finn-requirements.txt",
                                       "/tmp/lock/bin/python -m pip install -q --no-deps finn-plus==1.6.1",
                                       f"{PY} -m flow env lock --venv /tmp/lock"]),
    "lint": ([], [f"{VENV}/bin/ruff check flow models board tests"]),
    "demo": ([], [f"{PY} -m flow demo --out runs/demo"]),
    "data": ([], [f"{PY} -m flow data synth"]),
    "export": ([f"RUN={R}", "IMG=64"], [f"{PY} -m flow export --variant 4w4a --img 64 --out {R}"]),
    "import": ([f"RUN={R}", "MODEL=their.onnx"], [f"{PY} -m flow import their.onnx --out {R}"]),
    "qcdq": ([f"RUN={R}"], [f"{PY} -m flow qcdq {R}/model.qonnx.onnx {R}/model.qcdq.onnx"]),
    "qcdq-int": ([f"RUN={R}"], [f"{PY} -m flow qcdq --integer {R}/model.qonnx.onnx {R}/model.int.onnx"]),
    "crosscheck": ([f"RUN={R}", "DEVICE=cpu"], [f"{PY} -m flow crosscheck --run {R} --device cpu"]),
    "estimate": ([f"RUN={R}"], [f"{PY} -m flow estimate --run {R}"]),
    "bitstream": ([f"RUN={R}"], [f"{PY} -m flow bitstream --run {R}"]),
    "docker-bitstream": ([f"RUN={R}"], [f"docker/run.sh make bitstream RUN={R}"]),
    "fifos": ([f"RUN={R}"], [f"{PY} -m flow fifos --run {R}"]),
    "rtlsim": ([f"RUN={R}"], [f"{PY} -m flow rtlsim --run {R}"]),
    "synth": ([f"RUN={R}"], [f"{PY} -m flow synth --run {R}"]),
    "deploy": ([f"RUN={R}"], [f"{PY} -m flow deploy --run {R}"]),
    "deploy-board": ([f"RUN={R}", "PYNQ_IP=192.168.2.99"],
                     [f"{PY} -m flow deploy --run {R}", f"{PY} -m flow deploy --run {R} --board 192.168.2.99"]),
    "bench": ([], [f"{PY} -m flow bench crosscheck"]),
    "bench-a9": (["A9_DIR=/tmp/a9"], ["bash flow/a9/setup.sh /tmp/a9", f"{PY} -m flow bench a9 --a9 /tmp/a9 --json /tmp/a9/bench.json"]),
    "clean": ([], ["rm -rf .pytest_cache .ruff_cache build",
                   "find flow models board tests -name __pycache__ -type d -prune -exec rm -rf {} +"]),
    "clean-runs": ([f"RUNS={R}", "CONFIRM=1"], [f"rm -rf {R}"]),
    "board-py310-wheels": (["PY310_WHEELS=/tmp/w"], ["python3.10 -m pip download --only-binary=:all: -d /tmp/w pip==22.0.2 "
                                                      "setuptools==59.6.0 numpy==1.21.5 Pillow==9.0.1 opencv-python-headless==4.5.4.60"]),
    **{f"train-{p}": ([f"RUN={R}", "IMG=64", "EPOCHS=1", "DATA=/data/WIDER_FACE"],
                      [f"{PY} -m flow train --variant {p} --img 64 --data /data/WIDER_FACE --epochs 1 --device auto "
                       f"--out {R}"]) for p in PRESETS},
}


def test_every_target_is_tested_and_every_readme_target_exists():
    assert makefile_targets() - {"install"} == set(EXPECTED), "a Make target without a dry-run expectation here"
    assert readme_targets() <= makefile_targets(), readme_targets() - makefile_targets()


@pytest.mark.parametrize("target", sorted(EXPECTED))
def test_dry_run_shows_the_command(target):
    args, lines = EXPECTED[target]
    r = make(target, *args, dry=True)
    assert r.returncode == 0, r.stderr
    shown = [" ".join(line.split()) for line in r.stdout.splitlines()]  # empty $(if ...)s leave double spaces
    for line in lines:
        assert line in shown, f"`make {target}` does not run `{line}`; it runs:\n{r.stdout}"
    assert "Nothing to be done" not in r.stdout + r.stderr


def test_train_defaults_to_the_presets_run_folder_and_forwards_force():
    r = make("train-2w4a", dry=True)
    assert " ".join(r.stdout.split()) == f"{PY} -m flow train --variant 2w4a --device auto --out runs/2w4a", r.stdout
    r = make("train-4w4a", "FORCE=1", "SKIP_BAD=1", dry=True)
    assert r.stdout.strip().endswith("--out runs/4w4a --skip-bad --force"), r.stdout
    r = make("train-4w4a", "RESAMPLE=nearest", dry=True)
    assert " --resample nearest --device auto --out runs/4w4a" in r.stdout, r.stdout
    r = make("export", f"RUN={R}", "FORCE=1", dry=True)
    assert r.stdout.strip().endswith("--force"), r.stdout


def test_frame_reaches_train_and_export():
    r = make("train-4w4a", "FRAME=1280x720", dry=True)
    assert " --frame 1280x720 --device auto --out runs/4w4a" in r.stdout, r.stdout
    r = make("export", f"RUN={R}", "IMG=64", "FRAME=none", dry=True)
    assert f"-m flow export --variant 4w4a --img 64 --frame none --out {R}" in " ".join(r.stdout.split()), r.stdout


def test_install_dry_run_builds_the_venv_it_is_given(tmp_path):
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "LPYOLO_VENV"}  # a prepared venv is never (re)installed
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-n", "install", f"VENV={venv}"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert f"python3 -m venv {venv}" in r.stdout and "install -q -c constraints.txt --no-deps finn-plus==1.6.1" in r.stdout
    assert r.stdout.count("-m pip install -q -c constraints.txt ") == 4  # every install step takes the tested pins
    assert f"sha256sum constraints.txt > {venv}/.installed" in r.stdout
    assert not venv.exists()


def test_deploy_board_without_an_address_says_what_to_set(tmp_path):
    r = make("deploy-board", f"RUN={tmp_path}", "-o", "deploy")
    assert r.returncode != 0 and "set PYNQ_IP=" in r.stdout


def test_the_cheap_targets_run_for_real_on_a_tiny_run_folder(tmp_path):
    """make train-4w4a EPOCHS=1 IMG=64 -> export -> qcdq -> crosscheck -> estimate -> deploy, RUN outside the repo."""
    from flow.train.builtin import synth_dataset

    data = synth_dataset(tmp_path / "data", seed=2, n_train=12, n_val=4, size=96)
    run = tmp_path / "run"
    runs = ROOT / "runs"
    before = sorted(p.name for p in runs.iterdir()) if runs.exists() else None
    steps = [("train-4w4a", "EPOCHS=1", "IMG=64", f"DATA={data}", "DEVICE=cpu"), ("export", "IMG=64"), ("qcdq",),
             ("crosscheck", "DEVICE=cpu"), ("estimate",), ("deploy",)]
    for target, *args in steps:
        r = make(target, f"RUN={run}", *args)
        assert r.returncode == 0, f"make {target}: {r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert json.loads((run / "config.json").read_text())["epochs"] == 1
    assert load_manifest(run).input.shape == [1, 3, 64, 64]
    assert not json.loads((run / "crosscheck.json").read_text())["any_mismatch"]
    assert json.loads((run / "finn/report/estimate.json").read_text())["fits"]
    assert (run / "deploy" / "manifest.json").is_file()
    assert (sorted(p.name for p in runs.iterdir()) if runs.exists() else None) == before, "wrote into the repo's runs/"
    r = make("train-4w4a", f"RUN={run}", "EPOCHS=1", "IMG=64", f"DATA={data}")  # a second time: refused, kept
    assert r.returncode != 0 and "already holds a training run" in r.stderr


def test_demo_retrains_only_in_its_own_folder(tmp_path):
    """`make demo` twice retrains in runs/demo (its marker), but `flow demo --out` a user's run does not start over."""
    from flow.demo import cli, steps

    assert "--force" in dict((n, a) for n, a, _ in steps(tmp_path, 64, 1, "4w4a", again=True))["train"]
    assert "--force" not in dict((n, a) for n, a, _ in steps(tmp_path, 64, 1, "4w4a"))["train"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"mine": true}')
    assert cli(["--out", str(theirs), "--quiet"]) == 1
    assert (theirs / "config.json").read_text() == '{"mine": true}' and not (theirs / "demo.json").exists()


def test_clean_removes_caches_only_and_clean_runs_lists_then_asks(tmp_path):
    """`make clean` in a checkout with trained runs keeps them; `make clean-runs` lists them and deletes nothing
    without CONFIRM=1 (non-zero exit), and deletes them with it."""
    best = tmp_path / "runs" / "4w4a" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weeks of training")
    caches = [tmp_path / d for d in ("flow/__pycache__", "tests/train/__pycache__", ".pytest_cache", ".ruff_cache",
                                     "build/armhf")]
    for d in caches:
        d.mkdir(parents=True)
        (d / "x").write_text("cached")

    def make_here(*args):  # as typed in that checkout: the repository's Makefile, run in tmp_path
        return subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path),
                               *args], capture_output=True, text=True, timeout=60)

    r = make_here("clean")
    assert r.returncode == 0, r.stderr
    assert not any(d.exists() for d in caches) and best.read_bytes() == b"weeks of training"
    assert (tmp_path / "flow").is_dir() and (tmp_path / "tests/train").is_dir()
    r = make_here("clean-runs")
    assert r.returncode != 0 and "runs/4w4a" in r.stdout and "CONFIRM=1" in r.stdout, r.stdout
    assert best.read_bytes() == b"weeks of training"
    r = make_here("clean-runs", "CONFIRM=1")
    assert r.returncode == 0 and "runs/4w4a" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "runs").exists()
    r = make_here("clean-runs")
    assert r.returncode == 0 and "no run folders" in r.stdout
def test_ci_runs_the_fast_suite_and_the_slow_cases():
    """`make test` leaves the cases marked slow out; CI runs them too, after it."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci.index("make test") < ci.index("make test-slow")
    marked = [p for p in (ROOT / "tests").rglob("test_*.py") if "mark.slow" in p.read_text()]
    assert len(marked) >= 2, marked  # the preset sweeps through FINN and Verilator


@pytest.mark.slow  # two whole demos (small: 64x64, one epoch), FINN estimate included
def test_the_demo_reproduces(tmp_path):
    """Two demos give the same AP50 and the same boxes, on the photos and on the built-in pictures, and each
    records the environment it ran in."""
    from flow.demo import THREADS, cli

    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert cli(["--out", str(out), "--img", "64", "--epochs", "1", "--quiet"]) == 0
    def figures(out):
        ev = json.loads((out / "eval.json").read_text())
        boxes = [json.loads((out / f / "detections.json").read_text())["detections"] for f in ("board_out", "board_out_builtin")]
        return {k: v for k, v in ev.items() if "ap" in k.lower() and isinstance(v, float)}, boxes

    (ap, boxes), again = figures(runs[0]), figures(runs[1])
    assert ap and (ap, boxes) == again
    assert len(boxes[1]) == 4  # the built-in pictures beside the photos
    env = json.loads((runs[0] / "demo.json").read_text())["environment"]
    assert env["torch_threads"] == THREADS and env["deterministic_algorithms"] and env["python"]
