"""The hardware wing, bottom to top: `z2` (the board's facts) -> `compat` (finn-plus workarounds) and `rtl/` (our
RTL) -> `foldings/` (committed configs) -> `steps` (FINN's steps, registered by name) and `build_dir` (the build
folder's lifecycle) -> `build` (the steps run to the estimate) -> `rtlgen` (HDL generation and
stitching) -> `rtlsim` (Verilator) and `synth` (Yosys) -> `fold` (folding search) -> `fifos` (FIFO sizing) ->
`vivado` (FINN's Vivado half) -> `commands` (the estimate/bitstream CLIs and the hardware benchmarks)."""
