"""The board notebooks run top to bottom on the simulated overlay, from inside a deploy package."""

import dataclasses
import re
import shutil

import pytest

from flow.deploy import make_deploy


@pytest.fixture(scope="module")
def deploy_dir(tmp_path_factory, run_4w4a):
    run = tmp_path_factory.mktemp("nb") / "run"
    shutil.copytree(run_4w4a, run)
    make_deploy(run)
    return run / "deploy"


@pytest.mark.parametrize("name", ["inference", "video", "evaluate", "benchmark"])
def test_notebook_runs_on_simulated_overlay(deploy_dir, name):
    import papermill

    nb_dir = deploy_dir / "notebooks"
    out = nb_dir / f"{name}.out.ipynb"
    papermill.execute_notebook(str(nb_dir / f"{name}.ipynb"), str(out), parameters={"use_hw": False},
                               cwd=str(nb_dir), kernel_name="python3", progress_bar=False)
    text = out.read_text()
    assert '"ename"' not in text  # no cell raised
    if name in ("inference", "video"):  # frames reach the browser as JPEG: a PNG costs the A9 ~100x the encoding
        assert '"image/png"' not in text and '"image/jpeg"' in text
    if name == "inference":  # boxes drawn on the sample photos, shown in the notebook
        assert (nb_dir / "out" / "astronaut.jpg").exists() and text.count('"image/jpeg"') >= 3
    if name == "video":  # a live view at its own rate, newest frame first; the frames shown also make a clip
        from PIL import Image

        shown = re.search(r"60 frames: accelerator .*; shown (\d+), dropped (\d+)", text)
        assert shown, text[-3000:]
        with Image.open(nb_dir / "annotated.gif") as clip:
            assert 1 <= clip.n_frames <= int(shown[1])  # PIL merges a repeated frame into the one before
        assert int(shown[1]) >= 2
    if name == "benchmark":  # stages timed where it runs, the pipeline end to end; scaled only in simulation, and said
        assert (nb_dir / "benchmark.png").exists() and '"image/png"' in text
        assert "| accelerator_execute |" in text and "end to end, 40 frames (this host, measured" in text
        assert "SIMULATION: the A9 figures above are an ESTIMATE scaled from this host" in text
    if name == "evaluate":
        assert (nb_dir / "wider_predictions" / "astronaut.txt").read_text().startswith("astronaut\n")


def test_benchmark_notebook_times_a_frame_build(deploy_dir, tmp_path):
    """A frame build (the letterbox in the fabric): the notebook times the decode into the accelerator's own input
    buffer, its flush, the accelerator and the pipeline, with no letterbox on the host."""
    import papermill

    from board.manifest import load_manifest

    dep = tmp_path / "deploy"
    shutil.copytree(deploy_dir, dep, ignore=shutil.ignore_patterns("*.out.ipynb", "benchmark.png"))
    m = load_manifest(dep / "manifest.json")
    m.replace(input=dataclasses.replace(m.input, frame=(96, 72), resample="bilinear-exact")).write(dep / "manifest.json")
    out = dep / "notebooks" / "benchmark.out.ipynb"
    papermill.execute_notebook(str(dep / "notebooks" / "benchmark.ipynb"), str(out), parameters={"use_hw": False},
                               cwd=str(dep / "notebooks"), kernel_name="python3", progress_bar=False)
    text = out.read_text()
    assert '"ename"' not in text
    for row in ("frame_decode_into_dma_buffer", "accelerator_flush_frame_buffer", "accelerator_execute",
                "draw"):
        assert f"| {row} |" in text, row
    assert "frame build) | ms per 640x480 frame |" in text and "| letterbox_640x480 |" not in text
    assert "| capture_decode_640x480_jpeg |" not in text  # timed into the real buffer instead
    assert "end to end, 40 frames (this host, measured" in text and "| letterbox | 0.0" in text
