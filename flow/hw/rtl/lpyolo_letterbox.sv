// Streaming letterbox: a camera frame (W_IN x H_IN RGB, raster order, one 24-bit pixel per beat, R in bits 7:0)
// in, the SIZE x SIZE letterboxed canvas out (the frame resized to RW x RH by bilinear interpolation, centred,
// PAD around), bit for bit what board.preprocess.letterbox_fixed computes:
//   source position per output pixel: ((2o + 1) n_in - n_out) / (2 n_out), floored to 8 fractional bits and
//   clamped to [0, n_in - 1]; stepped exactly (quotient and remainder, no accumulated rounding);
//   h_k = (a << 8) + wx (b - a) along source rows i0 and i1, v = (h_0 << 8) + wy (h_1 - h_0), out = (v + 2^15) >> 16.
// Storage: three source lines (the two an output row reads, one being written), each split into even and odd
// columns so that the two horizontal taps x0 and x0 + 1 are read in the same cycle: six memories of
// ceil(W_IN/2) x 24 bits, one write and one read port each (block RAM). One input beat and one output beat per
// clock at most; the input is held (TREADY low) only while it would overwrite a line an output row still reads.
// Output pipeline: issue (addresses) -> line read -> horizontal lerp -> vertical lerp and round, all stages
// enabled together while the output register is free or taken (backpressure stalls the whole pipeline).
// RH, RW: the resized size, board.preprocess.letterbox_geometry's (the float ratio rounded as Python rounds),
// passed in so that there is one geometry; PX, PY: the pads, derived.
module lpyolo_letterbox #(
    parameter H_IN = 480,  // camera frame rows
    parameter W_IN = 640,  // camera frame columns
    parameter SIZE = 416,  // output side
    parameter RH = 312,  // resized rows (letterbox_geometry)
    parameter RW = 416,  // resized columns (letterbox_geometry)
    parameter PAD = 114,  // padding grey (board.preprocess.PAD_VALUE), the same in R, G and B
    parameter PX = (SIZE - RW) / 2,  // derived: leave at its default
    parameter PY = (SIZE - RH) / 2  // derived: leave at its default
) (
    input  logic        ap_clk,
    input  logic        ap_rst_n,
    input  logic [23:0] in0_V_TDATA,
    input  logic        in0_V_TVALID,
    output logic        in0_V_TREADY,
    output logic [23:0] out0_V_TDATA,
    output logic        out0_V_TVALID,
    input  logic        out0_V_TREADY
);
  localparam F = 8;  // fractional bits of positions and weights
  localparam DEPTH = (W_IN + 1) / 2;  // words per line and column parity
  localparam AW = DEPTH > 1 ? $clog2(DEPTH) : 1;
  // exact position stepping along x (columns) and y (rows): p(o) * D = Q0 * D + R0 + o * (SQ * D + SR)
  localparam DX = 2 * RW, SQX = (2 * W_IN * 256) / DX, SRX = (2 * W_IN * 256) % DX;
  localparam DY = 2 * RH, SQY = (2 * H_IN * 256) / DY, SRY = (2 * H_IN * 256) % DY;
  localparam N0X = (W_IN - RW) * 256, N0Y = (H_IN - RH) * 256;  // numerators of o = 0, possibly negative
  localparam Q0X = N0X >= 0 ? N0X / DX : -((-N0X + DX - 1) / DX), R0X = N0X - Q0X * DX;  // floor division
  localparam Q0Y = N0Y >= 0 ? N0Y / DY : -((-N0Y + DY - 1) / DY), R0Y = N0Y - Q0Y * DY;
  localparam MAXPX = (W_IN - 1) * 256, MAXPY = (H_IN - 1) * 256;
  localparam I0_FIRST = (Q0Y < 0 ? 0 : Q0Y > MAXPY ? MAXPY : Q0Y) / 256;  // the first output row's upper line

  initial begin
    if (RW < 1 || RH < 1 || RW > SIZE || RH > SIZE)
      $fatal(1, "lpyolo_letterbox: resized %0dx%0d must fit in %0dx%0d", RW, RH, SIZE, SIZE);
    if (W_IN > 4095 || H_IN > 4095) $fatal(1, "lpyolo_letterbox: frames up to 4095x4095");
  end

  typedef logic signed [23:0] pos_t;
  function automatic logic [23:0] clamp(pos_t q, int maxp);
    return q < 0 ? 24'd0 : q > maxp ? 24'(maxp) : 24'(q);
  endfunction

  // ---- writer: the input frame into the line memories ----
  logic [12:0] wcol, wrow;  // next input pixel; wrow = rows of the writer's frame complete
  logic [1:0] wslot;  // wrow mod 3
  logic [1:0] wframe, rframe;  // frames started by the writer and the reader (mod 4)
  logic [1:0] ahead;  // wframe - rframe
  logic in_fire;

  // ---- reader: the output canvas, issue stage ----
  logic [12:0] oy, ox;
  pos_t qy, qx;  // floor of the source position in 1/256 pixel
  logic [15:0] ry, rx;  // and its remainder (in 1/D)
  logic [23:0] py_c, px_c;
  logic [12:0] i0, i1, x0;
  logic row_in, col_in, past_region, rows_ready, issue, advance;
  logic [1:0] slot0, slot1;

  assign ahead = wframe - rframe;
  assign py_c = clamp(qy, MAXPY);
  assign px_c = clamp(qx, MAXPX);
  assign i0 = 13'(py_c >> F);
  assign i1 = i0 + 1 < H_IN ? i0 + 1 : i0;
  assign x0 = 13'(px_c >> F);
  assign slot0 = 2'(i0 % 3);
  assign slot1 = 2'(i1 % 3);
  assign row_in = oy >= PY && oy < PY + RH;
  assign col_in = ox >= PX && ox < PX + RW;
  assign past_region = oy >= PY + RH;
  // ahead: 0 same frame, 1 the writer has finished the reader's frame (all its rows are in the lines), 3 the reader
  // has finished its frame and waits in the next one's top pad while the writer still takes the last rows (so a
  // small output never runs ahead of the frame that fills it); 2 never (the writer stops at one frame ahead)
  assign rows_ready = ahead == 1 || (ahead == 0 && wrow > i1);
  assign issue = !(row_in && col_in) || rows_ready;

  // the writer may overwrite line wrow - 3 once no output row to come reads it
  // (ahead 3: the rows left of the previous frame are read by nobody)
  assign in0_V_TREADY = ahead == 0 ? (past_region || wrow <= i0 + 2) :
                        ahead == 1 ? (past_region && wrow <= I0_FIRST + 2) : ahead == 3;
  assign in_fire = in0_V_TVALID && in0_V_TREADY;

  // ---- pipeline registers ----
  logic v1, pad1, par1, v2, pad2, v3;
  logic [F-1:0] wx1, wy1, wy2;
  logic [1:0] s0_1, s1_1;
  logic [15:0] h0[0:2], h1[0:2];
  logic [23:0] out_px;
  assign advance = !v3 || out0_V_TREADY;

  // ---- line memories: slot s, column parity b ----
  logic [23:0] rdata[0:2][0:1];
  logic [AW-1:0] raddr[0:1];
  assign raddr[0] = AW'(((x0 + 1) >> 1) < DEPTH ? (x0 + 1) >> 1 : DEPTH - 1);  // even column x0 or x0 + 1
  assign raddr[1] = AW'(x0 >> 1);  // odd column x0 or x0 + 1
  for (genvar s = 0; s < 3; s++) begin : g_slot
    for (genvar b = 0; b < 2; b++) begin : g_par
      (* ram_style = "block" *) logic [23:0] mem[0:DEPTH-1];
      logic [23:0] q;
      always_ff @(posedge ap_clk) begin
        if (in_fire && wslot == s && wcol[0] == b) mem[AW'(wcol >> 1)] <= in0_V_TDATA;
        if (advance) q <= mem[raddr[b]];
      end
      assign rdata[s][b] = q;
    end
  end

  always_ff @(posedge ap_clk) begin
    if (!ap_rst_n) begin
      wcol <= '0;
      wrow <= '0;
      wslot <= '0;
      wframe <= '0;
    end else if (in_fire) begin
      if (wcol == W_IN - 1) begin
        wcol <= '0;
        wslot <= wslot == 2 ? 2'd0 : wslot + 1;
        if (wrow == H_IN - 1) begin
          wrow <= '0;
          wslot <= '0;
          wframe <= wframe + 1;
        end else wrow <= wrow + 1;
      end else wcol <= wcol + 1;
    end
  end

  always_ff @(posedge ap_clk) begin
    if (!ap_rst_n) begin
      oy <= '0;
      ox <= '0;
      qy <= pos_t'(Q0Y);
      ry <= 16'(R0Y);
      qx <= pos_t'(Q0X);
      rx <= 16'(R0X);
      rframe <= '0;
    end else if (advance && issue) begin
      if (row_in && col_in) begin  // next column position
        if (rx + SRX >= DX) begin
          rx <= 16'(rx + SRX - DX);
          qx <= qx + SQX + 1;
        end else begin
          rx <= 16'(rx + SRX);
          qx <= qx + SQX;
        end
      end
      if (ox == SIZE - 1) begin
        ox <= '0;
        qx <= pos_t'(Q0X);
        rx <= 16'(R0X);
        if (row_in) begin  // next row position
          if (ry + SRY >= DY) begin
            ry <= 16'(ry + SRY - DY);
            qy <= qy + SQY + 1;
          end else begin
            ry <= 16'(ry + SRY);
            qy <= qy + SQY;
          end
        end
        if (oy == SIZE - 1) begin
          oy <= '0;
          qy <= pos_t'(Q0Y);
          ry <= 16'(R0Y);
          rframe <= rframe + 1;
        end else oy <= oy + 1;
      end else ox <= ox + 1;
    end
  end

  // horizontal taps of one line: a = column x0, b = column x0 + 1 (x0 odd: a in the odd memory)
  // Operands at their true widths (the differences are signed, one bit wider than the values) so that each
  // product is one 9 x 18 multiplier: one DSP48E1, or a small LUT multiplier with -nodsp.
  function automatic logic [15:0] lerp_x(logic [23:0] even, logic [23:0] odd, logic par, logic [F-1:0] w, int c);
    logic [23:0] pa, pb;
    logic signed [8:0] d;  // b - a
    logic signed [17:0] p, v;
    pa = par ? odd : even;
    pb = par ? even : odd;
    d = $signed({1'b0, pb[c*8+:8]}) - $signed({1'b0, pa[c*8+:8]});
    p = $signed({1'b0, w}) * d;
    v = $signed({2'b0, pa[c*8+:8], 8'b0}) + p;  // 0 .. 255 << 8
    return v[15:0];
  endfunction

  function automatic logic [7:0] lerp_y(logic [15:0] u, logic [15:0] l, logic [F-1:0] w);
    logic signed [17:0] d;  // l - u
    logic signed [26:0] p, v;
    d = $signed({2'b0, l}) - $signed({2'b0, u});
    p = $signed({1'b0, w}) * d;
    v = $signed({3'b0, u, 8'b0}) + p + 27'sd32768;  // 0 .. (255 << 16) + 2^15
    return v[23:16];
  endfunction

  always_ff @(posedge ap_clk) begin
    if (!ap_rst_n) begin
      v1 <= 1'b0;
      v2 <= 1'b0;
      v3 <= 1'b0;
    end else if (advance) begin
      // stage 1: the four taps are being read
      v1 <= issue;
      pad1 <= !(row_in && col_in);
      par1 <= x0[0];
      wx1 <= px_c[F-1:0];
      wy1 <= py_c[F-1:0];
      s0_1 <= slot0;
      s1_1 <= slot1;
      // stage 2: along x on both lines
      v2 <= v1;
      pad2 <= pad1;
      wy2 <= wy1;
      for (int c = 0; c < 3; c++) begin
        h0[c] <= lerp_x(rdata[s0_1][0], rdata[s0_1][1], par1, wx1, c);
        h1[c] <= lerp_x(rdata[s1_1][0], rdata[s1_1][1], par1, wx1, c);
      end
      // stage 3: along y, rounded; the padding
      v3 <= v2;
      for (int c = 0; c < 3; c++) out_px[c*8+:8] <= pad2 ? 8'(PAD) : lerp_y(h0[c], h1[c], wy2);
    end
  end

  assign out0_V_TVALID = v3;
  assign out0_V_TDATA = out_px;
endmodule
