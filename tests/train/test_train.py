"""64x64 smoke training: the loss goes down, a killed run resumes bit-identically, the end product exports."""

import json
from dataclasses import replace

import pytest
import torch

from flow.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from flow.train.builtin import synth_dataset

    return synth_dataset(tmp_path_factory.mktemp("data"), seed=1, n_train=12, n_val=4, size=96)


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(variant="4w4a", img=64, epochs=3, batch=4, data=str(data), out=str(out), optimizer="adamw",
                lr0=0.003, weight_decay=0.01, warmup_epochs=0.5, collect_stats_steps=2, eval_every=3, amp=False)
    return TrainConfig(**{**base, **kw})


def test_smoke_training_lowers_the_loss_and_exports(tiny_data, tmp_path):
    from flow.export import export_run

    cfg = _cfg(tiny_data, tmp_path / "run", epochs=6, resample="nearest")  # the cheap resample, end to end
    r = train(cfg, progress=False)
    losses = [row["loss"] for row in r["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 7  # header + one row an epoch
    assert 0.0 <= r["history"][-1]["ap50"] <= 1.0
    export_run(tmp_path / "run", checkpoint=tmp_path / "run" / "last.pt")
    from board.manifest import load_manifest

    manifest = load_manifest(tmp_path / "run")
    assert manifest.spec["img"] == 64 and len(manifest.spec["anchors"]) == 3
    assert manifest.spec["resample"] == manifest.input.resample == "nearest"  # the board letterboxes so


@pytest.fixture(scope="module")
def straight_run(tiny_data, tmp_path_factory):
    """Three epochs in one go, loading in the training process: the reference the resumed runs must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    return out, train(_cfg(tiny_data, out, workers=0), progress=False)


def _assert_same_run(straight, out, resumed):
    a = torch.load(straight[0] / "last.pt", weights_only=True)  # our checkpoints need no code to load
    b = torch.load(out / "last.pt", weights_only=True)
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume"
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in straight[1]["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in resumed["history"]]


def test_resume_after_a_kill_is_bit_identical(tiny_data, straight_run, tmp_path):
    train(_cfg(tiny_data, tmp_path, workers=0), progress=False, stop_after=1)  # as if killed after epoch 1
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # killed between last.pt and metrics.csv
    _assert_same_run(straight_run, tmp_path, train(_cfg(tiny_data, tmp_path, workers=0), resume=True, progress=False))
    assert [ln.split(",")[0] for ln in metrics.read_text().splitlines()] == ["epoch", "1", "2", "3"]


def test_workers_and_resume_change_nothing(tiny_data, straight_run, tmp_path):
    """2 persistent worker processes decoding per sample (no cache), killed after epoch 1 and resumed: the same
    weights as the in-process run (each sample depends on (seed, epoch, index) only, and the epoch reaches
    persistent workers with every index)."""
    train(_cfg(tiny_data, tmp_path, workers=2, cache="none"), progress=False, stop_after=1)
    resumed = train(_cfg(tiny_data, tmp_path, workers=2), resume=True, progress=False)
    _assert_same_run(straight_run, tmp_path, resumed)


def test_an_image_that_breaks_in_a_worker_names_the_file_and_the_run_resumes(tiny_data, tmp_path, monkeypatch):
    import shutil

    import flow.train.wider
    from flow.errors import FlowError
    from flow.train.wider import load_split

    # as if the file broke after the start-up check (which decodes every image before epoch 1): a worker finds it
    monkeypatch.setattr(flow.train.wider, "decodable", lambda samples, skip_bad=False: samples)

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = load_split(data, "train")[5].path
    good = victim.read_bytes()
    cfg = _cfg(data, tmp_path / "run", epochs=2, workers=2, cache="none", eval_every=5)
    train(cfg, progress=False, stop_after=1)
    victim.write_bytes(good[: len(good) // 3])  # header intact, scan data cut: found only when a worker decodes it
    with pytest.raises(FlowError, match=f"epoch 2: {victim}: cannot decode image.*--resume") as e:
        train(cfg, resume=True, progress=False)
    assert "Traceback" not in str(e.value)
    victim.write_bytes(good)
    assert train(cfg, resume=True, progress=False)["history"][-1]["epoch"] == 2


def test_resume_without_a_checkpoint_says_what_to_do(tiny_data, tmp_path):
    from flow.errors import FlowError

    with pytest.raises(FlowError, match="nothing to resume"):
        train(_cfg(tiny_data, tmp_path / "none"), resume=True, progress=False)


def test_unknown_optimizer_is_refused(tiny_data, tmp_path):
    from flow.errors import FlowError

    with pytest.raises(FlowError, match="optimizer"):
        train(replace(_cfg(tiny_data, tmp_path / "x"), optimizer="lion"), progress=False)


def test_ddp_two_ranks_on_cpu_stay_identical_on_their_own_halves(tiny_data, tmp_path):
    """torchrun --nproc_per_node 2 with gloo: the ranks end with identical weights (Brevitas's activation scales,
    initialised from each rank's own batches, included), each loaded its own half of the set, only rank 0 saved."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from flow.train.wider import load_split

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    torchrun = Path(sys.executable).with_name("torchrun")
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2",
                        str(Path(__file__).with_name("ddp_run.py")), str(tiny_data), str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    p0, p1 = (torch.load(tmp_path / f"params{k}.pt") for k in (0, 1))
    assert p0.keys() == p1.keys() and len(p0) > 20
    differ = [k for k in p0 if not torch.equal(p0[k], p1[k])]
    assert not differ, f"ranks disagree on {differ}"
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    halves = [{i for _, i in r["seen"]} for r in ranks]
    n = len(load_split(tiny_data, "train"))
    assert all(len(h) == n // 2 for h in halves) and not halves[0] & halves[1]
    assert halves[0] | halves[1] == set(range(n))
    assert ranks[1]["saved"] == [] and ranks[0]["saved"] and (tmp_path / "run" / "last.pt").is_file()


def test_a_broken_val_split_fails_before_the_first_epoch(tiny_data, tmp_path):
    import shutil

    from flow.train.wider import AnnotationError

    data = shutil.copytree(tiny_data, tmp_path / "data")
    val = data / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    val.write_text(val.read_text().replace("\n", "\nnot-a-count\n", 1))  # line 2: the first face count
    with pytest.raises(AnnotationError, match=r"wider_face_val_bbx_gt.txt:2: expected a face count"):
        train(_cfg(data, tmp_path / "run", eval_every=100), progress=False)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_train_skip_bad_skips_what_the_error_tells_to_skip(tiny_data, tmp_path):
    import shutil

    data = shutil.copytree(tiny_data, tmp_path / "data")
    txt = data / "wider_face_split" / "wider_face_train_bbx_gt.txt"
    txt.write_text(txt.read_text() + "0--Synth_train/missing.jpg\n1\n1 2 30 40 0 0 0 0 0 0\n")
    with pytest.warns(UserWarning, match="skipped 1 bad entry"):
        r = train(_cfg(data, tmp_path / "run", epochs=1, skip_bad=True), progress=False)
    assert len(r["history"]) == 1


def test_train_does_not_start_over_in_a_run_unless_forced(tiny_data, tmp_path):
    from flow.errors import FlowError

    train(_cfg(tiny_data, tmp_path / "run", epochs=1), progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(FlowError, match="already holds a training run.*--resume.*--force"):
        train(_cfg(tiny_data, tmp_path / "run", epochs=1), progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.qonnx.onnx").write_bytes(b"the user's own model")
    with pytest.raises(FlowError, match="model.qonnx.onnx is not the flow's own output"):
        train(_cfg(tiny_data, tmp_path / "mine", epochs=1), progress=False)
    assert (tmp_path / "mine" / "model.qonnx.onnx").read_bytes() == b"the user's own model"
    train(_cfg(tiny_data, tmp_path / "run", epochs=1), progress=False, force=True)
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 2  # started afresh: header + 1 epoch


def test_train_options_take_effect_or_are_refused(tiny_data, tmp_path, capsys):
    from flow.errors import FlowError
    from flow.train.loop import cli

    (tmp_path / "file").write_text("x")
    for argv, msg in ((["--epochs", "0"], "--epochs 0: must be positive"), (["--img", "0"], "--img 0: must be positive"),
                      (["--img", "50"], "--img 50: .*multiple of 32"), (["--batch", "0"], "--batch 0: must be positive"),
                      (["--device", "tpu"], "--device tpu: use auto, cpu, cuda"),
                      (["--out", str(tmp_path / "file")], "an existing file")):
        with pytest.raises(FlowError, match=msg):
            cli(argv)
    run = tmp_path / "run"
    train(_cfg(tiny_data, run, epochs=2, eval_every=1), progress=False, stop_after=1)
    with pytest.raises(FlowError, match=r"keeps the options it was started with; refused: --img 96 \(the run has 64\)"):
        cli(["--resume", "--out", str(run), "--img", "96"])
    with pytest.raises(FlowError, match=r"refused: --resample nearest \(the run has bilinear-exact\)"):
        cli(["--resume", "--out", str(run), "--resample", "nearest"])
    with pytest.raises(FlowError, match="has 1 epochs done"):
        train(_cfg(tiny_data, run, epochs=0), resume=True, progress=False)
    # --epochs on --resume takes effect: the run goes on to 3 epochs (not its original 2), and says so
    assert cli(["--resume", "--out", str(run), "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 1 of 3 (was 2" in out
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["epochs"] == 3


def test_a_frame_the_models_resize_cannot_have_is_refused_before_training(tmp_path):
    from flow.export import ExportError
    from flow.train.loop import cli

    with pytest.raises(ExportError, match="--frame 640x480: the fabric letterbox computes bilinear-exact"):
        cli(["--resample", "bilinear", "--frame", "640x480", "--out", str(tmp_path / "run")])
    with pytest.raises(ExportError, match="WIDTHxHEIGHT"):
        cli(["--frame", "vga", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
