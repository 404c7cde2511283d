// Reconnect: links that make every layer-0 node of a FAISS inner-product HNSW graph
// reachable from the entry point, and able to get back to it (why: reconnect.cc).
//
// Two ways to plan them:
// - PlanReconnect, over the whole graph: after a build, a load, a compaction or a large
//   add (0.6-0.9 s on a 1M-item graph).
// - PlanIncremental, after an add of a few rows, from what the add changed: the lists it
//   shrank and the rows it brought. It keeps a path to and from the entry for every node
//   (ReachTrees) and repairs only the paths that went through a link FAISS dropped
//   (about 1 ms a row on the same graph).
//
// Both only read the graph and return the links to write (ApplyLinks), so they can run
// while searches read it; the caller keeps anything else from changing it meanwhile.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "exact/kernels.h"

namespace faiss {
struct IndexHNSWFlat;
}

namespace recserve {

// A layer-0 link to add: `to` goes into slot `slot` of `from`'s list.
struct NewLink {
  int from;
  uint32_t slot;
  int to;
};

// A path from the entry to every layer-0 node, and one from every node back to it, each
// as one pointer a node: a breadth-first tree over the links, kept between adds.
struct ReachTrees {
  static constexpr int kNone = -1;     // the entry's own pointers
  static constexpr int kUnknown = -2;  // not on a tree (a row the trees do not cover yet)
  std::vector<int> prev;  // prev[v]: a node whose list holds v, nearer the entry
  std::vector<int> next;  // next[v]: a node in v's list, nearer the entry
  // fill[v]: the links in v's layer-0 list (lists fill from the front: FAISS appends
  // after the last link, and rewrites a list it shrinks from the front).
  std::vector<uint16_t> fill;
  int entry = -1;
  // Every node was on both trees when they were built, and they and `fill` still follow
  // the graph; PlanIncremental needs it.
  bool ok = false;
  // Scratch for PlanIncremental's checks, by row (bit 0: a path from the entry checked,
  // bit 1: a path to it); cleared after each use.
  std::vector<uint8_t> checked;
};

// Plans the links over the whole graph. With `trees`, also fills them for the graph as
// it will be once the links are written.
std::vector<NewLink> PlanReconnect(const faiss::IndexHNSWFlat& index, const Kernels& kernels,
                                   ReachTrees* trees = nullptr);

// The layer-0 lists that an add of `rows` rows could shrink, copied before it. FAISS
// appends a new row's back-link to a list with room, and drops links only from a full
// list (its neighbour heuristic rewrites it), and each new row adds at most one link to a
// given list; so a list with `rows` free slots or more only gains links.
struct ListSnapshot {
  size_t rows = 0;        // rows the add will bring
  size_t n0 = 0;          // rows before it
  int entry = -1;         // the entry point before it
  size_t l0 = 0;          // slots in a layer-0 list
  std::vector<int> nodes;  // the lists copied, l0 ints each in `lists`
  std::vector<int> lists;
};

// Copies the lists an add of `rows` rows could shrink, found from trees.fill. False when
// the trees are not whole, or that is more than `max_nodes` lists, or every list (rows
// >= the list's size): the add should then be followed by PlanReconnect.
bool SnapshotLists(const faiss::IndexHNSWFlat& index, const ReachTrees& trees, size_t rows,
                   size_t max_nodes, ListSnapshot* snap);

// After the add that `snap` was taken before: plans the links that give every node a path
// from the entry and one back to it again, and updates `trees` to match. `linked` names
// every list the add appended a link to: for each new row, its layer-0 list as it was
// right after FAISS inserted it (FAISS then links back from exactly those nodes), which
// holds only when the rows went in one after another. False when it cannot (the trees
// were not whole, the entry changed, or a node found no path within its search bound):
// the caller then runs PlanReconnect, which rebuilds the trees. On false, `links` and
// `trees` are left unusable.
bool PlanIncremental(const faiss::IndexHNSWFlat& index, const Kernels& kernels,
                     const ListSnapshot& snap, const std::vector<int>& linked,
                     ReachTrees* trees, std::vector<NewLink>* links);

// Nodes with no path from the entry, and nodes with no path to it, over the whole graph
// (a check for tests and diagnostics: two breadth-first passes).
struct ReachCounts {
  size_t from_entry_missing = 0;
  size_t to_entry_missing = 0;
};
ReachCounts CountUnreachable(const faiss::IndexHNSWFlat& index);

// Nodes where `trees` (when ok) do not follow the graph: a prev or next that is not a
// link, a fill that is not the list's, or pointers that do not lead to the entry. 0
// after every Add; a check for tests.
size_t CountTreeFaults(const faiss::IndexHNSWFlat& index, const ReachTrees& trees);

void ApplyLinks(faiss::IndexHNSWFlat* index, const std::vector<NewLink>& links);

}  // namespace recserve
