"""`python -m board run|bench`: the board runtime from a shell (on the PYNQ-Z2, or with --sim on any host)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from board.accelerator import Accelerator, BoardError


def open_accelerator(deploy: Path, sim: bool) -> Accelerator:
    if sim:
        from board.sim import SimOverlay

        return Accelerator(deploy, overlay=SimOverlay(deploy))
    return Accelerator(deploy)


def cmd_run(a) -> int:
    from board.pipeline import Pipeline, draw, image_source

    acc = open_accelerator(a.deploy, a.sim)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}

    def sink(name, img, dets):
        results[name] = [{"box": [round(float(v), 1) for v in d[:4]], "score": round(float(d[4]), 4),
                          "class": acc.manifest["classes"][int(d[5])]} for d in dets]
        print(f"{name}: {len(dets)} detection(s)" + "".join(f"\n  {r['class']} {r['score']:.2f} {r['box']}"
                                                           for r in results[name]))
        from PIL import Image

        Image.fromarray(draw(img, dets, acc.manifest["classes"])).save(out / (Path(name).stem + ".png"))

    stats = Pipeline(acc, a.conf).run(image_source(a.images), sink)
    (out / "detections.json").write_text(json.dumps({"detections": results, "stats": stats}, indent=2))
    print(f"{stats['frames']} frame(s); accelerator {stats['accelerator_fps']} FPS, end to end "
          f"{stats['end_to_end_fps']} FPS ({'simulated overlay: host golden model, not board timing' if a.sim else 'board'})"
          f"; written {out / 'detections.json'}")
    return 0


def _time(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def cmd_bench(a) -> int:
    """Host-side cost per 416x416 frame of pack + unpack + decode/NMS, against per-element Python in this run."""
    from board.packing import pack, pack_naive, unpack, unpack_naive
    from board.postprocess import detect

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (416, 416, 3), dtype=np.uint8)
    codes = rng.integers(-127, 128, (13, 13, 18)).astype(np.int8)
    raw = pack(codes.reshape(-1, 18), 8, 18).reshape(-1)
    anchors = [[10, 14], [23, 27], [37, 58]]
    fast = {"pack": _time(lambda: pack(frame.reshape(-1, 3), 8, 3), 50),
            "unpack": _time(lambda: unpack(raw, 8, 18, codes.size, True), 200),
            "decode+nms": _time(lambda: detect(codes, 1 / 127, anchors, 32, 1, 0.25, 0.45), 50)}
    slow = {"pack": _time(lambda: pack_naive(frame, 8, 3), 1),
            "unpack": _time(lambda: unpack_naive(bytes(raw), 8, 18, codes.size, True), 5)}
    total = sum(fast.values())
    for k, v in fast.items():
        ratio = f"  ({slow[k] / v:,.0f}x faster than per-element Python: {slow[k] * 1e3:.1f} ms)" if k in slow else ""
        print(f"{k:<11} {v * 1e3:8.3f} ms{ratio}")
    print(f"total       {total * 1e3:8.3f} ms per 416x416 frame (target < 10 ms)")
    if a.sim and a.deploy:
        from board.pipeline import Pipeline

        acc = open_accelerator(a.deploy, True)
        size = acc.manifest["input"]["accel_shape"][1]
        frames = [(f"f{i}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for i in range(a.frames)]
        s = Pipeline(acc).run(iter(frames))
        print(f"simulated pipeline: {s['end_to_end_fps']} FPS end to end, {s['accelerator_fps']} FPS accelerator "
              "(host golden model: not board timing)")
    return 0 if total < 0.010 else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m board", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="detect faces in images")
    r.add_argument("--deploy", type=Path, required=True, help="deploy folder (bitfile, hwh, manifest)")
    r.add_argument("--images", type=Path, required=True, help="an image or a folder of images")
    r.add_argument("--out", type=Path, default=Path("board_out"))
    r.add_argument("--sim", action="store_true", help="simulated overlay (golden model on the host)")
    r.add_argument("--conf", type=float, default=None)
    b = sub.add_parser("bench", help="host-side pack/unpack/decode cost per frame")
    b.add_argument("--sim", action="store_true")
    b.add_argument("--deploy", type=Path)
    b.add_argument("--frames", type=int, default=8)
    a = p.parse_args(argv)
    try:
        return cmd_run(a) if a.cmd == "run" else cmd_bench(a)
    except BoardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
