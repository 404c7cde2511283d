// Large read-mostly buffers (the exact index's rows, the bandwidth probe's buffer) on 2 MiB
// pages where the kernel allows it. Transparent huge pages are often in `madvise` mode: a
// plain allocation then sits on 4 KiB pages and a scan of a 256 MB index walks the page
// tables every 4 KiB. Aligning to 2 MiB and asking with madvise(MADV_HUGEPAGE) before the
// first touch lets those pages fault in as huge pages. Where that is unavailable the buffer
// is an ordinary one, so correctness never depends on it.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace recserve {

constexpr size_t kHugePage = size_t(2) << 20;

// Rows an index's storage makes room for when it must hold `rows`: a quarter more, so that
// the next writes land without growing it (only address space until rows land there: large
// buffers are fresh mappings). Both indexes size their rows, ids and per-row state by it.
inline size_t WithHeadroom(size_t rows) { return rows + rows / 4 + 1024; }

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

// A buffer that can take a smaller one's contents without copying them: an anonymous
// mapping of its own, 2 MiB aligned with the huge-page hint, whose TakePages moves another
// region's pages into it with mremap. Moving changes only page tables (at 1M x 64 float32
// rows, 128 huge-page entries), where copying the rows into a larger allocation took 1 s
// on this host, most of it faulting in the fresh pages. Linux only: elsewhere Map fails and
// the caller allocates and copies as before.
class MappedRegion {
 public:
  MappedRegion() = default;
  ~MappedRegion() { Unmap(); }
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;
  MappedRegion(MappedRegion&& o) noexcept { *this = std::move(o); }
  MappedRegion& operator=(MappedRegion&& o) noexcept {
    if (this != &o) {
      Unmap();
      p_ = std::exchange(o.p_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }

  uint8_t* data() const { return p_; }
  size_t size() const { return bytes_; }

  // Maps at least `bytes` (rounded up to 2 MiB), zero-filled as pages fault in. False, with
  // nothing mapped, where mmap is unavailable or refuses.
  bool Map(size_t bytes) {
    Unmap();
#if defined(__linux__)
    bytes = (std::max<size_t>(bytes, 1) + kHugePage - 1) / kHugePage * kHugePage;
    // Over-map by a huge page and trim both ends to align: one mapping, one VMA, which is
    // what mremap needs of a source.
    void* raw = mmap(nullptr, bytes + kHugePage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return false;
    const auto a = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t start = (a + kHugePage - 1) / kHugePage * kHugePage;
    if (start > a) munmap(raw, start - a);
    if (start - a < kHugePage)
      munmap(reinterpret_cast<void*>(start + bytes), kHugePage - (start - a));
    p_ = reinterpret_cast<uint8_t*>(start);
    bytes_ = bytes;
#if defined(MADV_HUGEPAGE)
    madvise(p_, bytes_, MADV_HUGEPAGE);  // a hint: failure leaves 4 KiB pages
#endif
    return true;
#else
    (void)bytes;
    return false;
#endif
  }

  // Moves `from`'s pages to the start of this region, which must be at least as large, in
  // place of what was there; `from` is left empty. Anything reading `from` must be kept out
  // meanwhile: its address stops being mapped. False, with both regions as they were, where
  // the kernel refuses (the caller then copies).
  bool TakePages(MappedRegion* from) {
#if defined(__linux__) && defined(MREMAP_FIXED)
    if (!p_ || !from->p_ || from->bytes_ > bytes_) return false;
    // The new size is this whole region's: the moved mapping grows over all of it (fresh
    // pages past the old end), so the result is again one mapping.
    void* r = mremap(from->p_, from->bytes_, bytes_, MREMAP_MAYMOVE | MREMAP_FIXED, p_);
    if (r == MAP_FAILED) return false;
    from->p_ = nullptr;
    from->bytes_ = 0;
#if defined(MADV_HUGEPAGE)
    madvise(p_, bytes_, MADV_HUGEPAGE);
#endif
    return true;
#else
    (void)from;
    return false;
#endif
  }

  // Whether TakePages works here, tried once on two small regions of its own: where a
  // sandbox or an old kernel refuses mremap's MREMAP_FIXED, a caller copies before its lock
  // rather than finding out under it.
  static bool CanTakePages() {
    static const bool can = [] {
      MappedRegion from, to;
      if (!from.Map(kHugePage) || !to.Map(2 * kHugePage)) return false;
      from.data()[0] = 1;
      return to.TakePages(&from) && to.data()[0] == 1;
    }();
    return can;
  }

  // Faults in [offset, offset + len) for writing now (Linux 5.14 and later; a no-op
  // elsewhere), so that a writer about to store rows there under a lock does not take the
  // page faults (a fresh huge page is zeroed, and may be compacted for) while holding it.
  // Pages already present keep their contents.
  void Prefault(size_t offset, size_t len) const {
#if defined(__linux__)
    if (!p_ || len == 0 || offset >= bytes_) return;
    constexpr size_t kPage = 4096;
    const size_t a = offset / kPage * kPage;
    const size_t b = std::min(bytes_, (offset + len + kPage - 1) / kPage * kPage);
    constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE, absent from older headers
    madvise(p_ + a, b - a, kPopulateWrite);  // failure: the faults come with the writes
#else
    (void)offset;
    (void)len;
#endif
  }

 private:
  void Unmap() {
#if defined(__linux__)
    if (p_) munmap(p_, bytes_);
#endif
    p_ = nullptr;
    bytes_ = 0;
  }

  uint8_t* p_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace recserve
