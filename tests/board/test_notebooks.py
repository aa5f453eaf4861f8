"""The board notebooks run top to bottom on the simulated overlay, from inside a deploy package."""

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
    if name == "inference":  # boxes drawn on the sample photos, shown in the notebook
        assert (nb_dir / "out" / "astronaut.png").exists() and text.count('"image/png"') >= 3
    if name == "video":  # annotated frames: shown live, and written to a clip on the host
        from PIL import Image

        with Image.open(nb_dir / "annotated.gif") as clip:
            assert clip.n_frames == 30
        assert '"image/png"' in text and "30 frames: accelerator" in text
    if name == "benchmark":  # per-stage time and FPS plotted
        assert (nb_dir / "benchmark.png").exists() and '"image/png"' in text and "FPS from the stage times" in text
    if name == "evaluate":
        assert (nb_dir / "wider_predictions" / "astronaut.txt").read_text().startswith("astronaut\n")
