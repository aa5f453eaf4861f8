"""The training data path: images decoded once, in parallel, at the size training uses, into one shared cache (or
decoded per sample); augmentation in DataLoader worker processes; every sample a pure function of (seed, epoch,
index), so the number of workers never changes what the model sees and a resumed run stays bit-identical.

Why the cache holds images at the model size and no more: `augment` letterboxes each picture to `img` (or to img/2
as a mosaic tile) before any up-scaling, so pixels beyond `img` on the long side are never used. The cached picture
is the letterbox's own resize of the decoded file (fitted_size is letterbox_geometry's size), so a sample without
augmentation is the canvas evaluation and the board compute, pixel for pixel with "bilinear-exact". For the other
resamples JPEGs are decoded in PIL's draft mode (the decoder's 1/2, 1/4, 1/8 DCT scaling) whenever that still covers
the fitted size: WIDER's 1024-px pictures decode at 512 px for a 416 model, a quarter of the pixels.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch

from flow.errors import FlowError
from flow.terminal import progress
from flow.train.augment import AugmentConfig, augment, xywh_to_xyxy

DEFAULT_MAX_WORKERS = 8  # YOLOv5's default; the loader of a 154 M MAC model needs every core it can get
CACHE_MODES = ("ram", "none")


# --------------------------------------------------------------------------------------------------- workers
def cpu_count() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(local_ranks: int = 1) -> int:
    return min(DEFAULT_MAX_WORKERS, max(1, cpu_count() // max(local_ranks, 1)))


def cap_workers(workers: int | None, local_ranks: int = 1, say=print) -> int:
    """--workers, or the default; more than this process's share of the cores only adds contention: capped, with
    a note."""
    if workers is None:
        return default_workers(local_ranks)
    if workers < 0:
        raise FlowError(f"--workers {workers}: use 0 (load in the training process) or more")
    share = max(1, cpu_count() // max(local_ranks, 1))
    if workers > share:
        ranks = f" shared by {local_ranks} ranks" if local_ranks > 1 else ""
        say(f"note: --workers {workers} capped to {share} ({cpu_count()} CPU cores{ranks})")
        return share
    return workers


# ---------------------------------------------------------------------------------------------------- decoding
def fitted_size(w: int, h: int, side: int) -> tuple[int, int]:
    """(w, h) of a w x h picture shrunk so that its long side is at most `side` (never enlarged)."""
    s = min(1.0, side / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def image_size(path: Path) -> tuple[int, int]:
    """(w, h) from the file's header, without decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # noqa: BLE001 - PIL raises several types for broken files
        raise FlowError(f"{path}: cannot read the image header ({type(e).__name__}: {e}); replace or remove it "
                        "(or drop its entry from the annotation file)") from e


def decode_fitted(path: Path, size: tuple[int, int], resample: str) -> np.ndarray:
    """The picture at `path` as an h x w x 3 uint8 array of exactly `size` = (w, h), resized by the letterbox's own
    resampler with the model's `resample`: PIL's BILINEAR antialiases a downscale, so the network would train on
    softer pictures than evaluation and the board show it (measured: demo AP50 0.25 -> 0.02).

    "bilinear-exact" decodes the whole picture, as evaluation (wider.read_image) and the board's camera frame are
    decoded, so what training sees is letterbox_fixed's canvas of that picture pixel for pixel. The other resamples
    decode in JPEG draft mode (the DCT's own 1/2..1/8 downscale, which blurs where a full decode would alias): cheaper,
    but other pixels than evaluation's."""
    from PIL import Image

    from board.preprocess import resize_into

    try:
        with Image.open(path) as im:
            if resample != "bilinear-exact":
                im.draft("RGB", size)  # JPEG only: the smallest DCT scale whose result still covers `size`
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises several types for broken files
        raise FlowError(f"{path}: cannot decode image ({type(e).__name__}: {e}); replace or remove it "
                        "(or drop its entry from the annotation file), then `--resume` continues from the last "
                        "finished epoch") from e
    out = np.empty((size[1], size[0], 3), np.uint8)
    resize_into(rgb, out, resample)
    return out


def available_memory() -> int:
    """Bytes the kernel can hand out without swapping (MemAvailable), or free pages where /proc is absent."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _pool(processes: int):
    # fork: the pool (and later the DataLoader workers) inherit the shared map; nothing is pickled but indices
    return multiprocessing.get_context("fork").Pool(processes)


_FILL: dict = {}  # what the decoding pool's forked processes inherit: the map, paths, sizes, offsets


def _fill_one(i: int) -> int:
    w, h = _FILL["sizes"][i]
    view = np.frombuffer(_FILL["buf"], np.uint8, w * h * 3, _FILL["offsets"][i]).reshape(h, w, 3)
    view[:] = decode_fitted(_FILL["paths"][i], (w, h), _FILL["resample"])
    return i


class ImageCache:
    """Every training image, fitted, in one anonymous shared memory map (MAP_SHARED): a pool of processes decodes
    straight into it, and the DataLoader workers forked afterwards read the same pages, so the cache exists once
    per training process, however many workers. (DDP ranks are separate processes: one cache each.)"""

    def __init__(self, paths: list[Path], sizes: list[tuple[int, int]], processes: int, show: bool = False, *,
                 resample: str):
        self.sizes = sizes
        nbytes = np.array([w * h * 3 for w, h in sizes], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(nbytes)[:-1]]).astype(np.int64)
        self.nbytes = int(nbytes.sum())
        self.buf = mmap.mmap(-1, max(self.nbytes, 1))
        _FILL.update(buf=self.buf, paths=paths, sizes=sizes, offsets=self.offsets, resample=resample)
        try:
            if processes <= 1:
                for _ in _bar(map(_fill_one, range(len(paths))), len(paths), "decoding images", show):
                    pass
            else:
                with _pool(processes) as pool:  # a failure terminates the pool on the way out
                    done = pool.imap_unordered(_fill_one, range(len(paths)), chunksize=16)
                    for _ in _bar(done, len(paths), "decoding images", show):
                        pass
        finally:
            _FILL.clear()

    def __getitem__(self, i: int) -> np.ndarray:
        w, h = self.sizes[i]
        return np.frombuffer(self.buf, np.uint8, w * h * 3, int(self.offsets[i])).reshape(h, w, 3)


def cache_bytes(sizes: list[tuple[int, int]]) -> int:
    return int(sum(w * h * 3 for w, h in sizes))


def check_cache_fits(nbytes: int, n: int, side: int, local_ranks: int = 1, available: int | None = None) -> None:
    """Predict, before decoding, whether the cache (one per rank on this machine) leaves the machine room to train."""
    available = available_memory() if available is None else available
    need = nbytes * local_ranks
    if need > 0.8 * available:
        ranks = f" x {local_ranks} ranks" if local_ranks > 1 else ""
        raise FlowError(f"the image cache needs {gb(nbytes)}{ranks} ({n} images with the long side at most {side} px) "
                        f"but this machine has {gb(available)} of memory available: pass --cache none to decode "
                        "each image in the loader workers instead (no cache; more CPU per sample), or train with "
                        "fewer images (--limit-train)")


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


# -------------------------------------------------------------------------------------------------- the dataset
class TrainSet(torch.utils.data.Dataset):
    """Training samples keyed by (epoch, index): the key carries the epoch to persistent workers, whose copies of the
    dataset never see the training process's later state. Image sizes come from the files' headers (read in
    parallel); with cache="ram" the pictures are decoded once into an ImageCache, with "none" in the workers, per
    sample."""

    def __init__(self, samples, img: int, aug: AugmentConfig, seed: int, cache: str = "ram", processes: int = 0,
                 local_ranks: int = 1, show: bool = False, *, resample: str):
        if cache not in CACHE_MODES:
            raise FlowError(f"--cache {cache!r}: use one of {', '.join(CACHE_MODES)}")
        self.img, self.aug, self.seed, self.resample = img, aug, seed, resample
        self.paths = [s.path for s in samples]
        if processes > 1:
            with _pool(processes) as pool:
                headers = pool.map(image_size, self.paths, chunksize=64)
        else:
            headers = [image_size(p) for p in self.paths]
        self.sizes = [fitted_size(w, h, img) for w, h in headers]
        self.boxes = [xywh_to_xyxy(s.boxes) * np.array([fw / w, fh / h, fw / w, fh / h], np.float32)
                      for s, (w, h), (fw, fh) in zip(samples, headers, self.sizes, strict=True)]
        self.nbytes = cache_bytes(self.sizes)
        self.cache = None
        if cache == "ram":
            check_cache_fits(self.nbytes, len(self.paths), img, local_ranks)
            self.cache = ImageCache(self.paths, self.sizes, processes, show, resample=resample)

    def describe(self) -> str:
        where = (f"cached in RAM: {gb(self.nbytes)}, shared by the loader workers" if self.cache is not None
                 else f"decoded per sample in the loader workers (a RAM cache would take {gb(self.nbytes)})")
        return f"{len(self)} training images, long side <= {self.img} px, {where}"

    def __len__(self):
        return len(self.paths)

    def image(self, i: int):
        img = self.cache[i] if self.cache is not None else decode_fitted(self.paths[i], self.sizes[i], self.resample)
        return img, self.boxes[i]

    def __getitem__(self, key):
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        if rng.random() < self.aug.mosaic:
            picks = [i, *rng.integers(0, len(self), 3)]
            items = [self.image(int(k)) for k in picks]
        else:
            items = [self.image(i)]
        img, boxes = augment(items, self.img, rng, self.aug, self.resample)
        return np.ascontiguousarray(img.transpose(2, 0, 1)), boxes


class EpochSampler(torch.utils.data.Sampler):
    """(epoch, index) keys in this epoch's order, a permutation seeded by (seed, epoch) only. Under DDP every rank
    draws the same permutation, padded to a multiple of the world size as DistributedSampler pads it, and takes
    every world-th index from its rank on: disjoint shares that together cover the set."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world, self.epoch = n, seed, rank, world, 0

    def __len__(self):
        return math.ceil(self.n / self.world)

    def indices(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        perm += perm[: len(self) * self.world - self.n]
        return perm[self.rank :: self.world]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.indices()])


def collate(batch):
    imgs = torch.from_numpy(np.stack([b[0] for b in batch]))  # uint8: a quarter of float's bytes to pass and copy
    rows = []
    for k, (_, boxes) in enumerate(batch):
        if len(boxes):
            cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2
            wh = boxes[:, 2:] - boxes[:, :2]
            rows.append(np.concatenate([np.full((len(boxes), 1), k), np.zeros((len(boxes), 1)), cxcy, wh], 1))
    t = torch.from_numpy(np.concatenate(rows).astype(np.float32)) if rows else torch.zeros(0, 6)
    return imgs, t


def make_loader(dataset: TrainSet, sampler: EpochSampler, batch: int, workers: int, pin: bool):
    """Workers forked once for the whole run (persistent), each keeping 4 batches ready; pinned host memory on CUDA so
    the copy to the GPU overlaps the step."""
    extra = dict(persistent_workers=True, prefetch_factor=4, multiprocessing_context="fork") if workers else {}
    return torch.utils.data.DataLoader(dataset, batch, sampler=sampler, collate_fn=collate, drop_last=False,
                                       num_workers=workers, pin_memory=pin, **extra)


def batches(loader, epoch: int):
    """The loader's batches; an image that fails to decode in a worker ends the run with the file's name and how to
    go on (torch re-raises a worker's error with its whole traceback folded into the message)."""
    it = iter(loader)
    while True:
        try:
            b = next(it)
        except StopIteration:
            return
        except FlowError as e:
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            cause = lines[-1].split("FlowError: ", 1)[-1] if lines else str(e)
            raise FlowError(f"epoch {epoch + 1}: {cause}") from None
        except RuntimeError as e:
            if "DataLoader worker" not in str(e):
                raise
            raise FlowError(f"epoch {epoch + 1}: {str(e).splitlines()[0]} (killed for memory? pass fewer --workers or "
                            "--cache none); `--resume` continues from the last finished epoch") from None
        yield b


def _bar(it, total: int, desc: str, show: bool):
    return progress(it, total, desc, show)
