// Large read-mostly buffers (the exact index's rows, the bandwidth probe's buffer) on 2 MiB
// pages where the kernel allows it. Transparent huge pages are often in `madvise` mode: a
// plain allocation then sits on 4 KiB pages and a scan of a 256 MB index walks the page
// tables every 4 KiB. Aligning to 2 MiB and asking with madvise(MADV_HUGEPAGE) before the
// first touch lets those pages fault in as huge pages. Where that is unavailable the buffer
// is an ordinary one, so correctness never depends on it.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace recserve {

constexpr size_t kHugePage = size_t(2) << 20;

// At least `bytes` bytes, 64-byte aligned (2 MiB aligned, with the huge-page hint, from
// 1 MiB up); release with std::free. Throws std::bad_alloc.
inline void* AllocLarge(size_t bytes, bool huge_pages = true) {
  bytes = bytes < 64 ? 64 : (bytes + 63) / 64 * 64;
  if (!huge_pages || bytes < kHugePage / 2) {
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure leaves 4 KiB pages
#endif
  return p;
}

}  // namespace recserve
