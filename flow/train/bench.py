"""The training benchmarks, each against a baseline measured in the same process: a QAT step vs a float step
(`bench train`), the data loader vs the training step (`bench loader`), and the built-in set's AP50 of float vs
quantized presets trained on one schedule (`bench accuracy`)."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from board.manifest import RESAMPLES
from flow.errors import FlowError
from flow.train.augment import AugmentConfig
from flow.train.loop import TrainConfig, builtin_schedule, pick_device, train
from flow.train.loss import YoloLoss
from models.lpyolo import DEFAULT_RESAMPLE


def step_rate(variant: str, img: int, batch: int, device: torch.device, steps: int, amp: bool = False) -> float:
    """images/s of the training step alone (forward, loss, backward, SGD) on random pixels already on the device."""
    from models import build_model, spec_for

    spec = spec_for(variant, img=img)
    model = build_model(spec, collect_stats_steps=1).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = YoloLoss(spec.anchors, 32, 1, img).to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    x = torch.rand(batch, 3, img, img, device=device) * 255
    t = torch.tensor([[i, 0, img / 2, img / 2, 40, 40] for i in range(batch)], dtype=torch.float32, device=device)

    def step():
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            outp = model(x)
        loss, _ = loss_fn(outp.float(), t)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def bench_train(argv: list[str]) -> int:
    """images/s of one QAT training step vs a float step of the same architecture, same process, same batch."""
    p = argparse.ArgumentParser(prog="python -m flow bench train", description=bench_train.__doc__)
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="autocast on CUDA, as training does by default")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    rates = {v: step_rate(v, a.img, a.batch, device, a.steps, a.amp) for v in ("float", "4w4a")}
    print(f"device {device}, {a.img}x{a.img}, batch {a.batch}{', AMP' if a.amp and device.type == 'cuda' else ''}: "
          f"float {rates['float']:.1f} img/s, 4w4a QAT {rates['4w4a']:.1f} img/s; "
          f"QAT costs {rates['float'] / rates['4w4a']:.2f}x a float step")
    return 0


def loader_rate(dataset, workers: int, batch: int, n_batches: int, pin: bool) -> float:
    """images/s of the DataLoader alone, in steady state: timed from the first round of batches (one per worker,
    which includes starting the workers) to n_batches later."""
    from flow.train.loader import EpochSampler, make_loader

    sampler = EpochSampler(len(dataset), seed=0)
    warm = max(workers, 1)
    t0, seen = None, 0
    for k, (imgs, _) in enumerate(make_loader(dataset, sampler, batch, workers, pin)):
        if k + 1 == warm:
            t0 = time.perf_counter()
        elif t0 is not None:
            seen += len(imgs)
        if k + 1 == warm + n_batches:
            break
    if not seen:
        raise FlowError(f"{len(dataset)} images make too few batches of {batch} to time {workers} workers: "
                        "pass a smaller --batch or --batches, or more --images")
    return seen / (time.perf_counter() - t0)


def bench_loader(argv: list[str]) -> int:
    """images/s of the data loader alone at each worker count and of the 4w4a training step alone on the device, in
    one run: which of the two bounds training."""
    from flow.files import atomic_write_json
    from flow.train.builtin import REPO, synth_dataset
    from flow.train.data import resolve_data
    from flow.train.loader import TrainSet, cap_workers, cpu_count, default_workers
    from flow.train.wider import WIDER_TRAIN_IMAGES, load_split

    p = argparse.ArgumentParser(prog="python -m flow bench loader", description=bench_loader.__doc__)
    p.add_argument("--data", type=Path, help="WIDER FACE root (default: the built-in set)")
    p.add_argument("--wider-sized", action="store_true",
                   help="a synthetic set at WIDER's sizes and face counts (data/wider-sized-N, generated if absent)")
    p.add_argument("--images", type=int, default=None,
                   help=f"images to load (default all; --wider-sized: {WIDER_TRAIN_IMAGES}, as WIDER's train split)")
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default 0 and the default count)")
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=60,
                   help="batches timed per worker count (fewer give noisier rates)")
    p.add_argument("--steps", type=int, default=3, help="training steps timed")
    p.add_argument("--cache", default="ram", choices=["ram", "none"])
    p.add_argument("--resample", default=DEFAULT_RESAMPLE, choices=RESAMPLES,
                   help=f"the resize the loader does (default {DEFAULT_RESAMPLE}, new models'); each costs its own")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true", help="time the step without autocast on CUDA")
    p.add_argument("--json", type=Path, help="write {loader_img_s, step_img_s, bound} here")
    a = p.parse_args(argv)
    if a.wider_sized:
        if a.data:
            raise FlowError("--data and --wider-sized: pick one")
        n = a.images or WIDER_TRAIN_IMAGES
        a.data = synth_dataset(REPO / "data" / f"wider-sized-{n}", n_train=n, n_val=16, wider_sized=True)
    device = pick_device(a.device)
    default = default_workers()
    try:
        counts = [int(w) for w in a.workers.split(",")] if a.workers else sorted({0, default})
    except ValueError:
        raise FlowError(f"--workers {a.workers!r}: comma-separated integers, e.g. 0,2") from None
    counts = list(dict.fromkeys(cap_workers(w) for w in counts))
    samples = load_split(resolve_data(a.data), "train")[: a.images]
    t0 = time.perf_counter()
    dataset = TrainSet(samples, a.img, AugmentConfig(), 0, a.cache, processes=cpu_count(), show=True,
                       resample=a.resample)
    t_cache = time.perf_counter() - t0
    print(f"{dataset.describe()}, {a.resample} resize; start-up {t_cache:.1f} s ({len(dataset) / t_cache:.0f} images/s on "
          f"{cpu_count()} processes)")
    n_batches = min(a.batches, math.ceil(len(dataset) / a.batch) - max(counts + [1]))
    rates = {}
    for w in counts:
        rates[w] = loader_rate(dataset, w, a.batch, n_batches, pin=device.type == "cuda")
        base = f" ({rates[w] / rates[0]:.2f}x in-process)" if 0 in rates and w else ""
        print(f"loader, {w} worker{'s' if w != 1 else ''}: {rates[w]:.1f} img/s{base}")
    amp = not a.no_amp and device.type == "cuda"
    step = step_rate("4w4a", a.img, a.batch, device, a.steps, amp)
    judged = default if default in rates else max(rates)
    bound = "loader" if rates[judged] < step else "step"
    print(f"4w4a training step on {device}{' (AMP)' if amp else ''}, batch {a.batch}: {step:.1f} img/s")
    print(f"at {judged} workers the {bound} bounds training: loader {rates[judged]:.1f} img/s vs step {step:.1f} "
          f"img/s ({rates[judged] / step:.2f}x)")
    if a.json:
        atomic_write_json(a.json, {"loader_img_s": {str(w): r for w, r in rates.items()}, "step_img_s": step,
                                   "bound": bound, "device": str(device), "img": a.img, "batch": a.batch,
                                   "images": len(dataset), "cache_bytes": dataset.nbytes, "amp": amp})
    return 0


def bench_accuracy(argv: list[str]) -> int:
    """Built-in val AP50 for float, 4w4a and 2w4a trained with the same schedule: the quantization gap."""
    p = argparse.ArgumentParser(prog="python -m flow bench accuracy", description=bench_accuracy.__doc__)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--img", type=int, default=192)
    p.add_argument("--out", type=Path, default=Path("runs/bench-accuracy"))
    p.add_argument("--variants", default="float,4w4a,2w4a")
    a = p.parse_args(argv)
    results = {}
    for v in a.variants.split(","):
        cfg = builtin_schedule(TrainConfig(variant=v, img=a.img, epochs=a.epochs, out=str(a.out / v),
                                           eval_every=a.epochs))
        results[v] = train(cfg, progress=False)["best_ap50"]
        print(f"{v}: AP50 {results[v]:.4f}")
    base = results.get("float")
    for v, ap in results.items():
        gap = f", {100 * (ap - base):+.1f} points vs float" if base is not None and v != "float" else ""
        print(f"{v:>6}: AP50 {ap:.4f}{gap}")
    return 0
