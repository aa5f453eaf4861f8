"""Hardware truth without Vivado: our RTL (the stream max pool finn-plus lacks) and a Verilator harness that runs
any one-in/one-out AXI-stream module on real data, counting cycles and detecting deadlocks."""
