"""LPYOLO-shaped model zoo: the network is built from a QuantSpec (models.presets names the presets)."""

from models.lpyolo import LAYERS, LPYOLO, QuantSpec, SpecError, build_model
from models.presets import PRESETS, parse_overrides, spec_for

__all__ = ["LAYERS", "LPYOLO", "PRESETS", "QuantSpec", "SpecError", "build_model", "parse_overrides", "spec_for"]
