// External id -> row maps of both indexes, and the row sets their allow lists become.
//
// A filtered search converts its whole allow list on every call. Through a hash map that
// cost more than the search itself: 100k allowed ids took ~1 ms before an HNSW walk of
// ~0.1 ms, and an exact search over 1M float16 rows with a 10% allow list took 5.2 ms
// against 3.2 ms for the full scan (bench/README.md, "Allow lists"). So the
// map is a table indexed by id while the ids are compact (at most about four slots per
// item; the server's ids are row numbers), which also holds 1M ids in 4 MB rather than the
// ~40 MB of a hash map, and a hash map once an id far past that arrives. An allow list
// becomes a bitmap over the rows, which dedupes it and yields the rows in storage order
// without a sort.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace recserve {

class IdRows {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;

  // The row of `id`, or kNone.
  uint32_t Find(uint32_t id) const {
    if (compact_) return id < table_.size() ? table_[id] : kNone;
    auto it = map_.find(id);
    return it == map_.end() ? kNone : it->second;
  }
  bool Contains(uint32_t id) const { return Find(id) != kNone; }

  // The map is about to hold `total` ids, none above `max_id`: sizes the table for them at
  // once when they are compact, so the order they arrive in does not matter (a shuffled
  // 0..n-1 would otherwise meet the hash map at its first large id).
  void Expect(uint32_t max_id, size_t total) {
    if (compact_ && static_cast<size_t>(max_id) < 4 * total + 1024 && max_id >= table_.size())
      table_.resize(static_cast<size_t>(max_id) + 1, kNone);
  }

  // Maps `id` to `row`, whether or not it was present.
  void Set(uint32_t id, uint32_t row) {
    if (compact_ && id >= table_.size() && !Grow(id)) ToMap();
    if (compact_) {
      count_ += table_[id] == kNone;
      table_[id] = row;
    } else {
      count_ += map_.insert_or_assign(id, row).second;
    }
  }
  // Ids mapped.
  size_t Count() const { return count_; }

  // Whether mapping new ids up to `max_id`, making `total` ids in all, turns the table into
  // a hash map (exactly when it will: Expect cannot size the table for it, and neither can
  // Grow when max_id comes).
  bool TurnsSparse(uint32_t max_id, size_t total) const {
    return compact_ && static_cast<size_t>(max_id) >= table_.size() &&
           static_cast<size_t>(max_id) >= 4 * total + 1024;
  }
  // Whether mapping new ids up to `max_id` (after Expect(max_id, total)), making `total` ids
  // in all, reallocates: the table grows past its capacity, the hash map rehashes, or the
  // table becomes a hash map. Each copies every entry, under whatever lock the caller holds
  // (at 1M ids: 2 ms for the table, which an upsert of one new id paid every time; 70-95 ms
  // for the conversion). An index asks before its lock, builds the result on a copy
  // (WithRoom), and swaps it in under the lock.
  bool Reallocates(uint32_t max_id, size_t total) const {
    if (TurnsSparse(max_id, total)) return true;
    if (compact_) return static_cast<size_t>(max_id) >= table_.capacity();
    return static_cast<double>(total) > map_.max_load_factor() * map_.bucket_count();
  }
  // A copy with room for `total` ids up to `max_id`, and half as many again: a run of small
  // writes reallocates once in a while, not at every write.
  IdRows WithRoom(uint32_t max_id, size_t total) const {
    IdRows m;
    m.count_ = count_;
    if (TurnsSparse(max_id, total)) {
      m.compact_ = false;
      m.map_.reserve(std::max(total, count_ + count_ / 2));
      for (size_t i = 0; i < table_.size(); i++)
        if (table_[i] != kNone) m.map_.emplace(static_cast<uint32_t>(i), table_[i]);
    } else if (compact_) {
      const size_t need = std::max(table_.size(), static_cast<size_t>(max_id) + 1);
      m.table_.reserve(std::max(need, table_.size() + table_.size() / 2));
      m.table_.assign(table_.begin(), table_.end());
    } else {
      m.compact_ = false;
      m.map_ = map_;
      m.map_.reserve(std::max(total, count_ + count_ / 2));
    }
    return m;
  }

  // Maps ids[i] to first_row + i, for an index whose rows only ever grow (HNSW). The ids
  // must be absent.
  void Append(const uint32_t* ids, size_t n, size_t first_row) {
    if (n == 0) return;
    Expect(*std::max_element(ids, ids + n), count_ + n);
    for (size_t i = 0; i < n; i++) Set(ids[i], static_cast<uint32_t>(first_row + i));
  }
  void Erase(uint32_t id) {
    if (compact_) {
      if (id < table_.size() && table_[id] != kNone) table_[id] = kNone, count_--;
    } else {
      count_ -= map_.erase(id);
    }
  }

 private:
  // Widens the table to hold `id` when that keeps it compact; false otherwise.
  bool Grow(uint32_t id) {
    if (static_cast<size_t>(id) >= 4 * (count_ + 1) + 1024) return false;
    table_.resize(std::max<size_t>(static_cast<size_t>(id) + 1, table_.size() * 3 / 2), kNone);
    return true;
  }
  void ToMap() {
    map_.reserve(count_);
    for (size_t i = 0; i < table_.size(); i++)
      if (table_[i] != kNone) map_.emplace(static_cast<uint32_t>(i), table_[i]);
    table_ = std::vector<uint32_t>();
    compact_ = false;
  }

  std::vector<uint32_t> table_;  // id -> row while compact_
  std::unordered_map<uint32_t, uint32_t> map_;
  bool compact_ = true;
  size_t count_ = 0;
};

// A bit per row, and how many are set: an allow list's rows (RowSet) or the HNSW index's
// removed rows.
class RowBits {
 public:
  explicit RowBits(size_t rows = 0) : words_((rows + 63) / 64, 0) {}
  // Room for `rows` rows; new rows are clear.
  void Resize(size_t rows) { words_.resize((rows + 63) / 64, 0); }
  bool Has(size_t row) const { return (words_[row >> 6] >> (row & 63)) & 1; }
  void Set(size_t row) {
    uint64_t& word = words_[row >> 6];
    const uint64_t bit = uint64_t{1} << (row & 63);
    count_ += (word & bit) == 0;
    word |= bit;
  }
  size_t Count() const { return count_; }
  // The set rows in order.
  std::vector<uint32_t> Rows() const {
    std::vector<uint32_t> out;
    out.reserve(count_);
    for (size_t w = 0; w < words_.size(); w++)
      for (uint64_t b = words_[w]; b != 0; b &= b - 1)
        out.push_back(static_cast<uint32_t>(w * 64 + static_cast<size_t>(__builtin_ctzll(b))));
    return out;
  }

 private:
  std::vector<uint64_t> words_;
  size_t count_ = 0;
};

// The rows an allow list admits, out of `rows` rows: ids the index does not hold admit
// nothing, and an id listed twice counts once.
class RowSet {
 public:
  RowSet(const IdRows& map, const uint32_t* ids, size_t n, size_t rows) : bits_(rows) {
    for (size_t i = 0; i < n; i++) {
      const uint32_t r = map.Find(ids[i]);
      if (r != IdRows::kNone) bits_.Set(r);
    }
  }
  bool Has(size_t row) const { return bits_.Has(row); }
  size_t Count() const { return bits_.Count(); }
  // The admitted rows in storage order.
  std::vector<uint32_t> Rows() const { return bits_.Rows(); }

 private:
  RowBits bits_;
};

}  // namespace recserve
