// What bounds the AVX2 int8 screen's tile step (TileI8 in native/exact/kernels_avx2.cc) on
// the host it runs on: loops of ymm instruction mixes in inline assembly (registers only,
// no spills, enough independent chains to cover each instruction's latency), each timed
// over many iterations and given in cycles a loop, with the clock measured first from a
// chain of dependent scalar adds (one a cycle). The mixes:
//   - vpmaddubsw alone, and beside as many vpaddd, vpaddw or memory broadcasts: whether the
//     adds and broadcasts the step needs take slots the multiplies could have used;
//   - the tile's step per 8 vpmaddubsw (4 rows x 2 query panels: 8 vpmaddwd, 8 vpaddd,
//     4 vpbroadcastd, 2 query loads), and the same 8 vpmaddubsw with two of them summed in
//     int16 (vpaddw) before each vpmaddwd, which 6-bit query codes would allow: 4 vpmaddwd,
//     4 vpaddw, 4 vpaddd. The second has 4 fewer instructions and half the vpmaddwd.
// On the AMD EPYC Zen 3 of bench/README.md's eighteenth section (2 vCPUs of a shared host,
// so each figure moved between runs), vpmaddubsw issued two a cycle alone (4.1-4.9 cycles
// for 8), but 8 of them beside 8 vpaddd took 5.2-7.6 cycles, not 4, and the tile step
// 9.4-10.6 where its 16 multiplies alone need 8: there the step is bound by its vector
// instructions together, not by the multiplies, and the int16 pairs took 0.86-0.96 of the
// step's time.
//
//   g++ -O2 -mavx2 bench/native/avx2-step-mix.cc -o /tmp/avx2-step-mix && /tmp/avx2-step-mix
//
// Optional argument: iterations a loop (default 100,000,000). Needs AVX2 (SIGILL otherwise).
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

alignas(64) unsigned char g_mem[256];

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The clock: four dependent adds a loop, one a cycle on any x86-64 core of this decade.
double Ghz(long iters) {
  long x = 0;
  const auto a = std::chrono::steady_clock::now();
  for (long i = 0; i < iters; i++) asm volatile("add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0" : "+r"(x));
  const auto b = std::chrono::steady_clock::now();
  return 4.0 * double(iters) / Seconds(a, b) / 1e9;
}

// ymm14 holds the multiplier (all ones bytes), rdx the memory the broadcasts and loads
// read. Each body names its own registers; ymm14 and ymm15 are never written.
#define MIX_LOOP(BODY)                                                                       \
  [](long iters) {                                                                           \
    asm volatile(                                                                            \
        "vpcmpeqb %%ymm14,%%ymm14,%%ymm14\n vpabsb %%ymm14,%%ymm14\n mov %0,%%rcx\n"        \
        "mov %1,%%rdx\n 1:\n" BODY "dec %%rcx\n jnz 1b\n"                                    \
        :                                                                                    \
        : "r"(iters), "r"(g_mem)                                                            \
        : "rcx", "rdx", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",    \
          "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");    \
  }

#define MB(a) "vpmaddubsw %%ymm14,%%ymm" #a ",%%ymm" #a "\n"
#define MW(a) "vpmaddwd %%ymm14,%%ymm" #a ",%%ymm" #a "\n"
#define AW(a) "vpaddw %%ymm14,%%ymm" #a ",%%ymm" #a "\n"
#define AD(a) "vpaddd %%ymm14,%%ymm" #a ",%%ymm" #a "\n"
#define BC(a, off) "vpbroadcastd " #off "(%%rdx),%%ymm" #a "\n"
#define LD(a, off) "vmovdqa " #off "(%%rdx),%%ymm" #a "\n"
#define MB8 MB(0) MB(1) MB(2) MB(3) MB(4) MB(5) MB(6) MB(7)

struct Mix {
  const char* name;
  void (*run)(long);
};

const Mix kMixes[] = {
    {"8 vpmaddubsw", MIX_LOOP(MB8)},
    {"8 vpmaddubsw + 8 vpaddd",
     MIX_LOOP(MB(0) AD(8) MB(1) AD(9) MB(2) AD(10) MB(3) AD(11) MB(4) AD(12) MB(5) AD(13)
                  MB(6) AD(8) MB(7) AD(9))},
    {"8 vpmaddubsw + 8 vpaddw",
     MIX_LOOP(MB(0) AW(8) MB(1) AW(9) MB(2) AW(10) MB(3) AW(11) MB(4) AW(12) MB(5) AW(13)
                  MB(6) AW(8) MB(7) AW(9))},
    {"8 vpmaddubsw + 8 vpbroadcastd m32",
     MIX_LOOP(MB(0) BC(8, 0) MB(1) BC(9, 4) MB(2) BC(10, 8) MB(3) BC(11, 12) MB(4) BC(12, 16)
                  MB(5) BC(13, 20) MB(6) BC(8, 24) MB(7) BC(9, 28))},
    {"tile step (8 mb, 8 mw, 8 ad, 4 bc, 2 ld)",
     MIX_LOOP(MB(0) MW(0) AD(0) MB(1) MW(1) AD(1) BC(8, 0) MB(2) MW(2) AD(2) MB(3) MW(3)
                  AD(3) BC(9, 4) LD(10, 64) MB(4) MW(4) AD(4) MB(5) MW(5) AD(5) BC(11, 8)
                      MB(6) MW(6) AD(6) MB(7) MW(7) AD(7) BC(12, 12) LD(13, 96))},
    {"int16 pairs (8 mb, 4 aw, 4 mw, 4 ad, 4 bc, 2 ld)",
     MIX_LOOP(MB(0) MB(1) AW(0) MW(0) AD(0) BC(8, 0) MB(2) MB(3) AW(2) MW(2) AD(2) BC(9, 4)
                  LD(10, 64) MB(4) MB(5) AW(4) MW(4) AD(4) BC(11, 8) MB(6) MB(7) AW(6) MW(6)
                      AD(6) BC(12, 12) LD(13, 96))},
};

}  // namespace

int main(int argc, char** argv) {
  const long iters = argc > 1 ? std::atol(argv[1]) : 100'000'000;
  if (iters <= 0) {
    std::fprintf(stderr, "usage: avx2-step-mix [iterations > 0]\n");
    return 2;
  }
  const double ghz = Ghz(iters);
  std::printf("clock %.2f GHz (dependent adds), %ld iterations a loop\n", ghz, iters);
  double cycles[sizeof kMixes / sizeof kMixes[0]];
  for (size_t i = 0; i < sizeof kMixes / sizeof kMixes[0]; i++) {
    const auto a = std::chrono::steady_clock::now();
    kMixes[i].run(iters);
    const auto b = std::chrono::steady_clock::now();
    cycles[i] = Seconds(a, b) * ghz * 1e9 / double(iters);
    std::printf("%-50s %6.2f cycles a loop\n", kMixes[i].name, cycles[i]);
  }
  const size_t n = sizeof kMixes / sizeof kMixes[0];
  std::printf("int16 pairs / tile step: %.3f\n", cycles[n - 1] / cycles[n - 2]);
  return 0;
}
