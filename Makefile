# lpyolo-flow: the user's interface. Every target is a thin call of `python -m flow ...`.
# Variables: DATA (WIDER FACE root; default the built-in set), VARIANT, IMG, EPOCHS, DEVICE, RUN, MODEL (import),
# FORCE=1 (replace what a command would otherwise refuse to overwrite), SKIP_BAD=1 (train: skip bad dataset entries),
# RESAMPLE=nearest (train: the cheap letterbox, in training and on the board; README "Board").
SHELL := /bin/bash
PY_SYS ?= python3
# LPYOLO_VENV: a prepared environment used as it is (the FINN image's /opt/venv), never reinstalled
VENV ?= $(or $(LPYOLO_VENV),.venv)
PY := $(VENV)/bin/python
# On this project's machines `pip install torch==2.13.0` takes a local CPU wheel; elsewhere point pip at the CPU
# index (TORCH_INDEX=https://download.pytorch.org/whl/cpu) or a multi-GB CUDA build is downloaded.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
VARIANT ?= 4w4a
IMG ?=
EPOCHS ?=
DATA ?=
DEVICE ?= auto
RUN ?= runs/$(VARIANT)
FORCE ?=
SKIP_BAD ?=
RESAMPLE ?=
PRESETS := 4w4a 2w4a 3w5a 4w2a 6w4a 8w3a 8w8a float

TRAIN_TARGETS := $(addprefix train-,$(PRESETS))
.PHONY: install test lint demo export import qcdq crosscheck estimate bitstream docker-bitstream deploy deploy-board board-py310-wheels \
        bench bench-a9 fifos rtlsim synth data clean $(TRAIN_TARGETS)

# finn-plus 1.6.1 pins brevitas==0.13.0, which cannot install beside torch 2.13: its code is added with --no-deps
# (its runtime dependencies come from the `finn` extra; see flow/hw/compat.py).
ifdef LPYOLO_VENV
install:
	@test -x $(PY) || { echo "error: LPYOLO_VENV=$(LPYOLO_VENV) has no bin/python"; exit 2; }
else
install: $(VENV)/.installed
endif
$(VENV)/.installed: pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev,finn]'
	$(PY) -m pip install -q --no-deps finn-plus==1.6.1
	touch $@

test: install
	$(VENV)/bin/ruff check flow models board tests
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check flow models board tests

demo: install
	$(PY) -m flow demo --out runs/demo

# GNU make never searches pattern rules for a phony target (so a plain `train-%:` made `make train-4w4a` "Nothing
# to be done"): a static pattern rule names each preset's target. RUN= given on the command line or in the
# environment is the run folder, else runs/<preset>.
$(TRAIN_TARGETS): train-%: install
	$(PY) -m flow train --variant $* $(if $(IMG),--img $(IMG)) $(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS))$(if $(RESAMPLE), --resample $(RESAMPLE)) --device $(DEVICE) --out $(if $(filter file,$(origin RUN)),runs/$*,$(RUN))$(if $(SKIP_BAD), --skip-bad)$(if $(FORCE), --force)

data: install
	$(PY) -m flow data synth

export: install
	$(PY) -m flow export $(if $(wildcard $(RUN)/best.pt),--checkpoint $(RUN)/best.pt $(if $(filter-out file,$(origin VARIANT)),--variant $(VARIANT)),--variant $(VARIANT)) $(if $(IMG),--img $(IMG)) --out $(RUN)$(if $(FORCE), --force)

# a QONNX/FINN-ONNX model from elsewhere becomes a run folder: make import MODEL=their.onnx RUN=runs/theirs
import: install
	@test -n "$(MODEL)" || { echo "set MODEL=<your model.onnx> (and RUN=<run folder>)"; exit 2; }
	$(PY) -m flow import $(MODEL) --out $(RUN)$(if $(FORCE), --force)

qcdq: install
	$(PY) -m flow qcdq $(RUN)/model.qonnx.onnx $(RUN)/model.qcdq.onnx

crosscheck: install
	$(PY) -m flow crosscheck --run $(RUN) --device $(DEVICE)

estimate: install
	$(PY) -m flow estimate --run $(RUN)

# the all-RTL design (simulated bit-exact and sized by Yosys here); HLS=1 for FINN's HLS layers
bitstream: install
	$(PY) -m flow bitstream --run $(RUN) $(if $(HLS),--hls)

docker-bitstream:
	docker/run.sh make bitstream RUN=$(RUN) $(if $(HLS),HLS=1)

fifos: install
	$(PY) -m flow fifos --run $(RUN)

rtlsim: install
	$(PY) -m flow rtlsim --run $(RUN)

synth: install
	$(PY) -m flow synth --run $(RUN)

deploy: install
	$(PY) -m flow deploy --run $(RUN)

deploy-board: deploy
	@test -n "$(PYNQ_IP)" || { echo "set PYNQ_IP=<board address>"; exit 2; }
	$(PY) -m flow deploy --run $(RUN) --board $(PYNQ_IP)

bench: install
	$(PY) -m flow bench crosscheck

# The board's host path counted on an armhf Debian userland under qemu-user (root: apt; ~250 MB, minutes), then
# timed here with the C image stages' A9 time from those counts. A9_DIR keeps the userland between runs.
A9_DIR ?= build/armhf
bench-a9: install
	bash board/a9/setup.sh $(A9_DIR)
	$(PY) -m board bench --a9 $(A9_DIR) --json $(A9_DIR)/bench.json

# The PYNQ-Z2 image's Python packages for cp310 (PYNQ 3.0.1), for the test that installs and runs the deploy
# package on them offline: LPYOLO_PY310_WHEELS=build/py310-wheels. Needs a python3.10 and PyPI, once.
PY310 ?= python3.10
PY310_WHEELS ?= build/py310-wheels
board-py310-wheels:
	$(PY310) -m pip download --only-binary=:all: -d $(PY310_WHEELS) pip==22.0.2 setuptools==59.6.0 numpy==1.21.5 Pillow==9.0.1 opencv-python-headless==4.5.4.60

clean:
	rm -rf runs build .pytest_cache
