# FINN (finn-plus) + lpyolo-flow build environment for the PYNQ-Z2 bitstream. Vivado/Vitis HLS are NOT in the
# image: docker/run.sh mounts the host's installation (FINN_XILINX_PATH) read-only and entrypoint.sh sources it.
# Build:  docker build -f docker/finn.Dockerfile -t lpyolo-flow-finn .
FROM ubuntu:22.04

ARG DEBIAN_FRONTEND=noninteractive
# Pins from finn-plus 1.6.1's finn/interface/external_dependencies.yaml, fetched at image build so that a build
# on a server without internet still finds them (finn-plus would otherwise fetch them on first use).
ARG FINN_HLSLIB_COMMIT=8d979e2bdced486dd25d26607d1ff5ae327ed6a8
ARG PYNQ_Z2_BOARD_FILES=https://dpoauwgwqsy2x.cloudfront.net/Download/pynq-z2.zip

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What FINN's own image installs for the Vivado half (github.com/Xilinx/finn docker/Dockerfile.finn at 39f0c9a,
# the same ubuntu:jammy base): libc6-dev-i386 (32-bit headers the Xilinx tools' gcc wrappers use), lsb-core
# (`lsb_release`, which Vivado's and Vitis HLS's launch scripts call), libxrender-dev, locales. Vivado 2022.2-2025.2
# on Ubuntu 22.04 also needs libtinfo5/libncurses5 and the X libraries even in batch mode, and libudev, which
# docker/run.sh preloads (Vivado's licence code crashes in containers without it, as FINN's run-docker.sh knows).
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential ca-certificates git locales make unzip wget zip \
        libc6-dev-i386 lsb-core \
        libglib2.0-0 libsm6 libtinfo5 libncurses5 libudev1 libx11-6 libxext6 libxi6 libxrender1 libxrender-dev libxtst6 \
        python3.11 python3.11-dev python3.11-venv \
    && locale-gen en_US.UTF-8 \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

ENV FINN_DEPS=/opt/finn-deps
RUN git clone --quiet https://github.com/Xilinx/finn-hlslib.git "$FINN_DEPS/finn-hlslib" \
    && git -C "$FINN_DEPS/finn-hlslib" checkout --quiet "$FINN_HLSLIB_COMMIT" \
    && mkdir -p "$FINN_DEPS/board_files" \
    && wget -q -O /tmp/pynq-z2.zip "$PYNQ_Z2_BOARD_FILES" \
    && unzip -q /tmp/pynq-z2.zip -d "$FINN_DEPS/board_files" \
    && rm /tmp/pynq-z2.zip

# Same install as `make install`, in a venv at /opt/venv: CPU torch (no multi-GB CUDA wheel in a build image),
# the project with its finn extra, then finn-plus without its brevitas==0.13.0 pin (see flow/hw/compat.py).
# LPYOLO_VENV tells the Makefile to use this environment as it is (no .venv, no install from the network).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH LPYOLO_VENV=/opt/venv
COPY pyproject.toml README.md /opt/lpyolo-flow/
COPY flow /opt/lpyolo-flow/flow
COPY models /opt/lpyolo-flow/models
COPY board /opt/lpyolo-flow/board
RUN python3.11 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir "/opt/lpyolo-flow[finn]" \
    && pip install --no-cache-dir --no-deps finn-plus==1.6.1

COPY docker/entrypoint.sh /usr/local/bin/lpyolo-entrypoint
ENV PYNQ_BOARD=Pynq-Z2 NUM_DEFAULT_WORKERS=4
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/lpyolo-entrypoint"]
CMD ["bash"]
