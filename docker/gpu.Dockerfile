# Training and the CUDA-EP cross-check on an NVIDIA GPU (CUDA 13, as onnxruntime-gpu 1.31 expects).
# Build:  docker build -f docker/gpu.Dockerfile -t lpyolo-flow-gpu .
# Run:    docker run --gpus all --init --rm -v "$PWD:/workspace" lpyolo-flow-gpu make train-4w4a
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates git make python3 python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*

# The CUDA torch build from PyPI, then the project with the gpu extra (onnxruntime-gpu, onnx<1.23: ORT-GPU
# 1.31 reads ONNX IR <= 13).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md /opt/lpyolo-flow/
COPY flow /opt/lpyolo-flow/flow
COPY models /opt/lpyolo-flow/models
COPY board /opt/lpyolo-flow/board
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir torch==2.13.0 \
    && pip install --no-cache-dir "/opt/lpyolo-flow[gpu]"
WORKDIR /workspace
CMD ["bash"]
