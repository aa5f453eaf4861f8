"""docker/ and the shell scripts pass hadolint and shellcheck (both come with the dev extra)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not path:
        pytest.fail(f"{name} not installed: `pip install -e '.[dev]'` brings it")
    return path


@pytest.mark.parametrize("dockerfile", ["finn.Dockerfile", "gpu.Dockerfile"])
def test_dockerfiles_pass_hadolint(dockerfile):
    r = subprocess.run([_tool("hadolint"), str(ROOT / "docker" / dockerfile)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_shell_scripts_pass_shellcheck():
    scripts = [ROOT / ".ci" / "run", *sorted((ROOT / "docker").glob("*.sh")), *sorted((ROOT / "board").glob("*/*.sh"))]
    r = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_run_sh_refuses_without_vivado(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "FINN_XILINX_PATH": str(tmp_path), "FINN_XILINX_VERSION": "2024.2"}
    r = subprocess.run([str(ROOT / "docker" / "run.sh"), "true"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "no Vivado at" in r.stderr
    r = subprocess.run([str(ROOT / "docker" / "run.sh"), "true"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode != 0 and "FINN_XILINX_PATH" in r.stderr


def test_hls_reaches_the_build_in_the_container(tmp_path):
    """`make docker-bitstream HLS=1` hands HLS=1 to the `make bitstream` run in the container, which passes --hls."""
    (tmp_path / "Vivado" / "2024.2").mkdir(parents=True)
    make = subprocess.run(["make", "-n", "docker-bitstream", "RUN=/tmp/run-1", "HLS=1"], capture_output=True,
                          text=True, cwd=ROOT)
    assert make.returncode == 0 and "docker/run.sh make bitstream RUN=/tmp/run-1 HLS=1" in make.stdout, make.stdout
    env = {"PATH": "/usr/bin:/bin", "FINN_XILINX_PATH": str(tmp_path), "FINN_XILINX_VERSION": "2024.2", "DRY_RUN": "1"}
    r = subprocess.run([str(ROOT / "docker" / "run.sh"), "make", "bitstream", "RUN=/tmp/run-1", "HLS=1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["docker", "run"] and "lpyolo-flow-finn:latest make bitstream RUN=/tmp/run-1 HLS=1" in r.stdout
    inside = subprocess.run(["make", "-n", "bitstream", "RUN=/tmp/run-1", "HLS=1", "LPYOLO_VENV=/opt/venv"],
                            capture_output=True, text=True, cwd=ROOT)
    assert "-m flow bitstream --run /tmp/run-1 --hls" in inside.stdout, inside.stdout + inside.stderr
    plain = subprocess.run(["make", "-n", "docker-bitstream", "RUN=/tmp/run-1"], capture_output=True, text=True, cwd=ROOT)
    assert "HLS=1" not in plain.stdout


def test_run_sh_finds_the_2025_layout(tmp_path):
    """Vivado 2025.x installs to <root>/<version>/Vivado, not <root>/Vivado/<version>."""
    (tmp_path / "2025.2" / "Vivado").mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "FINN_XILINX_PATH": str(tmp_path), "FINN_XILINX_VERSION": "2025.2", "DRY_RUN": "1"}
    r = subprocess.run([str(ROOT / "docker" / "run.sh"), "true"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and f"FINN_XILINX_PATH={tmp_path}" in r.stdout, r.stderr
