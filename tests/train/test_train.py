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
    resumed = train(_cfg(tiny_data, tmp_path / "killed"), resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
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


def test_a_broken_val_split_fails_before_the_first_epoch(tiny_data, tmp_path):
    import shutil

    from flow.train.data import AnnotationError

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
