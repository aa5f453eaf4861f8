"""lpyolo-flow: QAT -> QONNX -> FINN / QCDQ, with a cross-check that proves every executor computes the same integers."""

__version__ = "0.1.0"
