// A bounded first-word-fall-through AXI-stream FIFO of DEPTH words, standing in for FINN's StreamingFIFO in
// simulation: under FINN_SIMULATION (needed for finn-rtllib's behavioural MVU) FINN's wrapper becomes an
// unbounded occupancy gauge, and finn-rtllib's fifo.sv computes its geometry with a struct-valued constant
// function Verilator cannot evaluate. Same capacity and handshake, so backpressure is what the hardware sees;
// `maxcount` reports the highest fill since reset.
module lpyolo_stream_fifo #(
    parameter DEPTH = 32,
    parameter WIDTH = 8
) (
    input ap_clk,
    input ap_rst_n,
    input [WIDTH-1:0] in0_V_TDATA,
    input in0_V_TVALID,
    output in0_V_TREADY,
    output [WIDTH-1:0] out0_V_TDATA,
    output out0_V_TVALID,
    input out0_V_TREADY,
    output reg [31:0] maxcount
);
  localparam AW = (DEPTH > 1) ? $clog2(DEPTH) : 1;
  reg [WIDTH-1:0] mem[0:DEPTH-1];
  reg [AW-1:0] rd, wr;
  reg [31:0] count;
  wire in_fire = in0_V_TVALID && in0_V_TREADY;
  wire out_fire = out0_V_TVALID && out0_V_TREADY;
  assign in0_V_TREADY = count < DEPTH;
  assign out0_V_TVALID = count != 0;
  assign out0_V_TDATA = mem[rd];

  always @(posedge ap_clk) begin
    if (!ap_rst_n) begin
      rd <= 0;
      wr <= 0;
      count <= 0;
      maxcount <= 0;
    end else begin
      if (in_fire) begin
        mem[wr] <= in0_V_TDATA;
        wr <= (wr == DEPTH - 1) ? 0 : wr + 1;
      end
      if (out_fire) rd <= (rd == DEPTH - 1) ? 0 : rd + 1;
      count <= count + in_fire - out_fire;
      if (count + in_fire - out_fire > maxcount) maxcount <= count + in_fire - out_fire;
    end
  end
endmodule
