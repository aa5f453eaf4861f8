"""The deploy package on the PYNQ-Z2 image's own software: Python 3.10, pip 22.0.2, setuptools 59.6, numpy 1.21.5,
Pillow 9.0.1, OpenCV 4.5.4 (the PYNQ 3.0.1 image, https://github.com/Xilinx/PYNQ/releases). It installs offline
as on a board (no index, no build isolation) and runs the simulated board end to end there, giving the same
detections as on this host.

A board has no ONNX Runtime: the simulated overlay's golden model runs here once, on this host, recording each
accelerator input's outputs; on 3.10 the overlay replays them, keyed by the input's bytes, so every stage of the
board's own code (decode, letterbox, DMA packing, unpack, decode + NMS, draw) runs on the old stack, and a
letterbox that differs by one byte from this host's fails the lookup.

Needs a wheelhouse for cp310 (tests never download): `make board-py310-wheels` fills one; point
LPYOLO_PY310_WHEELS at it. Without it, or without a python3.10, the test is skipped and says why.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flow.deploy import make_deploy

BOARD_IMAGE = ["pip==22.0.2", "setuptools==59.6.0", "numpy==1.21.5", "Pillow==9.0.1", "opencv-python-headless==4.5.4.60"]


def python310() -> str | None:
    """LPYOLO_PY310, else a python3.10 that runs (a pyenv shim on PATH may not), else pyenv's own 3.10 builds."""
    for py in [os.environ.get("LPYOLO_PY310"), shutil.which("python3.10"),
               *sorted(map(str, Path.home().glob(".pyenv/versions/3.10*/bin/python3.10")))]:
        if py and subprocess.run([py, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"],
                                 capture_output=True).returncode == 0:
            return py
    return None

# Runs the deploy's board package: records the golden model's outputs ("record", on this host) or replays them
# ("replay", on 3.10), then `python -m board run --sim` on the sample photos and a stage bench.
RUNNER = r'''
import hashlib, json, sys
import numpy as np
import board.sim
from board.__main__ import main

mode, table_path, images, out = sys.argv[1:5]

def key(x):
    return hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()

if mode == "record":
    real = board.sim.golden_session
    table = {}
    class Recording:
        def __init__(self, model):
            self.sess = real(model)
        def get_inputs(self):
            return self.sess.get_inputs()
        def run(self, names, feeds):
            (x,) = feeds.values()
            y = self.sess.run(names, feeds)
            table[key(x)] = y[0]
            return y
    board.sim.golden_session = Recording
else:
    table = dict(np.load(table_path))
    class Input:
        name = "x"
    class Replay:
        def __init__(self, model):
            pass
        def get_inputs(self):
            return [Input()]
        def run(self, names, feeds):
            (x,) = feeds.values()
            k = key(x)
            if k not in table:
                raise SystemExit("an accelerator input differs from the host's (letterbox or decode differs on this stack)")
            return [table[k]]
    board.sim.golden_session = Replay

rc = main(["run", "--sim", "--deploy", ".", "--images", images, "--out", out])
if mode == "record":
    np.savez(table_path, **table)
else:
    rc = rc or main(["bench", "--reps", "1"])
import PIL, cv2
print("versions", json.dumps({"python": sys.version.split()[0], "numpy": np.__version__, "pillow": PIL.__version__,
                              "opencv": cv2.__version__}))
sys.exit(rc)
'''


def run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def board_image_venv(py310: str, venv: Path, wheels: Path) -> Path:
    """A venv with the PYNQ 3.0.1 image's Python packages, from the wheelhouse only."""
    run([py310, "-m", "venv", str(venv)], venv.parent)
    py = venv / "bin" / "python"
    offline = ["-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels)]
    run([py, *offline, *BOARD_IMAGE[:2]], venv.parent)  # the image's pip and setuptools first, then with them the rest
    run([py, *offline, *BOARD_IMAGE[2:]], venv.parent)
    return py


@pytest.mark.slow
def test_board_package_installs_and_runs_on_the_board_images_python(tmp_path, request):
    wheels, py310 = os.environ.get("LPYOLO_PY310_WHEELS"), python310()
    if py310 is None:
        pytest.skip("no python3.10 (the PYNQ-Z2 image's Python) on this machine: set LPYOLO_PY310 to one")
    if not wheels or not Path(wheels).is_dir():
        pytest.skip("LPYOLO_PY310_WHEELS is not set to a cp310 wheelhouse: `make board-py310-wheels` makes one "
                    "(build/py310-wheels), tests never download")
    run_dir = tmp_path / "run"
    shutil.copytree(request.getfixturevalue("run_4w4a"), run_dir)  # built only when the test runs
    make_deploy(run_dir)
    dep = run_dir / "deploy"
    (dep / "runner.py").write_text(RUNNER)
    table = tmp_path / "golden.npz"
    host = run([sys.executable, "runner.py", "record", str(table), "samples", str(tmp_path / "host_out")], dep,
               env={**os.environ, "PYTHONPATH": str(dep)})

    py = board_image_venv(py310, tmp_path / "v310", Path(wheels))
    pip = run([py, "-m", "pip", "--version"], tmp_path).stdout
    assert pip.startswith("pip 22.0.2") and "python 3.10" in pip
    # as on the board: no index, no build isolation (setuptools 59.6 reads the deploy's setup.py), no internet
    run([py, "-m", "pip", "install", "--no-index", "--no-build-isolation", str(dep)], tmp_path)
    (dep / "board").rename(dep / "board.off")  # the installed package runs, not the folder's copy
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        board = run([py, "-I", str(dep / "runner.py"), "replay", str(table), "samples", str(tmp_path / "board_out")],
                    dep, env=env)
    finally:
        (dep / "board.off").rename(dep / "board")
    versions = json.loads(board.stdout.rsplit("versions ", 1)[1].splitlines()[0])
    assert versions == {"python": versions["python"], "numpy": "1.21.5", "pillow": "9.0.1", "opencv": "4.5.4"}
    assert versions["python"].startswith("3.10.")
    assert "site-packages/board" in run([py, "-I", "-c", "import board; print(board.__file__)"], tmp_path).stdout
    ours = json.loads((tmp_path / "board_out" / "detections.json").read_text())
    theirs = json.loads((tmp_path / "host_out" / "detections.json").read_text())
    assert ours["stats"]["frames"] == theirs["stats"]["frames"] == len(list((dep / "samples").iterdir())) > 0
    assert ours["detections"] == theirs["detections"]  # same boxes, scores, classes on both stacks
    assert (tmp_path / "board_out" / "astronaut.png").exists()
    assert "ms CPU per 640x480 frame" in board.stdout and "frame(s)" in host.stdout
