"""The main job on the built-in data: train 4w4a briefly -> export -> QCDQ -> cross-check -> FINN estimate ->
deploy package -> simulated board run on sample images, ending with one summary table and the paths written.

Every step is an ordinary `python -m flow` command run in-process, so the demo is exactly what a user would type.
Its figures reproduce: training is seeded and runs on a fixed number of threads with torch's deterministic
algorithms, and demo.json records the environment (the packages against constraints.txt, threads, CPU), so a
result that differs from the README's says why. The board step runs on pictures of the kind the model was trained
on (the built-in set's validation pictures) as well as on the package's real photos.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import shutil
import time
from pathlib import Path

# Float sums split over another number of threads round differently, and training amplifies it: the demo's figures
# are measured at this many threads whatever the machine (the README's on a 2-core machine).
THREADS = 2
BUILTIN_PICTURES = 4  # the built-in set's first validation pictures, shown beside the real photos


def steps(out: Path, img: int, epochs: int, variant: str, again: bool = False) -> list[tuple[str, list[str], str]]:
    """(name, argv of `python -m flow` — or of `python -m board` after "board" —, file the step must leave).
    again: the folder is the demo's own from an earlier run, which training may start over in."""
    return [
        ("data", ["data", "synth"], ""),
        ("train", ["train", "--variant", variant, "--img", str(img), "--epochs", str(epochs), "--out", str(out),
                   "--eval-every", str(epochs)] + ["--force"] * again, "model.qonnx.onnx"),
        ("qcdq", ["qcdq", str(out / "model.qonnx.onnx"), str(out / "model.qcdq.onnx")], "model.qcdq.onnx"),
        ("crosscheck", ["crosscheck", "--run", str(out)], "crosscheck.json"),
        ("estimate", ["estimate", "--run", str(out)], "finn/report/estimate.json"),
        ("deploy", ["deploy", "--run", str(out)], "deploy/manifest.json"),
        ("board-sim", ["board", "run", "--sim", "--deploy", str(out / "deploy"), "--images", str(out / "deploy" / "samples"),
                       "--out", str(out / "board_out")], "board_out/detections.json"),
        ("board-sim-builtin", ["board", "run", "--sim", "--deploy", str(out / "deploy"), "--images",
                               str(out / "builtin_pictures"), "--out", str(out / "board_out_builtin")],
         "board_out_builtin/detections.json"),
    ]


def copy_builtin_pictures(out: Path) -> Path:
    """The built-in set's first validation pictures (synthetic, like every training picture) into out/builtin_pictures."""
    from flow.train.builtin import builtin_dataset

    dest = out / "builtin_pictures"
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted((builtin_dataset() / "WIDER_val" / "images").glob("*/*.jpg"))[:BUILTIN_PICTURES]:
        shutil.copyfile(src, dest / src.name)
    return dest


def environment() -> dict:
    """What the demo's figures depend on besides the code: packages (as constraints.txt, or how they differ),
    threads, CPU and Python."""
    import torch

    from flow.env import check

    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.exists() else []
    cpu = names[0] if names else platform.processor()
    return {"packages": check() or "constraints.txt", "torch_threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform()}


def fix_threads() -> None:
    import torch

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)


def summary_figure(name: str, out: Path) -> str:
    """One line of result per step, read back from what the step wrote."""
    try:
        if name == "train" and (out / "eval.json").exists():
            e = json.loads((out / "eval.json").read_text())
            return f"AP50 {e.get('ap50', e.get('coco_ap50', '?'))}"
        if name == "crosscheck":
            r = json.loads((out / "crosscheck.json").read_text())
            return ("all bit-exact" if r["all_bit_exact"] else "tie flips only") if not r["any_mismatch"] else "MISMATCH"
        if name == "estimate":
            e = json.loads((out / "finn/report/estimate.json").read_text())
            return f"{e.get('fps', '?')} FPS est., fits={e.get('fits')}"
        if name in ("board-sim", "board-sim-builtin"):
            folder, kind = ("board_out", "photo") if name == "board-sim" else ("board_out_builtin", "built-in picture")
            d = json.loads((out / folder / "detections.json").read_text())["detections"]
            return f"{sum(map(len, d.values()))} face(s) in {len(d)} {kind}(s)"
    except (OSError, ValueError, KeyError) as err:
        return f"(unreadable: {err})"
    return ""


def cli(argv: list[str]) -> int:
    from rich.table import Table

    from board.__main__ import main as board_main
    from flow.cli import main as flow_main
    from flow.terminal import console as terminal_console
    from models import PRESETS

    p = argparse.ArgumentParser(prog="python -m flow demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--img", type=int, default=192, help="model input size for the brief training")
    p.add_argument("--epochs", type=int, default=8, help="brief: `make train-4w4a` runs the full 40")
    p.add_argument("--variant", default="4w4a", choices=list(PRESETS))
    p.add_argument("--quiet", action="store_true", help="hide each step's own output")
    a = p.parse_args(argv)
    console = terminal_console()
    results, ok = [], True
    # The demo marks its folder; a second `make demo` may retrain there, but a folder the demo did not make (a
    # user's run given as --out) keeps train's refusal to start over in it.
    marker = a.out / "demo.json"
    from flow.provenance import ours, record

    again = ours(marker)
    fix_threads()
    env = environment()
    if env["packages"] != "constraints.txt":
        console.print(f"note: {len(env['packages'])} difference(s) from the tested environment (`python -m flow env "
                      "check`): the README's figures were measured in the one `make install` builds", highlight=False)
    if again or not a.out.exists():
        from flow.files import atomic_write_json

        atomic_write_json(marker, {"made_by": "python -m flow demo", "variant": a.variant, "img": a.img,
                                   "epochs": a.epochs, "environment": env})
        record(marker, [], f"python -m flow demo --out {a.out}")
    for name, args, artifact in steps(a.out, a.img, a.epochs, a.variant, again):
        if name == "board-sim-builtin":
            copy_builtin_pictures(a.out)
        cmd = "python -m " + (" ".join(args) if args[0] == "board" else "flow " + " ".join(args))
        console.rule(f"[bold]{name}[/]: {cmd}")
        t0 = time.perf_counter()
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink) if a.quiet else contextlib.nullcontext():
            try:
                rc = board_main(args[1:]) if args[0] == "board" else flow_main(args)
            except SystemExit as e:  # argparse errors
                rc = int(e.code or 0)
        secs = time.perf_counter() - t0
        status = {0: "ok", 3: "not in this checkout"}.get(rc, f"failed (exit {rc})")
        if rc == 0 and artifact and not (a.out / artifact).exists():
            status = f"ok but {artifact} missing"
            rc = 1
        ok &= rc == 0
        results.append((name, status, secs, summary_figure(name, a.out) if rc == 0 else "", artifact))
        if rc not in (0, 3) and name in ("train", "qcdq"):
            break  # later steps need these artifacts
    table = Table(title=f"demo: {a.variant} at {a.img}x{a.img}, run folder {a.out}")
    for col in ("step", "status", "seconds", "result", "wrote"):
        table.add_column(col)
    for name, status, secs, fig, artifact in results:
        colour = "green" if status == "ok" else "red"
        table.add_row(name, f"[{colour}]{status}[/]", f"{secs:.1f}", fig, str(a.out / artifact) if artifact else "")
    console.print(table)
    return 0 if ok else 1
