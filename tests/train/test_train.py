"""64x64 smoke training: the loss goes down, a killed run resumes bit-identically, the end product exports."""

import json
from dataclasses import replace

import pytest
import torch

from flow.train.loop import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from flow.train.data import synth_dataset

    return synth_dataset(tmp_path_factory.mktemp("data"), seed=1, n_train=12, n_val=4, size=96)


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(variant="4w4a", img=64, epochs=3, batch=4, data=str(data), out=str(out), optimizer="adamw",
                lr0=0.003, weight_decay=0.01, warmup_epochs=0.5, collect_stats_steps=2, eval_every=3, amp=False)
    return TrainConfig(**{**base, **kw})


def test_smoke_training_lowers_the_loss_and_exports(tiny_data, tmp_path):
    from flow.export import export_run

    cfg = _cfg(tiny_data, tmp_path / "run", epochs=6)
    r = train(cfg, progress=False)
    losses = [row["loss"] for row in r["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 7  # header + one row an epoch
    assert 0.0 <= r["history"][-1]["ap50"] <= 1.0
    export_run(tmp_path / "run", checkpoint=tmp_path / "run" / "last.pt")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["spec"]["img"] == 64 and len(manifest["spec"]["anchors"]) == 3


def test_resume_after_a_kill_is_bit_identical(tiny_data, tmp_path):
    straight = train(_cfg(tiny_data, tmp_path / "straight"), progress=False)
    train(_cfg(tiny_data, tmp_path / "killed"), progress=False, stop_after=1)  # as if killed after epoch 1
    metrics = tmp_path / "killed" / "metrics.csv"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")  # killed between last.pt and metrics.csv
    resumed = train(_cfg(tiny_data, tmp_path / "killed"), resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)  # our checkpoints need no code to load
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert [ln.split(",")[0] for ln in metrics.read_text().splitlines()] == ["epoch", "1", "2", "3"]
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume"
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in straight["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in resumed["history"]]


def test_resume_without_a_checkpoint_says_what_to_do(tiny_data, tmp_path):
    from flow.errors import FlowError

    with pytest.raises(FlowError, match="nothing to resume"):
        train(_cfg(tiny_data, tmp_path / "none"), resume=True, progress=False)


def test_unknown_optimizer_is_refused(tiny_data, tmp_path):
    from flow.errors import FlowError

    with pytest.raises(FlowError, match="optimizer"):
        train(replace(_cfg(tiny_data, tmp_path / "x"), optimizer="lion"), progress=False)


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
    with pytest.raises(FlowError, match="has 1 epochs done"):
        train(_cfg(tiny_data, run, epochs=0), resume=True, progress=False)
    # --epochs on --resume takes effect: the run goes on to 3 epochs (not its original 2), and says so
    assert cli(["--resume", "--out", str(run), "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "after epoch 1 of 3 (was 2" in out
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["epochs"] == 3
