"""The committed foldings: one folding JSON per preset and input size (`<variant>_<img>[_rtl].json`), each with
the FIFO sizes made for it (`.fifos.json`) and what it was made with and gave (`.meta.json`). Below the folding
search, which writes them, and the estimate, which reads them."""

from __future__ import annotations

import json
from pathlib import Path


def committed_folding(variant: str, img: int, standalone_thresholds: bool) -> Path:
    """flow/hw/foldings/<variant>_<img>[_rtl].json: the all-RTL build has other nodes, so its own folding."""
    return Path(__file__).parent / f"{variant}_{img}{'_rtl' if standalone_thresholds else ''}.json"


def fifos_beside(folding: Path) -> Path:
    """<folding>.fifos.json: the FIFO depths sized for that folding (`python -m flow fifos`)."""
    return Path(folding).with_suffix(".fifos.json")


def meta_path(folding: Path) -> Path:
    return Path(folding).with_suffix(".meta.json")


def write_meta(folding: Path, summary: dict, standalone_thresholds: bool) -> None:
    """What a folding was made with and what it gave: the build mode must match for its node names to exist."""
    from importlib.metadata import version

    from flow.files import atomic_write_json

    atomic_write_json(meta_path(folding), {
        "variant": summary["variant"], "img": summary["img"], "standalone_thresholds": standalone_thresholds,
        "fps": summary["fps"], "fps_simulated": summary.get("fps_simulated"),
        "total_with_overhead": summary["total_with_overhead"], "fits": summary["fits"],
        "finn_plus": version("finn-plus")})


def read_meta(folding: Path) -> dict:
    p = meta_path(folding)
    return json.loads(p.read_text()) if p.exists() else {}
