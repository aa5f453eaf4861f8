"""The Make targets as the README types them: every target's dry run shows the `python -m flow` command it stands
for (with RUN/IMG/EPOCHS/DATA honoured), and the cheap ones run for real on a tiny run folder outside the repo."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # the environment running the tests: make's $(PY) is this interpreter
PRESETS = ["4w4a", "2w4a", "3w5a", "4w2a", "6w4a", "8w3a", "8w8a", "float"]


def make(*args, dry=False, timeout=600) -> subprocess.CompletedProcess:
    # -o: never (re)install from a test, whatever the stamp's age; VENV: this interpreter's environment
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), *(["-n"] if dry else []), "-o", f"{VENV}/.installed",
           f"VENV={VENV}", *map(str, args)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUN", "IMG", "EPOCHS", "DATA", "VARIANT", "FORCE", "SKIP_BAD", "RESAMPLE", "MODEL", "DEVICE",
                         "PYNQ_IP")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    heads = {m for m in re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}
    presets = re.search(r"^PRESETS\s*:=\s*(.+)$", text, re.M).group(1).split()
    assert presets == PRESETS
    return heads | {f"train-{p}" for p in presets}


def readme_targets() -> set[str]:
    text = (ROOT / "README.md").read_text() + (ROOT / "board" / "README.md").read_text()
    return set(re.findall(r"\bmake ([a-z][\w-]*)", text))


R = "/tmp/elsewhere/run-1"
PY = f"{VENV}/bin/python"
# target -> (extra make arguments, what its dry run must show)
EXPECTED = {
    "test": ([], [f"{VENV}/bin/ruff check flow models board tests", f"{PY} -m pytest -q"]),
    "lint": ([], [f"{VENV}/bin/ruff check flow models board tests"]),
    "demo": ([], [f"{PY} -m flow demo --out runs/demo"]),
    "data": ([], [f"{PY} -m flow data synth"]),
    "export": ([f"RUN={R}", "IMG=64"], [f"{PY} -m flow export --variant 4w4a --img 64 --out {R}"]),
    "import": ([f"RUN={R}", "MODEL=their.onnx"], [f"{PY} -m flow import their.onnx --out {R}"]),
    "qcdq": ([f"RUN={R}"], [f"{PY} -m flow qcdq {R}/model.qonnx.onnx {R}/model.qcdq.onnx"]),
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
    "bench-a9": (["A9_DIR=/tmp/a9"], ["bash board/a9/setup.sh /tmp/a9", f"{PY} -m board bench --a9 /tmp/a9 --json /tmp/a9/bench.json"]),
    "board-py310-wheels": (["PY310_WHEELS=/tmp/w"], ["python3.10 -m pip download --only-binary=:all: -d /tmp/w pip==22.0.2 "
                                                      "setuptools==59.6.0 numpy==1.21.5 Pillow==9.0.1 opencv-python-headless==4.5.4.60"]),
    "clean": ([], ["rm -rf runs build .pytest_cache"]),
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


def test_install_dry_run_builds_the_venv_it_is_given(tmp_path):
    venv = tmp_path / "venv"
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "-n", "install", f"VENV={venv}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"python3 -m venv {venv}" in r.stdout and "install -q --no-deps finn-plus==1.6.1" in r.stdout
    assert not venv.exists()


def test_deploy_board_without_an_address_says_what_to_set(tmp_path):
    r = make("deploy-board", f"RUN={tmp_path}", "-o", "deploy")
    assert r.returncode != 0 and "set PYNQ_IP=" in r.stdout


def test_the_cheap_targets_run_for_real_on_a_tiny_run_folder(tmp_path):
    """make train-4w4a EPOCHS=1 IMG=64 -> export -> qcdq -> crosscheck -> estimate -> deploy, RUN outside the repo."""
    from flow.train.data import synth_dataset

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
    assert json.loads((run / "manifest.json").read_text())["input"]["shape"] == [1, 3, 64, 64]
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
