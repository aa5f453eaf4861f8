"""The training data path: images decoded at the model size into a cache the pool fills in place, the cache's size
predicted before decoding, workers capped, the sampler's shares, the WIDER-sized set and `bench loader`."""

import json

import numpy as np
import pytest
import torch

from flow.errors import FlowError
from flow.train.augment import AugmentConfig
from flow.train.loader import EpochSampler, TrainSet, cap_workers, check_cache_fits, cpu_count
from flow.train.wider import Sample


@pytest.fixture
def big_jpegs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for k, (w, h) in enumerate([(1024, 768), (1024, 1366), (300, 200)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // w), (yy * 255 // h), rng.integers(0, 256) + 0 * xx], 2).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / f"{k}.jpg", quality=95)
        out.append(Sample(tmp_path / f"{k}.jpg", np.array([[w / 4, h / 4, w / 2, h / 2]], np.float32)))
    return out


def test_images_are_cached_at_the_model_size_by_a_pool_writing_in_place(big_jpegs):
    from PIL import Image

    ds = TrainSet(big_jpegs, 416, AugmentConfig(), 0, "ram", processes=2, resample="bilinear")
    assert ds.sizes == [(416, 312), (312, 416), (300, 200)]  # long side 416, small pictures never enlarged
    for k, s in enumerate(big_jpegs):
        img, boxes = ds.image(k)
        w, h = ds.sizes[k]
        assert img.shape == (h, w, 3)
        full = np.asarray(Image.open(s.path).convert("RGB").resize((w, h), Image.BILINEAR)).astype(int)
        assert np.abs(img.astype(int) - full).mean() < 3  # the draft-mode decode shows the same picture
        np.testing.assert_allclose(boxes, [[w / 4, h / 4, w * 3 / 4, h * 3 / 4]], atol=0.01)
    assert ds.nbytes == sum(w * h * 3 for w, h in ds.sizes) and "cached in RAM" in ds.describe()


def test_a_cache_too_big_for_memory_is_refused_before_any_decoding(big_jpegs, monkeypatch):
    import flow.train.loader as loader

    monkeypatch.setattr(loader, "available_memory", lambda: 100_000)
    monkeypatch.setattr(loader, "decode_fitted", lambda *a: pytest.fail("decoded before the size check"))
    with pytest.raises(FlowError, match=r"cache needs 1.0 MB .*3 images.*--cache none"):
        TrainSet(big_jpegs, 416, AugmentConfig(), 0, "ram", resample="bilinear")
    ds = TrainSet(big_jpegs, 416, AugmentConfig(), 0, "none", resample="bilinear")  # the option the message names
    assert ds.cache is None and "a RAM cache would take 1.0 MB" in ds.describe()
    with pytest.raises(FlowError, match=r"x 4 ranks"):
        check_cache_fits(30_000, 3, 416, local_ranks=4, available=100_000)


def test_too_many_workers_are_capped_with_a_note(capsys):
    assert cap_workers(cpu_count() + 5) == cpu_count()
    assert f"capped to {cpu_count()}" in capsys.readouterr().out
    assert cap_workers(0) == 0 and 1 <= cap_workers(None) <= 8
    with pytest.raises(FlowError, match="--workers -1"):
        cap_workers(-1)


def test_ranks_draw_disjoint_shares_that_cover_the_set():
    shares = [EpochSampler(11, seed=3, rank=r, world=2) for r in (0, 1)]
    for s in shares:
        s.epoch = 4
    keys = [list(s) for s in shares]
    assert all(e == 4 for k in keys for e, _ in k) and len(keys[0]) == len(keys[1]) == 6
    assert {i for _, i in keys[0]} | {i for _, i in keys[1]} == set(range(11))
    assert len({i for _, i in keys[0]} & {i for _, i in keys[1]}) == 1  # the one padding repeat, as DistributedSampler
    shares[0].epoch = 5
    assert [i for _, i in shares[0]] != [i for _, i in keys[0]]


def test_wider_sized_set_has_widers_picture_width(tmp_path):
    from PIL import Image

    from flow.train.builtin import synth_dataset
    from flow.train.wider import load_split

    root = synth_dataset(tmp_path / "ws", n_train=3, n_val=1, wider_sized=True)
    samples = load_split(root, "train")
    assert len(samples) == 3 and all(Image.open(s.path).size[0] == 1024 for s in samples)
    assert json.loads((root / "builtin.json").read_text())["wider_faces_mean"] == 12.0


def test_bench_loader_reports_both_rates_and_the_bound(tmp_path, capsys):
    from flow.train.bench import bench_loader
    from flow.train.builtin import synth_dataset

    data = synth_dataset(tmp_path / "d", seed=2, n_train=16, n_val=1, size=96)
    out = tmp_path / "loader.json"
    assert bench_loader(["--data", str(data), "--workers", "0,2", "--img", "64", "--batch", "2", "--batches", "2",
                         "--steps", "1", "--device", "cpu", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["loader_img_s"]) == {"0", "2"} and all(v > 0 for v in r["loader_img_s"].values())
    judged = r["loader_img_s"]["2"]
    assert r["bound"] == ("loader" if judged < r["step_img_s"] else "step")
    assert "x in-process" in capsys.readouterr().out


class _DiesAt3(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, key):
        import os
        import signal

        if key[1] == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        return np.zeros((3, 4, 4), np.uint8), np.zeros((0, 4), np.float32)


def test_a_worker_killed_mid_epoch_is_a_clear_error():
    from flow.train.loader import batches, make_loader

    loader = make_loader(_DiesAt3(), EpochSampler(8, seed=0), 1, 1, pin=False)
    with pytest.raises(FlowError, match=r"epoch 3: DataLoader worker .*killed.*--cache none.*--resume"):
        for _ in batches(loader, 2):
            pass


def test_hsv_jitter_computes_what_it_computed_before_it_was_made_fast():
    """The digest is the former, temporary-per-step implementation's output on this input (the speed-up must not
    change a single training pixel, or resumed and older runs stop being comparable)."""
    import hashlib

    from flow.train.augment import hsv_jitter

    img = np.random.default_rng(7).integers(0, 256, (64, 48, 3)).astype(np.uint8)
    out = hsv_jitter(img, np.random.default_rng(8), 0.015, 0.7, 0.4)
    assert hashlib.sha256(out.tobytes()).hexdigest() == "7debbe2002f33401834bcd4ea2fc0319422b2db5388a2499500605814874b27c"


def test_training_pictures_are_resampled_as_evaluation_and_the_board_letterbox_them(tmp_path):
    """Where no JPEG draft scale applies, a training sample is the letterboxed picture evaluation and the board see,
    pixel for pixel: PIL's antialiasing downscale made them softer (the demo's AP50 fell from 0.25 to 0.02)."""
    from board.preprocess import letterbox
    from flow.train.builtin import synth_dataset
    from flow.train.wider import load_split, read_image

    data = synth_dataset(tmp_path / "data", seed=3, n_train=4, n_val=1, size=256)
    samples = load_split(data, "train")
    aug = AugmentConfig(mosaic=0.0)
    for cache in ("ram", "none"):
        ds = TrainSet(samples, 192, aug, seed=0, cache=cache, resample="bilinear")
        for i, s in enumerate(samples):
            img, _ = ds.image(i)
            canvas, _, (px, py) = letterbox(read_image(s.path), 192, resample="bilinear")
            assert np.array_equal(img, canvas[py : py + img.shape[0], px : px + img.shape[1]])


NO_AUGMENT = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mosaic=0)


@pytest.mark.parametrize("cache", ["ram", "none"])
def test_training_sees_the_fabric_letterboxs_pixels(tmp_path, cache, monkeypatch):
    """With "bilinear-exact" a sample without augmentation is letterbox_fixed's canvas of the fully decoded file
    (what evaluation and the board compute), pixel for pixel: through the cache or a decode per sample, for a
    downscaled, a long-portrait and an enlarged picture; the augmentation's resizes are the same resample."""
    from PIL import Image

    import flow.train.augment as augment
    from board.preprocess import letterbox_fixed, resize_bilinear_exact
    from flow.train.wider import read_image

    rng = np.random.default_rng(1)
    samples = []
    for k, (w, h) in enumerate([(200, 150), (90, 160), (40, 30)]):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // w, yy * 255 // h, rng.integers(0, 256, (h, w))], 2).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / f"{k}.jpg", quality=90)
        samples.append(Sample(tmp_path / f"{k}.jpg", np.array([[w / 4, h / 4, w / 2, h / 2]], np.float32)))
    monkeypatch.setattr(augment, "hsv_jitter", lambda img, *a: img)  # its float round trip is not the identity
    ds = TrainSet(samples, 64, NO_AUGMENT, 0, cache, resample="bilinear-exact")
    for k, s in enumerate(samples):
        chw, _ = ds[(0, k)]
        np.testing.assert_array_equal(chw.transpose(1, 2, 0), letterbox_fixed(read_image(s.path), 64))
    calls = []
    monkeypatch.setattr("board.preprocess.resize_bilinear_exact", lambda *a: calls.append(a) or resize_bilinear_exact(*a))
    TrainSet(samples, 64, AugmentConfig(), 0, "none", resample="bilinear-exact")[(0, 0)]  # mosaic + scale
    assert len(calls) >= 5  # four tiles and the random scale, each through the exact resize
