# lpyolo-flow: the user's interface. Every target is a thin call of `python -m flow ...`.
# Variables: DATA (WIDER FACE root; default the built-in set), VARIANT, IMG, EPOCHS, DEVICE, RUN, MODEL (import),
# FORCE=1 (replace what a command would otherwise refuse to overwrite), SKIP_BAD=1 (train: skip bad dataset entries),
# RESAMPLE=nearest (train: the cheap letterbox, in training and on the board; README "Board"),
# FRAME=WxH or none (train/export: the camera frame the fabric letterboxes; default 640x480 for bilinear-exact models).
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
FRAME ?=
# models.PRESETS, asked of the flow with the system Python (it reads them without importing torch: works before
# `make install`)
PRESETS := $(shell cd '$(dir $(abspath $(firstword $(MAKEFILE_LIST))))' && $(PY_SYS) -m flow presets)
$(if $(PRESETS),,$(warning `$(PY_SYS) -m flow presets` listed no presets: the train-<preset> targets are missing))

TRAIN_TARGETS := $(addprefix train-,$(PRESETS))
.PHONY: install lock test test-slow lint demo export import qcdq qcdq-int crosscheck estimate bitstream docker-bitstream deploy deploy-board board-py310-wheels \
        bench bench-a9 fifos rtlsim synth data clean clean-runs $(TRAIN_TARGETS)

# Every package at the version in constraints.txt, the set `make test` passed with (`python -m flow env check`
# compares a venv with it). finn-plus 1.6.1 pins brevitas==0.13.0, which cannot install beside torch 2.13: its code
# is added with --no-deps (its other pins are in constraints.txt; constraints-conflicts.txt says why 0.13.4 is safe).
# .installed holds the hash of the constraints it was installed from: tests/test_env.py holds such a venv to them.
ifdef LPYOLO_VENV
install:
	@test -x $(PY) || { echo "error: LPYOLO_VENV=$(LPYOLO_VENV) has no bin/python"; exit 2; }
else
install: $(VENV)/.installed
endif
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt --upgrade pip setuptools
	$(PY) -m pip install -q -c constraints.txt $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,finn]'
	$(PY) -m pip install -q -c constraints.txt --no-deps finn-plus==1.6.1
	sha256sum constraints.txt > $@

# Refresh constraints.txt: the newest versions pyproject.toml and finn-plus's own pins allow, resolved in a fresh
# venv (LOCK_VENV), written with their exact versions; then `make test` reinstalls from them and tests them.
LOCK_VENV ?= build/lock-venv
lock: install
	rm -rf $(LOCK_VENV)
	$(PY_SYS) -m venv $(LOCK_VENV)
	$(PY) -m flow env finn-requirements > $(LOCK_VENV)/finn-requirements.txt
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip setuptools
	$(LOCK_VENV)/bin/python -m pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[dev,finn]' -r $(LOCK_VENV)/finn-requirements.txt
	$(LOCK_VENV)/bin/python -m pip install -q --no-deps finn-plus==1.6.1
	$(PY) -m flow env lock --venv $(LOCK_VENV)

# the suite less the cases marked slow (minutes each: every preset through FINN, training runs); CI runs both
test: install
	$(VENV)/bin/ruff check flow models board tests
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check flow models board tests

demo: install
	$(PY) -m flow demo --out runs/demo

# GNU make never searches pattern rules for a phony target (so a plain `train-%:` made `make train-4w4a` "Nothing
# to be done"): a static pattern rule names each preset's target. RUN= given on the command line or in the
# environment is the run folder, else runs/<preset>.
$(TRAIN_TARGETS): train-%: install
	$(PY) -m flow train --variant $* $(if $(IMG),--img $(IMG)) $(if $(DATA),--data $(DATA)) $(if $(EPOCHS),--epochs $(EPOCHS))$(if $(RESAMPLE), --resample $(RESAMPLE))$(if $(FRAME), --frame $(FRAME)) --device $(DEVICE) --out $(if $(filter file,$(origin RUN)),runs/$*,$(RUN))$(if $(SKIP_BAD), --skip-bad)$(if $(FORCE), --force)

data: install
	$(PY) -m flow data synth

export: install
	$(PY) -m flow export $(if $(wildcard $(RUN)/best.pt),--checkpoint $(RUN)/best.pt $(if $(filter-out file,$(origin VARIANT)),--variant $(VARIANT)),--variant $(VARIANT)) $(if $(IMG),--img $(IMG))$(if $(FRAME), --frame $(FRAME)) --out $(RUN)$(if $(FORCE), --force)

# a QONNX/FINN-ONNX model from elsewhere becomes a run folder: make import MODEL=their.onnx RUN=runs/theirs
import: install
	@test -n "$(MODEL)" || { echo "set MODEL=<your model.onnx> (and RUN=<run folder>)"; exit 2; }
	$(PY) -m flow import $(MODEL) --out $(RUN)$(if $(FORCE), --force)

qcdq: install
	$(PY) -m flow qcdq $(RUN)/model.qonnx.onnx $(RUN)/model.qcdq.onnx

# the hardware's integer arithmetic (FINN's streamlined thresholds) in standard ONNX: the bit-exact golden model
qcdq-int: install
	$(PY) -m flow qcdq --integer $(RUN)/model.qonnx.onnx $(RUN)/model.int.onnx

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
	bash flow/a9/setup.sh $(A9_DIR)
	$(PY) -m flow bench a9 --a9 $(A9_DIR) --json $(A9_DIR)/bench.json

# The PYNQ-Z2 image's Python packages for cp310 (PYNQ 3.0.1), for the test that installs and runs the deploy
# package on them offline: LPYOLO_PY310_WHEELS=build/py310-wheels. Needs a python3.10 and PyPI, once.
PY310 ?= python3.10
PY310_WHEELS ?= build/py310-wheels
board-py310-wheels:
	$(PY310) -m pip download --only-binary=:all: -d $(PY310_WHEELS) pip==22.0.2 setuptools==59.6.0 numpy==1.21.5 Pillow==9.0.1 opencv-python-headless==4.5.4.60

# Caches only: everything here is remade by the commands that use it (build/ holds bench-a9's userland). Trained
# runs are never touched by `clean`; `make clean-runs` lists them, and deletes them only with CONFIRM=1.
clean:
	rm -rf .pytest_cache .ruff_cache build
	$(if $(wildcard flow models board tests),find $(wildcard flow models board tests) -name __pycache__ -type d -prune -exec rm -rf {} +)

RUNS ?= runs
CONFIRM ?=
clean-runs:
	@test -d $(RUNS) || { echo "$(RUNS): no run folders to delete"; exit 0; }; \
	echo "$(if $(CONFIRM),deleting,would delete) $(RUNS) and everything in it:"; \
	find $(RUNS) -mindepth 1 -maxdepth 1 -exec du -sh {} + | sed 's/^/  /'; \
	$(if $(CONFIRM),rm -rf $(RUNS),echo "nothing deleted: run \`make clean-runs CONFIRM=1\` to delete them"; exit 1)
