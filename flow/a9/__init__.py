"""The PYNQ-Z2's Cortex-A9 on a host: the estimate of the board's loop from measured stage times
(estimate.py) or from armv7 instruction counts under qemu-user (count.py, insn_count.c, setup.sh)."""
