// Verilator testbench for any module with one AXI-stream input (in0_V) and one output (out0_V), FINN naming.
// Feeds the beats of IN_FILE (little-endian, in_bytes each), collects out_beats beats into OUT_FILE with the cycle
// of each in OUT_FILE.cycles, with random stalls on both sides when stall_pct > 0 (AXI rules: a valid beat is held
// until taken). Never hangs: `max_idle` cycles without a transfer on either side is reported as a deadlock.
// usage: sim IN_FILE in_beats in_bytes OUT_FILE out_beats out_bytes stall_pct seed max_idle
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "Vdut.h"
#include "verilated.h"

template <typename T>
static void set_word(T& sig, const uint8_t* b, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && i < sizeof(T); i++) v |= uint64_t(b[i]) << (8 * i);
  sig = T(v);
}
template <std::size_t N>
static void set_word(VlWide<N>& sig, const uint8_t* b, size_t n) {
  for (size_t w = 0; w < N; w++) {
    uint32_t v = 0;
    for (size_t k = 0; k < 4 && 4 * w + k < n; k++) v |= uint32_t(b[4 * w + k]) << (8 * k);
    sig[w] = v;
  }
}
template <typename T>
static void get_word(const T& sig, uint8_t* b, size_t n) {
  uint64_t v = sig;
  for (size_t i = 0; i < n; i++) b[i] = i < sizeof(T) ? uint8_t(v >> (8 * i)) : 0;
}
template <std::size_t N>
static void get_word(const VlWide<N>& sig, uint8_t* b, size_t n) {
  for (size_t i = 0; i < n; i++) b[i] = i / 4 < N ? uint8_t(sig[i / 4] >> (8 * (i % 4))) : 0;
}

int main(int argc, char** argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: %s IN in_beats in_bytes OUT out_beats out_bytes stall_pct seed max_idle\n", argv[0]);
    return 2;
  }
  const size_t in_beats = strtoull(argv[2], nullptr, 10), in_bytes = strtoull(argv[3], nullptr, 10);
  const size_t out_beats = strtoull(argv[5], nullptr, 10), out_bytes = strtoull(argv[6], nullptr, 10);
  const int stall_pct = atoi(argv[7]);
  const uint64_t max_idle = strtoull(argv[9], nullptr, 10);
  std::vector<uint8_t> in(in_beats * in_bytes), out(out_beats * out_bytes);
  std::vector<uint64_t> out_cycle(out_beats);
  FILE* f = fopen(argv[1], "rb");
  if (!f || fread(in.data(), 1, in.size(), f) != in.size()) {
    fprintf(stderr, "cannot read %zu bytes from %s\n", in.size(), argv[1]);
    return 2;
  }
  fclose(f);
  std::mt19937_64 rng(strtoull(argv[8], nullptr, 10));
  auto go = [&] { return stall_pct <= 0 || int(rng() % 100) >= stall_pct; };

  VerilatedContext ctx;
  Vdut dut(&ctx);
  dut.ap_clk = 0;
  dut.ap_rst_n = 0;
  dut.in0_V_TVALID = 0;
  dut.out0_V_TREADY = 0;
  for (int i = 0; i < 4; i++) {
    dut.ap_clk = !dut.ap_clk;
    dut.eval();
  }
  dut.ap_rst_n = 1;
  size_t sent = 0, got = 0;
  uint64_t cycle = 0, idle = 0, first_out = 0;
  bool offering = false;
  while (got < out_beats) {
    if (!offering && sent < in_beats && go()) {
      offering = true;
      set_word(dut.in0_V_TDATA, &in[sent * in_bytes], in_bytes);
    }
    dut.in0_V_TVALID = offering;
    dut.out0_V_TREADY = go();
    dut.eval();  // combinational outputs (ready, valid) settle before the edge
    const bool in_fire = dut.in0_V_TVALID && dut.in0_V_TREADY;
    const bool out_fire = dut.out0_V_TVALID && dut.out0_V_TREADY;
    if (out_fire) {
      get_word(dut.out0_V_TDATA, &out[got * out_bytes], out_bytes);
      if (got == 0) first_out = cycle;
      out_cycle[got++] = cycle;
    }
    dut.ap_clk = 1;
    dut.eval();
    dut.ap_clk = 0;
    dut.eval();
    if (in_fire) {
      sent++;
      offering = false;
    }
    idle = (in_fire || out_fire) ? 0 : idle + 1;
    cycle++;
    if (idle >= max_idle) {
      printf("{\"deadlock\": true, \"cycle\": %llu, \"in_sent\": %zu, \"out_received\": %zu, \"in_ready\": %d, "
             "\"out_valid\": %d}\n", (unsigned long long)cycle, sent, got, int(dut.in0_V_TREADY),
             int(dut.out0_V_TVALID));
      return 3;
    }
  }
  dut.final();  // the design's `final` blocks (e.g. FIFO occupancy reports) print before the JSON line
  fflush(stdout);
  f = fopen(argv[4], "wb");
  fwrite(out.data(), 1, out.size(), f);
  fclose(f);
  f = fopen((std::string(argv[4]) + ".cycles").c_str(), "wb");
  fwrite(out_cycle.data(), sizeof(uint64_t), out_cycle.size(), f);
  fclose(f);
  printf("{\"deadlock\": false, \"cycles\": %llu, \"first_out\": %llu, \"in_sent\": %zu, \"out_received\": %zu}\n",
         (unsigned long long)cycle, (unsigned long long)first_out, sent, got);
  return 0;
}
