// Streaming 2x2 max pool with stride 2: the RTL node finn-plus lacks (it builds max pools as a sliding window
// followed by the HLS `Pool_hls`, the last HLS node in an otherwise all-RTL 4-bit design).
//
// FINN stream conventions: pixels in NHWC order, each beat carries PE channels of one pixel (lane p of a beat in
// bits [p*BITS +: BITS], as FINN's packers do), channel folds innermost, TDATA padded to whole bytes. One input
// beat is taken per cycle; the beat at an odd row and odd column completes a 2x2 window and yields one output beat
// (so the module runs at the input rate: H*W*C/PE cycles per frame). Storage: one partial-max register per channel
// fold (the left column of the window) and one line of W/2 * C/PE partial maxima (the upper row).
// The output is registered; backpressure stalls the input only on beats that would produce an output.
// Plain `parameter` declarations (no `int unsigned`, no localparam in the port list) so that Yosys's own
// Verilog front end reads the module too.
module lpyolo_maxpool #(
    parameter H = 4,  // input rows (even)
    parameter W = 4,  // input columns (even)
    parameter C = 2,  // channels
    parameter PE = 1,  // channels per beat (divides C)
    parameter BITS = 4,  // bits per value
    parameter SIGNED = 0,  // two's complement values (activations after thresholds are unsigned)
    parameter STREAM_W = (PE * BITS + 7) / 8 * 8  // derived: leave at its default
) (
    input  logic                ap_clk,
    input  logic                ap_rst_n,
    input  logic [STREAM_W-1:0] in0_V_TDATA,
    input  logic                in0_V_TVALID,
    output logic                in0_V_TREADY,
    output logic [STREAM_W-1:0] out0_V_TDATA,
    output logic                out0_V_TVALID,
    input  logic                out0_V_TREADY
);
  localparam CF = C / PE;  // channel folds: beats per pixel
  localparam LINE = W / 2 * CF;
  typedef logic [PE*BITS-1:0] beat_t;

  initial begin
    if (H % 2 != 0 || W % 2 != 0) $fatal(1, "lpyolo_maxpool: H=%0d, W=%0d must be even", H, W);
    if (C % PE != 0) $fatal(1, "lpyolo_maxpool: PE=%0d does not divide C=%0d", PE, C);
  end

  function automatic beat_t lane_max(beat_t a, beat_t b);
    logic [BITS-1:0] x, y;
    for (int p = 0; p < PE; p++) begin
      x = a[p*BITS+:BITS];
      y = b[p*BITS+:BITS];
      lane_max[p*BITS+:BITS] = (SIGNED ? ($signed(x) > $signed(y)) : (x > y)) ? x : y;
    end
  endfunction

  // position of the next input beat
  logic [$clog2(CF+1)-1:0] cf;
  logic [$clog2(W+1)-1:0] col;
  logic [$clog2(H+1)-1:0] row;
  beat_t left[0:CF-1];  // max over the window's left column, per channel fold
  beat_t upper[0:LINE-1];  // max over the upper row's two columns, per output column and channel fold

  beat_t in_beat, pair_max, window_max;
  logic completes_window, in_fire, out_valid;
  beat_t out_beat;
  logic [$clog2(LINE+1)-1:0] line_addr;

  assign in_beat = in0_V_TDATA[PE*BITS-1:0];
  assign line_addr = (col >> 1) * CF + cf;
  assign pair_max = lane_max(in_beat, left[cf]);
  assign window_max = lane_max(pair_max, upper[line_addr]);
  assign completes_window = col[0] && row[0];
  assign in0_V_TREADY = !completes_window || !out_valid || out0_V_TREADY;
  assign in_fire = in0_V_TVALID && in0_V_TREADY;

  always_ff @(posedge ap_clk) begin
    if (!ap_rst_n) begin
      cf <= '0;
      col <= '0;
      row <= '0;
      out_valid <= 1'b0;
    end else begin
      if (out_valid && out0_V_TREADY) out_valid <= 1'b0;
      if (in_fire) begin
        if (!col[0]) left[cf] <= in_beat;
        else if (!row[0]) upper[line_addr] <= pair_max;
        else begin
          out_beat  <= window_max;
          out_valid <= 1'b1;
        end
        if (cf == CF - 1) begin
          cf <= '0;
          if (col == W - 1) begin
            col <= '0;
            row <= (row == H - 1) ? '0 : row + 1;
          end else col <= col + 1;
        end else cf <= cf + 1;
      end
    end
  end

  assign out0_V_TVALID = out_valid;
  assign out0_V_TDATA = STREAM_W'(out_beat);
endmodule
