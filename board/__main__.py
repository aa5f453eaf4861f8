"""`python -m board run|bench`: the board runtime from a shell (on the PYNQ-Z2, or with --sim on any host)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from board.accelerator import Accelerator, BoardError


def open_accelerator(deploy: Path, sim: bool) -> Accelerator:
    if sim:
        from board.sim import SimOverlay

        return Accelerator(deploy, overlay=SimOverlay(deploy))
    return Accelerator(deploy)


def cmd_run(a) -> int:
    from PIL import Image

    from board.pipeline import Pipeline, draw, image_source

    acc = open_accelerator(a.deploy, a.sim)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}

    def sink(name, img, dets):
        results[name] = [{"box": [round(float(v), 1) for v in d[:4]], "score": round(float(d[4]), 4),
                          "class": acc.manifest.classes[int(d[5])]} for d in dets]
        print(f"{name}: {len(dets)} detection(s)" + "".join(f"\n  {r['class']} {r['score']:.2f} {r['box']}"
                                                           for r in results[name]))
        png = out / Path(name).with_suffix(".png")  # name is relative to --images: a/x.jpg and b/x.jpg stay apart
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw(img, dets, acc.manifest.classes)).save(png)

    stats = Pipeline(acc, a.conf).run(image_source(a.images), sink)
    (out / "detections.json").write_text(json.dumps({"detections": results, "stats": stats}, indent=2))
    print(f"{stats['frames']} frame(s); accelerator {stats['accelerator_fps']} FPS, end to end "
          f"{stats['end_to_end_fps']} FPS ({'simulated overlay: host golden model, not board timing' if a.sim else 'board'})"
          f"; written {out / 'detections.json'}")
    return 0


def cmd_bench(a) -> int:
    """Every stage of the loop timed where it runs, and the FPS those times allow (board/bench.py)."""
    from board.bench import report

    if a.deploy and not a.sim:
        raise BoardError("bench times the accelerator on the simulated overlay: add --sim (on the board, the "
                         "benchmark notebook times the real one)")
    report(a.deploy, a.json, a.reps, a.frames)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m board", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="detect faces in images")
    r.add_argument("--deploy", type=Path, required=True, help="deploy folder (bitfile, hwh, manifest)")
    r.add_argument("--images", type=Path, required=True, help="an image or a folder of images")
    r.add_argument("--out", type=Path, default=Path("board_out"))
    r.add_argument("--sim", action="store_true", help="simulated overlay (golden model on the host)")
    r.add_argument("--conf", type=float, default=None)
    b = sub.add_parser("bench", help="every stage's cost per frame here (on a host, `python -m flow bench a9` adds "
                       "the PYNQ-Z2 A9 estimate)")
    b.add_argument("--sim", action="store_true", help="time the accelerator wait and the real pipeline on the "
                   "simulated overlay (needs --deploy)")
    b.add_argument("--deploy", type=Path)
    b.add_argument("--json", type=Path, help="write the figures here")
    b.add_argument("--frames", type=int, default=40, help="frames through the real pipeline")
    b.add_argument("--reps", type=int, default=5, help="repeats per stage (the least of its timed calls is kept)")
    a = p.parse_args(argv)
    try:
        return cmd_run(a) if a.cmd == "run" else cmd_bench(a)
    except BoardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
