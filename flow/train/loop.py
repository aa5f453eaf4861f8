"""Brevitas QAT training, top to bottom: config -> data -> model -> optimiser -> loop -> checkpoint -> export.

SGD with warm-up and cosine decay (LPYOLO's YOLOv5 hyper-parameters: data/hyps/hyp.widerface.yaml of
github.com/sefaburakokcu/quantized-yolov5), EMA of the weights, AMP on CUDA,
DDP under torchrun (Brevitas's activation statistics are buffers, which DDP broadcasts from rank 0 before every
forward: the ranks' scales agree, tested), data loading in worker processes (flow/train/loader.py). Every epoch
writes `last.pt` atomically (model, EMA, optimiser, RNG states); `--resume` continues from it bit-identically,
because each epoch's data order and augmentations are drawn from generators seeded by (seed, epoch, index), not
from state that a kill would lose. The run ends by exporting the best
checkpoint to QONNX + manifest.json, ready for FINN.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from board.preprocess import RESAMPLES
from flow.errors import FlowError
from flow.files import read_checkpoint
from flow.terminal import progress
from flow.train.augment import AugmentConfig
from flow.train.loader import EpochSampler, TrainSet, batches, cap_workers, cpu_count, make_loader
from flow.train.loss import LossConfig, YoloLoss
from models import PRESETS
from models.lpyolo import DEFAULT_RESAMPLE, LEGACY_RESAMPLE


@dataclass
class TrainConfig:
    variant: str = "4w4a"
    img: int = 416
    resample: str = DEFAULT_RESAMPLE  # how pictures are resized, here and on the board (QuantSpec.resample)
    epochs: int = 40
    batch: int = 32
    data: str | None = None  # WIDER FACE root; None = the built-in set
    out: str = "runs/4w4a"
    seed: int = 0
    device: str = "auto"
    optimizer: str = "sgd"  # LPYOLO's recipe; "adamw" converges in the built-in set's short schedule
    lr0: float = 0.01
    lrf: float = 0.1
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    ema_decay: float = 0.9999
    collect_stats_steps: int = 30
    init_from: str | None = None
    overrides: list[str] = field(default_factory=list)
    min_face: float = 2.0
    skip_bad: bool = False  # malformed annotation entries and undecodable images skipped (with a count), not fatal
    limit_train: int | None = None
    limit_val: int | None = None
    eval_every: int = 5
    amp: bool = True
    workers: int | None = None  # DataLoader worker processes; None = one per core, at most 8 (per rank)
    cache: str = "ram"  # "ram": decode every image once at start-up; "none": decode per sample in the workers
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)


# --------------------------------------------------------------------------------------------------- helpers
class EMA:
    """Exponential moving average of the weights, with YOLOv5's warm-up of the decay."""

    def __init__(self, model, decay: float, updates: int = 0):
        self.model = deepcopy(model).eval()
        self.decay, self.updates = decay, updates
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        if collecting_stats(model) or collecting_stats(self.model):
            # Brevitas's activation scales are still being measured (their state lives outside state_dict
            # until then): the average starts once they are parameters, until then it tracks the model. A copy
            # taken mid-collection stays in collection mode, so it is taken again once the scales are final.
            self.model = deepcopy(model).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            return
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        msd = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def collecting_stats(model) -> bool:
    return any(m.counter <= m.collect_stats_steps for m in model.modules()
               if hasattr(m, "counter") and hasattr(m, "collect_stats_steps"))


def pick_device(device: str) -> torch.device:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise FlowError(f"--device {device}: use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise FlowError("--device cuda: torch sees no GPU (this torch is CPU-only or no driver); use --device cpu")
    return torch.device(device)


def rng_state() -> dict:
    """Every generator's state in types `torch.load(weights_only=True)` reads (numpy's key array as a tensor)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in s["python"]))
    kind, keys, *rest = s["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_atomic(obj, path: Path) -> None:
    from flow.files import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def lr_at(cfg: TrainConfig, epoch_float: float) -> float:
    """Linear warm-up from 0, then cosine decay from lr0 to lr0*lrf."""
    if epoch_float < cfg.warmup_epochs:
        return cfg.lr0 * epoch_float / cfg.warmup_epochs
    t = (epoch_float - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return cfg.lr0 * (cfg.lrf + (1 - cfg.lrf) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def build_spec(cfg: TrainConfig):
    """The run's QuantSpec, with anchors from k-means on its training boxes at its input size."""
    from flow.train.anchors import dataset_wh, kmeans_anchors
    from models import spec_for

    anchors = kmeans_anchors(dataset_wh(cfg.data, cfg.img, cfg.skip_bad), 3)
    return spec_for(cfg.variant, img=cfg.img, overrides=cfg.overrides or None,
                    anchors=[[round(float(a), 2) for a in an] for an in anchors], resample=cfg.resample)


# ------------------------------------------------------------------------------------------------------ train
TRAIN_FILES = ("config.json", "last.pt", "best.pt")


def refuse_to_replace_a_run(out: Path, resume: bool, force: bool) -> None:
    """Training writes config.json, checkpoints and metrics, then exports: a folder that already holds a run (or a
    model the flow did not write) is not written over unless force; resume continues a run instead."""
    from flow.export import refuse_to_overwrite

    there = [n for n in TRAIN_FILES if (out / n).exists()]
    if there and not resume and not force:
        raise FlowError(f"{out} already holds a training run ({', '.join(there)}), so nothing was written: "
                        "--resume continues it, --force (make: FORCE=1) starts over in it, or choose another --out")
    refuse_to_overwrite(out, force=force or resume)


def read_splits(cfg: TrainConfig) -> tuple[list, list]:
    """Both splits read and every image decoded before the first epoch, so a broken val file costs no training."""
    from flow.train.wider import decodable, load_split

    samples = decodable(load_split(cfg.data, "train", skip_bad=cfg.skip_bad, min_size=cfg.min_face)[: cfg.limit_train],
                        skip_bad=cfg.skip_bad)
    val = decodable(load_split(cfg.data, "val", skip_bad=cfg.skip_bad)[: cfg.limit_val], skip_bad=cfg.skip_bad)
    return samples, val


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None,
          force: bool = False) -> dict:
    """Train (or resume) one run. stop_after: end after that many epochs of this call, checkpoint written, as a
    kill between epochs would (time-boxed chunks on shared machines; the resume test). force: start over in a
    folder that already holds a run."""
    from flow.train.data import resolve_data
    from flow.train.evaluate import evaluate_model
    from models import QuantSpec, build_model

    out = Path(cfg.out)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp, rank, local_ranks = world > 1, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if rank == 0:  # under torchrun the other ranks would see rank 0's fresh config.json as an old run
        refuse_to_replace_a_run(out, resume, force)
    if ddp:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = pick_device(cfg.device)
    if ddp and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)

    ckpt = None
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise FlowError(f"{last}: nothing to resume from (train without --resume first)")
        ckpt = read_checkpoint(last)
        # the run's own config; only the schedule's length, the device and the loader (results unchanged) may change
        # (`cli` refuses others)
        cfg = replace(config_from_dict(ckpt["config"]), epochs=cfg.epochs, device=cfg.device, workers=cfg.workers,
                      cache=cfg.cache)
        done = ckpt["epoch"] + 1
        if cfg.epochs < done:
            raise FlowError(f"{last}: has {done} epochs done; --epochs {cfg.epochs} would undo them (a resumed "
                            f"run goes on to at least {done})")
        spec = QuantSpec.from_json(ckpt["spec"])
    cfg.data = str(resolve_data(cfg.data))
    samples, _ = read_splits(cfg)  # a bad dataset fails here, naming the file, before anything is written
    if ckpt is None:
        spec = build_spec(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and rank == 0:  # a forced restart leaves nothing of the old run to be mistaken for this one's
        for stale in ("metrics.csv", "best.pt"):
            (out / stale).unlink(missing_ok=True)
    if rank == 0:
        (out / "config.json").write_text(json.dumps({**asdict(cfg), "spec": spec.to_json()}, indent=2, default=str))

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(spec, collect_stats_steps=cfg.collect_stats_steps)
    if cfg.init_from and not resume:
        init = read_checkpoint(Path(cfg.init_from))
        state = init.get("ema") or init["model"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        print(f"initialised from {cfg.init_from} ({len(missing)} quantizer tensors new, {len(unexpected)} unused)")
    if ckpt is not None:
        # before the optimiser is built: loading a Brevitas scale can swap its Parameter object, and an optimiser
        # made earlier would then update the discarded one (measured: resumed runs froze every activation scale)
        model.load_state_dict(ckpt["model"])
    model.to(device)
    workers = cap_workers(cfg.workers, local_ranks, say=print if rank == 0 else lambda _: None)
    dataset = TrainSet(samples, cfg.img, cfg.augment, cfg.seed, cfg.cache, processes=cpu_count() // local_ranks,
                       local_ranks=local_ranks, show=progress and rank == 0, resample=cfg.resample)
    if rank == 0:
        print(f"{dataset.describe()}; {workers} loader worker{'s' if workers != 1 else ''}"
              f"{' per rank' if ddp else ''}")
    sampler = EpochSampler(len(dataset), cfg.seed, rank, world)
    loader = make_loader(dataset, sampler, cfg.batch, workers, pin=device.type == "cuda")

    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim == 4 else no_decay).append(p)  # conv weights decay; BN, biases, scales do not
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr0, betas=(cfg.momentum, 0.999))
    else:
        raise FlowError(f"optimizer {cfg.optimizer!r}: use sgd or adamw")
    loss_fn = YoloLoss(spec.anchors, 32, spec.num_classes, cfg.img, cfg.loss).to(device)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, best, history = 0, -1.0, []
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best, history = ckpt["epoch"] + 1, ckpt["best"], ckpt["history"]
        if rank == 0:
            _write_metrics(out, history)  # a kill between last.pt and metrics.csv lost no row
    ema = EMA(model, cfg.ema_decay)
    if ckpt is not None:
        ema.model.load_state_dict(ckpt["ema"])
        ema.updates = ckpt["ema_updates"]
        set_rng_state(ckpt["rng"])
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    writer = _tensorboard(out) if rank == 0 else None
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch)

    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        sampler.epoch = epoch
        net.train()
        t0, totals, seen = time.perf_counter(), {"loss": 0.0, "box": 0.0, "obj": 0.0}, 0
        bar = _bar(batches(loader, epoch), f"epoch {epoch + 1}/{cfg.epochs}", progress and rank == 0)
        for k, (imgs, targets) in enumerate(bar):
            ef = epoch + k / steps_per_epoch
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, ef)
                if cfg.optimizer == "sgd":  # YOLOv5's momentum warm-up
                    g["momentum"] = cfg.momentum if ef >= cfg.warmup_epochs else (
                        0.8 + (cfg.momentum - 0.8) * ef / cfg.warmup_epochs)
            imgs, targets = imgs.to(device, non_blocking=True).float(), targets.to(device)  # pixels 0..255
            with torch.autocast(device.type, enabled=use_amp):
                outp = net(imgs)
            loss, parts = loss_fn(outp.float(), targets)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            scaler.step(opt)
            scaler.update()
            ema.update(model)
            n = len(imgs)
            seen += n
            totals["loss"] += float(loss.detach())
            totals["box"] += parts["box"] * n
            totals["obj"] += parts["obj"] * n
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{totals['loss'] / seen:.4f}", lr=f"{lr_at(cfg, ef):.4f}")
        row = {"epoch": epoch + 1, "loss": totals["loss"] / seen, "box": totals["box"] / seen,
               "obj": totals["obj"] / seen, "lr": lr_at(cfg, epoch + 1), "seconds": time.perf_counter() - t0,
               "images_per_s": seen / (time.perf_counter() - t0)}
        if rank == 0 and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            r = evaluate_model(ema.model.cpu(), spec, cfg.data, "val", cfg.limit_val, skip_bad=cfg.skip_bad)
            ema.model.to(device)
            r.pop("_curve")
            row.update({"ap50": r["ap50"], "coco_ap50": r["coco_ap50"]})
        history.append(row)
        if rank == 0:
            improved = row.get("ap50", -1) > best
            best = max(best, row.get("ap50", -1))
            state = {"spec": spec.to_json(), "config": asdict(cfg), "epoch": epoch, "best": best, "history": history,
                     "model": model.state_dict(), "ema": ema.model.state_dict(), "ema_updates": ema.updates,
                     "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state()}
            save_atomic(state, out / "last.pt")
            if improved:
                save_atomic({"spec": spec.to_json(), "model": ema.model.state_dict(), "epoch": epoch, "ap50": best},
                            out / "best.pt")
            _write_metrics(out, history)
            _log(row, writer)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if writer:
        writer.close()
    if ddp:
        torch.distributed.destroy_process_group()
    return {"best_ap50": best, "history": history, "spec": spec, "model": model}


def builtin_schedule(cfg: TrainConfig) -> TrainConfig:
    """The built-in set is ~15x smaller than WIDER FACE and the default run has minutes, not days: AdamW, a short
    warm-up, few Brevitas statistics steps, a 10x box gain and no mosaic. Measured on float at 192, 12 epochs,
    val AP50: YOLOv5's box gain 0.05 with mosaic 0.5 -> 0.12; mosaic off -> 0.15; box 0.2 -> 0.29; box 0.5 ->
    0.34; lr 0.004 -> 0.08 (SGD at lr 0.01 barely moved the box loss in 30 epochs)."""
    return replace(cfg, optimizer="adamw", lr0=0.002, weight_decay=0.01, warmup_epochs=1.0, collect_stats_steps=20,
                   augment=replace(cfg.augment, mosaic=0.0, scale=0.3), loss=replace(cfg.loss, box=0.5))


def config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["augment"] = AugmentConfig(**d["augment"])
    d["loss"] = LossConfig(**d["loss"])
    d.setdefault("resample", LEGACY_RESAMPLE)  # a run from before the field resized with OpenCV's bilinear
    return TrainConfig(**d)


def _bar(it, desc: str, show: bool):
    return progress(it, desc=desc, show=show)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _write_metrics(out: Path, history: list[dict]) -> None:
    """metrics.csv rewritten whole from the checkpoint's history: one row an epoch, never a duplicate or a gap."""
    from flow.files import atomic_write_bytes

    fields = ["epoch", "loss", "box", "obj", "lr", "seconds", "images_per_s", "ap50", "coco_ap50"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in fields})
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())


def _log(row: dict, writer) -> None:
    if writer:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k, v, row["epoch"])


# ------------------------------------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    from flow.export import FRAME_HELP, parse_frame

    p = argparse.ArgumentParser(prog="python -m flow train", description=__doc__.splitlines()[0])
    p.add_argument("--variant", default=None, choices=list(PRESETS), help="preset (default 4w4a)")
    p.add_argument("--img", type=int, default=None, help="input size (default 416 on WIDER FACE, 192 on the built-in set)")
    p.add_argument("--epochs", type=int, default=None, help="default 300 on WIDER FACE, 40 on the built-in set")
    p.add_argument("--batch", type=int, default=None, help="default 32")
    p.add_argument("--data", type=Path, help="WIDER FACE root (default: the built-in set)")
    p.add_argument("--out", type=Path)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--resume", action="store_true", help="continue RUN/last.pt exactly where it stopped (--epochs "
                   "may change the schedule's length; other options are the run's own)")
    p.add_argument("--init-from", type=Path, help="start from a (float) checkpoint: the usual way to 2-4 bit models")
    p.add_argument("--override", action="append", default=[], help="per-layer bits, e.g. conv3.w=2")
    p.add_argument("--resample", choices=RESAMPLES, default=None,
                   help="how pictures are resized to the input, in training and on the board (default bilinear-exact: the "
                        "fabric letterbox's arithmetic, so the accelerator can take whole camera frames); bilinear "
                        "or nearest where the ARM letterboxes (nearest: ~3 ms a 640x480 frame instead of ~22 ms)")
    p.add_argument("--frame", metavar="WxH|none", help="export: " + FRAME_HELP)
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-val", type=int)
    p.add_argument("--eval-every", type=int, default=None, help="default 5")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader worker processes (default: one per CPU core, at most 8, per rank)")
    p.add_argument("--cache", choices=["ram", "none"], default="ram",
                   help="ram: decode every image once at start-up, at the model size (size printed, checked against "
                        "free memory first); none: decode per sample in the workers")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip malformed annotation entries and undecodable images (with a count) instead of stopping")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run or a model "
                   "the flow did not write")
    a = p.parse_args(argv)
    for opt in ("img", "epochs", "batch", "eval_every", "limit_train", "limit_val"):
        if getattr(a, opt) is not None and getattr(a, opt) <= 0:
            raise FlowError(f"--{opt.replace('_', '-')} {getattr(a, opt)}: must be positive")
    if a.img is not None and a.img % 32:
        raise FlowError(f"--img {a.img}: the input size must be a multiple of 32 (the network's stride)")
    if a.out is not None and a.out.exists() and not a.out.is_dir():
        raise FlowError(f"--out {a.out}: an existing file, not a run folder")
    pick_device(a.device or "auto")  # refuses an unknown device before any work
    if a.resume:
        return _resume_cli(a)
    parse_frame(a.frame, a.resample or DEFAULT_RESAMPLE)  # a bad --frame is refused before training, not after
    on_wider = a.data is not None
    variant = a.variant or "4w4a"
    cfg = TrainConfig(variant=variant, img=a.img or (416 if on_wider else 192),
                      epochs=a.epochs or (300 if on_wider else 40), batch=a.batch or 32,
                      data=str(a.data) if a.data else None, out=str(a.out or f"runs/{variant}"),
                      seed=0 if a.seed is None else a.seed, device=a.device or "auto",
                      init_from=str(a.init_from) if a.init_from else None, overrides=a.override,
                      resample=a.resample or DEFAULT_RESAMPLE,
                      limit_train=a.limit_train, limit_val=a.limit_val, eval_every=a.eval_every or 5,
                      skip_bad=a.skip_bad, workers=a.workers, cache=a.cache)
    if not on_wider:
        cfg = builtin_schedule(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 holds the run folder, evaluates and exports
        train(cfg, progress=not a.no_progress, force=a.force)
        return 0
    from flow.runlock import run_lock

    with run_lock(cfg.out, create=True):  # one writer per run folder: a second `train --out` there is refused
        train(cfg, progress=not a.no_progress, force=a.force)
        return _finish(cfg, a.force, a.frame)


def _resume_cli(a) -> int:
    """`train --resume`: the run goes on with its own config. --epochs takes effect (the schedule is recomputed for
    the new length); --device too; any other option that differs from the run's is refused, with the reason."""
    out = Path(a.out or f"runs/{a.variant or '4w4a'}")
    last = out / "last.pt"
    if not last.is_file():
        raise FlowError(f"{last}: nothing to resume from (train without --resume first)")
    ckpt = read_checkpoint(last)
    old = config_from_dict(ckpt["config"])
    given = {"--variant": ("variant", a.variant), "--img": ("img", a.img), "--batch": ("batch", a.batch),
             "--seed": ("seed", a.seed), "--limit-train": ("limit_train", a.limit_train),
             "--limit-val": ("limit_val", a.limit_val), "--eval-every": ("eval_every", a.eval_every),
             "--override": ("overrides", a.override or None), "--resample": ("resample", a.resample),
             "--init-from": ("init_from", str(a.init_from) if a.init_from else None)}
    differ = [f"{opt} {v} (the run has {getattr(old, k)})" for opt, (k, v) in given.items()
              if v is not None and v != getattr(old, k)]
    if a.data and (old.data is None or Path(old.data).resolve() != a.data.resolve()):
        differ.append(f"--data {a.data} (the run has {old.data or 'the built-in set'})")
    if differ:
        raise FlowError(f"{out}: a resumed run keeps the options it was started with; refused: {'; '.join(differ)}. "
                        "Only --epochs (and --device) change on --resume; start a new run (another --out) for others")
    epochs = a.epochs or old.epochs
    done = ckpt["epoch"] + 1
    note = f" (was {old.epochs}: the learning-rate schedule is recomputed for {epochs})" if epochs != old.epochs else ""
    from flow.export import parse_frame

    parse_frame(a.frame, old.resample)
    print(f"resuming {out} after epoch {done} of {epochs}{note}")
    cfg = replace(old, epochs=epochs, device=a.device or old.device, out=str(out), workers=a.workers, cache=a.cache)
    if int(os.environ.get("RANK", "0")) != 0:
        train(cfg, resume=True, progress=not a.no_progress)
        return 0
    from flow.runlock import run_lock

    with run_lock(out):
        train(cfg, resume=True, progress=not a.no_progress)
        return _finish(cfg, a.force, a.frame)


def _finish(cfg: TrainConfig, force: bool = False, frame: str | None = None) -> int:
    from flow.export import export_run, load_checkpoint
    from flow.train.evaluate import evaluate_model, finish_report

    out = Path(cfg.out)
    best = out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"
    model, spec = load_checkpoint(best)
    r = finish_report(evaluate_model(model, spec, cfg.data, "val", cfg.limit_val, predictions_dir=out / "wider_predictions",
                                     skip_bad=cfg.skip_bad), out, f"{spec.name} {spec.img}x{spec.img}")
    export_run(out, checkpoint=best, force=force, frame=frame)
    print(f"best AP50 (WIDER protocol, all faces) {r['ap50']:.4f}, COCO AP50 {r['coco_ap50']:.4f}; "
          f"exported {out / 'model.qonnx.onnx'} + manifest.json")
    return 0
