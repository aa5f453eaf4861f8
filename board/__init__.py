"""On-board runtime for the LPYOLO accelerator on PYNQ-Z2: numpy, with OpenCV where it imports (PIL otherwise) for
image decode, resize and drawing; pynq imported lazily, never torch/onnx.

The host evaluator imports the same decode/NMS/letterbox functions, so there is one implementation of the maths.
"""
