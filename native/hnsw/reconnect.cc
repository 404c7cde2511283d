// Reconnect (see reconnect.h): the whole-graph plan, and the incremental one after a
// small add.
#include "hnsw/reconnect.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/HNSW.h>

#include <algorithm>
#include <limits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace recserve {
namespace {

// The links in v's layer-0 list (lists fill from the front; -1 follows the last link).
size_t ListFill(const faiss::HNSW& g, size_t v, size_t l0) {
  const int* lv = g.neighbors.data() + g.offsets[v];
  size_t f = 0;
  while (f < l0 && lv[f] >= 0) f++;
  return f;
}

// The layer-0 links of n nodes reversed, as CSR: in[in_at[v] .. in_at[v + 1]) are the
// nodes whose lists hold v. fill(v) is v's link count and at(v, i) its i-th link.
template <class Fill, class At>
void ReverseLinks(size_t n, Fill fill, At at, std::vector<size_t>* in_at, std::vector<int>* in) {
  in_at->assign(n + 1, 0);
  for (size_t v = 0; v < n; v++)
    for (size_t i = 0; i < fill(v); i++) (*in_at)[static_cast<size_t>(at(v, i)) + 1]++;
  for (size_t v = 0; v < n; v++) (*in_at)[v + 1] += (*in_at)[v];
  in->resize((*in_at)[n]);
  std::vector<size_t> next(in_at->begin(), in_at->end() - 1);
  for (size_t v = 0; v < n; v++)
    for (size_t i = 0; i < fill(v); i++) (*in)[next[static_cast<size_t>(at(v, i))]++] = int(v);
}

}  // namespace

// Links every layer-0 node no search can reach from a reachable node near it.
//
// FAISS builds the inner-product graph with the neighbour heuristic of a metric space: a
// node keeps few links, most of them to high-norm hubs whose lists are full, and nothing
// links back to the low-norm nodes. On bench:retrieval's 100k x 64 clustered set a node
// kept 4.4 of its 64 layer-0 slots on average and 37% of the nodes were nobody's
// neighbour, so no walk could return them: recall@10 stopped at 0.965 however wide the
// beam, and a filter that left them the best admissible items cut a walk's recall to
// ~0.7. On the 1M-item reference bundle (M 16) 97% were unreachable.
//
// Each unreachable node gets one link from a reachable node (see the two passes below),
// and what it links to becomes reachable with it. No node takes more than kExtraLinks
// links beyond the ones FAISS gave it: every extra link is one more score for each walk
// that expands the node, and on the reference bundle, whose true neighbours are nearly
// all high-norm reachable items, unbounded extras made walks 1.3-2x slower for no
// recall. With 3: 100k clustered, recall@10 0.957 -> 0.970 at efSearch 32 and 0.965 ->
// 0.991 at 256 for 1.03-1.18x the time; the reference bundle, the same recall for
// ~1.15x (bench/README.md, "The HNSW graph reconnected"). Hubs keep their lists; the file
// stays a standard FAISS index.
//
// It only reads the graph, and returns the links to write (ApplyLinks): on the graph
// searched, it runs with no search waiting (the writer lock keeps the graph as it read
// it), and only the writes take the lock.
constexpr size_t kExtraLinks = 3;
std::vector<NewLink> PlanReconnect(const faiss::IndexHNSWFlat& index, const Kernels& kernels,
                                   ReachTrees* trees) {
  const faiss::HNSW& g = index.hnsw;
  const size_t n = static_cast<size_t>(index.ntotal);
  std::vector<NewLink> plan;
  if (trees) *trees = ReachTrees{};
  if (n == 0 || g.entry_point < 0) return plan;
  const float* xb = static_cast<const faiss::IndexFlat*>(index.storage)->get_xb();
  const size_t d = static_cast<size_t>(index.d);
  const size_t l0 = static_cast<size_t>(g.cum_nneighbor_per_level[1]);
  // v's layer-0 list as FAISS left it (base[v] links), then the links planned here.
  const int* nb = g.neighbors.data();
  std::vector<uint32_t> base(n, 0), fill(n, 0), room(n, 0);
  for (size_t v = 0; v < n; v++) {
    base[v] = static_cast<uint32_t>(ListFill(g, v, l0));
    fill[v] = base[v];
    room[v] = static_cast<uint32_t>(std::min(l0, base[v] + kExtraLinks));
  }
  std::vector<int> extra(n * kExtraLinks, -1);
  // The rare links past a list's kExtraLinks, and links planned over one of FAISS's
  // (second pass, last resort), by v * l0 + slot; patched[v] says v has some.
  std::unordered_map<size_t, int> spill;
  std::vector<char> patched(n, 0);
  const auto at = [&](size_t v, size_t i) -> int {
    if (patched[v]) {
      const auto it = spill.find(v * l0 + i);
      if (it != spill.end()) return it->second;
    }
    return i < base[v] ? nb[g.offsets[v] + i] : extra[v * kExtraLinks + i - base[v]];
  };
  const auto put = [&](size_t from, size_t slot, int to) {
    if (slot >= base[from] && slot - base[from] < kExtraLinks) {
      extra[from * kExtraLinks + slot - base[from]] = to;
    } else {
      spill[from * l0 + slot] = to;
      patched[from] = 1;
    }
    plan.push_back({static_cast<int>(from), static_cast<uint32_t>(slot), to});
  };
  const auto append = [&](size_t from, int to) { put(from, fill[from]++, to); };
  // Who links to whom on layer 0, reversed (CSR): the nodes that chose v as a neighbour.
  std::vector<size_t> in_at;
  std::vector<int> in;
  const auto reverse_links = [&]() {
    ReverseLinks(n, [&](size_t v) { return fill[v]; }, at, &in_at, &in);
  };
  reverse_links();
  std::vector<char> reached(n, 0);
  std::vector<int> queue;
  // prev: who reached each node (the tree of paths from the entry, kept for
  // PlanIncremental; the second pass's last resort reads it too).
  std::vector<int> prev(n, ReachTrees::kUnknown);
  // Reached nodes that had a free slot when reached (the second pass's last resort pops
  // the ones that filled since: a list never empties).
  std::vector<int> open;
  const auto reach = [&](int v, int from) {
    if (reached[static_cast<size_t>(v)]) return;
    reached[static_cast<size_t>(v)] = 1;
    queue.push_back(v);
    prev[static_cast<size_t>(v)] = from;
    if (fill[static_cast<size_t>(v)] < l0) open.push_back(v);
  };
  const auto link = [&](size_t from, int to) {
    append(from, to);
    reach(to, static_cast<int>(from));
  };
  // First pass: everything a reached node links to is reached; and a reached node with
  // room links back to each unreached node that chose it as a neighbour (it scores high
  // against that node, so a walk near the node passes it).
  const auto drain = [&]() {
    while (!queue.empty()) {
      const size_t v = static_cast<size_t>(queue.back());
      queue.pop_back();
      for (size_t i = 0; i < fill[v]; i++) reach(at(v, i), static_cast<int>(v));
      for (size_t i = in_at[v]; i < in_at[v + 1] && fill[v] < room[v]; i++)
        if (!reached[static_cast<size_t>(in[i])]) link(v, in[i]);
    }
  };
  reach(g.entry_point, ReachTrees::kNone);
  drain();
  // Second pass, for the rest, which chose only full or unreached neighbours (on a graph
  // of hubs, most nodes: all their links go to a few hundred full hubs). Each gets its
  // link from the reached node with room that scores highest against it among its
  // neighbours' neighbours, the last nodes linked here that chose the same first
  // neighbour (so the nodes around one hub form a tree a walk can descend), and the last
  // nodes linked here at all. A bounded search keeps this linear: scanning all reached
  // nodes for each leftover took over 5 minutes on the reference bundle, where 96% were
  // left after the first pass. There it takes ~1.3 s, at 100k ~0.15 s.
  constexpr size_t kRecent = 16;
  std::unordered_map<int, std::vector<int>> by_hub;  // first neighbour -> last linked
  std::vector<int> recent;                           // ring of the last linked
  size_t next_recent = 0;
  constexpr float kNoScore = -std::numeric_limits<float>::infinity();
  for (size_t u = 0; u < n; u++) {
    if (reached[u]) continue;
    const float* xu = xb + u * d;
    // The best reached node within its budget of extra links, the best with any free
    // slot, and the best of all.
    int best = -1, roomy = -1, any = -1;
    float best_s = kNoScore, roomy_s = kNoScore, any_s = kNoScore;
    const auto consider = [&](int v) {
      const auto vi = static_cast<size_t>(v);
      if (!reached[vi]) return;
      const float sv = kernels.dot_f32(xu, xb + vi * d, d);
      if (sv > any_s) any_s = sv, any = v;
      if (fill[vi] < l0 && sv > roomy_s) roomy_s = sv, roomy = v;
      if (fill[vi] < room[vi] && sv > best_s) best_s = sv, best = v;
    };
    for (size_t i = 0; i < fill[u]; i++) {
      const size_t w = static_cast<size_t>(at(u, i));
      consider(static_cast<int>(w));
      for (size_t j = 0; j < fill[w]; j++) consider(at(w, j));
    }
    std::vector<int>* members = fill[u] > 0 ? &by_hub[at(u, 0)] : nullptr;
    if (members)
      for (int v : *members) consider(v);
    for (int v : recent) consider(v);
    const auto entry = static_cast<size_t>(g.entry_point);
    if (best < 0 && fill[entry] < room[entry]) best = g.entry_point;
    // Last resorts, where every reached node near u is full: rows with equal vectors (all
    // of FAISS's links of one group go to another group that scores higher against it)
    // or lists of a few slots (small M) left half a group unreached before. First a free
    // slot past the budget; then, in the best node's full list, the last link to a node
    // reached some other way (prev), which stays reached without it; then any reached node
    // with a free slot (lists of 4 slots, M 2, left 1-2% of the rows unreached).
    if (best < 0) best = roomy;
    if (best < 0 && any >= 0) {
      const auto v = static_cast<size_t>(any);
      for (size_t i = fill[v]; i-- > 0;) {
        const int x = at(v, i);
        if (prev[static_cast<size_t>(x)] == any) continue;
        put(v, i, static_cast<int>(u));
        reach(static_cast<int>(u), any);
        break;
      }
    }
    if (best < 0 && !reached[u]) {
      while (!open.empty() && fill[static_cast<size_t>(open.back())] >= l0) open.pop_back();
      if (!open.empty()) best = open.back();
    }
    if (best >= 0) link(static_cast<size_t>(best), static_cast<int>(u));
    if (!reached[u]) continue;  // nothing reached near it (not seen on any set measured)
    drain();
    if (members) {
      if (members->size() == kRecent) members->erase(members->begin());
      members->push_back(static_cast<int>(u));
    }
    if (recent.size() < kRecent) {
      recent.push_back(static_cast<int>(u));
    } else {
      recent[next_recent++ % kRecent] = static_cast<int>(u);
    }
  }
  // Third pass: every node must also reach the entry. A walk starts on layer 0 wherever
  // the descent through the upper layers left it, not at the entry, and reaches everything
  // from there only if it can get back to the entry. FAISS gives the entry no layer-0
  // in-links when no node chose it as a neighbour (1,800 clustered items at M 16: a walk as
  // wide as the index missed it from every other start; test/retrieval/native/
  // hnsw-concurrency.cc). The reversed links from the entry mark the nodes that reach it;
  // each node left over gets a link to the entry, and with it every node that reaches that
  // one (in a full list, over a link it can spare).
  // Breadth first, so that the paths kept in next (the tree of paths to the entry) are
  // short: PlanIncremental follows them.
  reverse_links();
  std::vector<char> back(n, 0);
  std::vector<int> next(trees ? n : 0, ReachTrees::kUnknown);
  const auto reaches_entry = [&](int s) {
    back[static_cast<size_t>(s)] = 1;
    queue.assign(1, s);
    for (size_t h = 0; h < queue.size(); h++) {
      const auto v = static_cast<size_t>(queue[h]);
      for (size_t i = in_at[v]; i < in_at[v + 1]; i++) {
        const auto w = static_cast<size_t>(in[i]);
        if (back[w]) continue;
        back[w] = 1;
        queue.push_back(in[i]);
        if (trees) next[w] = static_cast<int>(v);
      }
    }
  };
  if (trees) next[static_cast<size_t>(g.entry_point)] = ReachTrees::kNone;
  reaches_entry(g.entry_point);
  for (size_t u = 0; u < n; u++) {
    if (back[u]) continue;
    if (fill[u] < l0) {
      append(u, g.entry_point);  // within the budget, or past it (lists of a few slots)
    } else {
      // A full list: its last link to a node reached some other way (prev) becomes the
      // link to the entry. No path to the entry went through u (u had none), and the node
      // it linked to stays reached from the entry.
      size_t i = fill[u];
      while (i-- > 0 && prev[static_cast<size_t>(at(u, i))] == static_cast<int>(u)) {
      }
      if (i >= fill[u]) continue;  // (wrapped: every link is one u is the tree parent of)
      put(u, i, g.entry_point);
    }
    if (trees) next[u] = g.entry_point;
    reaches_entry(static_cast<int>(u));
  }
  if (trees) {
    // (The planned links overwrite the slots they name, in plan order; a slot is planned
    // once: an extra slot only by append, and a FAISS link only where its target was
    // reached before, never one planned here.)
    trees->ok = std::all_of(reached.begin(), reached.end(), [](char c) { return c != 0; }) &&
                std::all_of(back.begin(), back.end(), [](char c) { return c != 0; });
    trees->prev = std::move(prev);
    trees->next = std::move(next);
    trees->fill.assign(fill.begin(), fill.end());
    trees->entry = g.entry_point;
  }
  return plan;
}

void ApplyLinks(faiss::IndexHNSWFlat* index, const std::vector<NewLink>& links) {
  faiss::HNSW& g = index->hnsw;
  for (const NewLink& l : links)
    g.neighbors[g.offsets[static_cast<size_t>(l.from)] + l.slot] = l.to;
}

bool SnapshotLists(const faiss::IndexHNSWFlat& index, const ReachTrees& trees, size_t rows,
                   size_t max_nodes, ListSnapshot* snap) {
  const faiss::HNSW& g = index.hnsw;
  const size_t n = static_cast<size_t>(index.ntotal);
  const auto l0 = static_cast<size_t>(g.cum_nneighbor_per_level[1]);
  *snap = ListSnapshot{};
  snap->rows = rows;
  snap->n0 = n;
  snap->entry = g.entry_point;
  snap->l0 = l0;
  if (!trees.ok || trees.fill.size() != n || rows == 0 || rows >= l0) return false;
  const int* nb = g.neighbors.data();
  for (size_t v = 0; v < n; v++) {
    if (trees.fill[v] + rows <= l0) continue;  // room for every new row's link
    if (snap->nodes.size() == max_nodes) return false;
    snap->nodes.push_back(static_cast<int>(v));
    const int* lv = nb + g.offsets[v];
    snap->lists.insert(snap->lists.end(), lv, lv + l0);
  }
  return true;
}

// Why it is enough to repair the paths through dropped links. Before the add, every node
// had a path from the entry along prev (each step a link) and one to it along next. The
// add only appended links, except in the lists snapshotted, whose dropped links the diff
// finds. A node's path from the entry breaks only where it crossed a dropped link t -> x
// with prev[x] == t; giving each such x (a "cut" node) a new prev whose own path holds
// restores the path of every node below x. Likewise a path to the entry breaks only at a
// node t whose next[t] was dropped (a "broken" node): a new next for each restores all.
// The new rows start cut and broken. A node's path is checked by following its pointers
// to the entry, or to a node already checked in this call, and fails at a cut (or broken)
// node: so no node is given a pointer into its own subtree, and the trees stay trees.
bool PlanIncremental(const faiss::IndexHNSWFlat& index, const Kernels& kernels,
                     const ListSnapshot& snap, const std::vector<int>& linked,
                     ReachTrees* trees, std::vector<NewLink>* links) {
  const faiss::HNSW& g = index.hnsw;
  const size_t n = static_cast<size_t>(index.ntotal);
  const size_t l0 = snap.l0;
  const int entry = g.entry_point;
  links->clear();
  if (!trees->ok || entry < 0 || entry != snap.entry || entry != trees->entry ||
      trees->prev.size() != snap.n0 || trees->fill.size() != snap.n0 || n < snap.n0)
    return false;
  const float* xb = static_cast<const faiss::IndexFlat*>(index.storage)->get_xb();
  const auto d = static_cast<size_t>(index.d);
  const int* nb = g.neighbors.data();
  std::vector<int>& prev = trees->prev;
  std::vector<int>& next = trees->next;
  prev.resize(n, ReachTrees::kUnknown);
  next.resize(n, ReachTrees::kUnknown);
  trees->checked.resize(n, 0);

  // The layer-0 lists as they will be: FAISS's, then the links planned here.
  std::unordered_map<int, std::vector<int>> extra;
  const auto base_fill = [&](int v) { return ListFill(g, static_cast<size_t>(v), l0); };
  const auto for_each_link = [&](int v, auto&& f) {
    const int* lv = nb + g.offsets[static_cast<size_t>(v)];
    for (size_t i = 0; i < l0 && lv[i] >= 0; i++)
      if (f(lv[i])) return true;
    auto it = extra.find(v);
    if (it != extra.end())
      for (int w : it->second)
        if (f(w)) return true;
    return false;
  };
  const auto fill = [&](int v) {
    auto it = extra.find(v);
    return base_fill(v) + (it == extra.end() ? 0 : it->second.size());
  };
  const auto has = [&](int v, int x) { return for_each_link(v, [&](int w) { return w == x; }); };
  const auto add_link = [&](int from, int to) {
    links->push_back({from, static_cast<uint32_t>(fill(from)), to});
    extra[from].push_back(to);
  };

  // The links the add dropped.
  std::unordered_set<int> cut, broken;
  for (size_t i = 0; i < snap.nodes.size(); i++) {
    const int t = snap.nodes[i];
    const int* old = snap.lists.data() + i * l0;
    const int* now = nb + g.offsets[static_cast<size_t>(t)];
    for (size_t a = 0; a < l0 && old[a] >= 0; a++) {
      const int x = old[a];
      bool kept = false;
      for (size_t b = 0; b < l0 && now[b] >= 0 && !kept; b++) kept = now[b] == x;
      if (kept) continue;
      if (prev[static_cast<size_t>(x)] == t) cut.insert(x);
      if (next[static_cast<size_t>(t)] == x) broken.insert(t);
    }
  }
  for (size_t r = snap.n0; r < n; r++) {
    cut.insert(static_cast<int>(r));
    broken.insert(static_cast<int>(r));
  }

  // Follows v's pointers (prev or next) to the entry; true when the path holds. Marks the
  // nodes on a path that holds, so later checks stop there.
  std::vector<int> touched, path;
  const auto holds = [&](int v, const std::vector<int>& ptr, const std::unordered_set<int>& bad,
                         uint8_t bit) {
    path.clear();
    for (int u = v;; u = ptr[static_cast<size_t>(u)]) {
      if (u == entry) break;
      if (u < 0 || bad.count(u) || path.size() > n) return false;
      if (trees->checked[static_cast<size_t>(u)] & bit) break;
      path.push_back(u);
    }
    for (int u : path) {
      if (!trees->checked[static_cast<size_t>(u)]) touched.push_back(u);
      trees->checked[static_cast<size_t>(u)] |= bit;
    }
    return true;
  };
  const auto from_entry = [&](int v) { return holds(v, prev, cut, 1); };
  const auto to_entry = [&](int v) { return holds(v, next, broken, 2); };
  const auto done = [&](bool ok) {
    for (int u : touched) trees->checked[static_cast<size_t>(u)] = 0;
    return ok;
  };

  // One round over the nodes in `todo`: each still in `bad` takes as its pointer (`ptr`)
  // the first node in its list that `fits`, and leaves `bad`. Keeps in `todo` the ones
  // left; false when the round changed nothing.
  const auto mend_round = [&](std::vector<int>* todo, std::unordered_set<int>* bad,
                              std::vector<int>* ptr, auto&& fits) {
    std::vector<int> left;
    for (int v : *todo) {
      if (!bad->count(v)) continue;  // mended on another's way
      int to = -1;
      for_each_link(v, [&](int y) {
        if (y != v && fits(v, y)) to = y;
        return to >= 0;
      });
      if (to < 0) {
        left.push_back(v);
        continue;
      }
      (*ptr)[static_cast<size_t>(v)] = to;
      bad->erase(v);
    }
    const bool changed = left.size() < todo->size();
    todo->swap(left);
    return changed;
  };

  // Paths from the entry. A cut node takes as prev a neighbour that links back to it
  // (FAISS gave most of a new row's neighbours a link back) and whose own path holds;
  // when no cut node can, the first gets a link from the node with room that scores
  // highest against it among its neighbours and theirs (Reconnect's choice), or the entry.
  std::vector<int> todo(cut.begin(), cut.end());
  std::sort(todo.begin(), todo.end());
  while (!todo.empty()) {
    if (mend_round(&todo, &cut, &prev, [&](int x, int y) { return has(y, x) && from_entry(y); }))
      continue;
    const int x = todo.front();
    const float* xv = xb + static_cast<size_t>(x) * d;
    int best = -1;
    float best_s = -std::numeric_limits<float>::infinity();
    const auto consider = [&](int y) {
      if (y == x || fill(y) >= l0 || !from_entry(y)) return false;
      const float s = kernels.dot_f32(xv, xb + static_cast<size_t>(y) * d, d);
      if (s > best_s) best_s = s, best = y;
      return false;
    };
    for_each_link(x, [&](int y) {
      consider(y);
      for_each_link(y, consider);
      return false;
    });
    if (best < 0 && fill(entry) < l0) best = entry;
    if (best < 0) return done(false);
    add_link(best, x);
    prev[static_cast<size_t>(x)] = best;
    cut.erase(x);
    todo.erase(todo.begin());
  }

  // Paths to the entry. A broken node takes as next a neighbour whose path holds; when
  // none can, the first searches breadth first along the links (up to kSearchBound nodes)
  // for a node whose path holds and takes the way there, or else links to the entry.
  constexpr size_t kSearchBound = 4096;
  todo.assign(broken.begin(), broken.end());
  std::sort(todo.begin(), todo.end());
  while (!todo.empty()) {
    if (mend_round(&todo, &broken, &next, [&](int, int y) { return to_entry(y); })) continue;
    const int u = todo.front();
    std::unordered_map<int, int> parent{{u, ReachTrees::kNone}};
    std::vector<int> queue{u};
    int found = -1;
    for (size_t h = 0; h < queue.size() && found < 0 && parent.size() < kSearchBound; h++) {
      const int v = queue[h];
      for_each_link(v, [&](int y) {
        if (!parent.emplace(y, v).second) return false;
        if (to_entry(y)) {
          found = y;
          return true;
        }
        queue.push_back(y);
        return false;
      });
    }
    if (found >= 0) {
      for (int w = found; parent[w] != ReachTrees::kNone; w = parent[w]) {
        next[static_cast<size_t>(parent[w])] = w;
        broken.erase(parent[w]);
      }
    } else if (u != entry && fill(u) < l0) {
      add_link(u, entry);
      next[static_cast<size_t>(u)] = entry;
      broken.erase(u);
    } else {
      return done(false);
    }
    todo.erase(todo.begin());
  }
  // The lists that changed: those FAISS appended to or shrank, the new rows', and those
  // given links here.
  trees->fill.resize(n, 0);
  const auto refill = [&](int v) {
    trees->fill[static_cast<size_t>(v)] = static_cast<uint16_t>(fill(v));
  };
  for (int v : snap.nodes) refill(v);
  for (int v : linked) refill(v);
  for (size_t r = snap.n0; r < n; r++) refill(static_cast<int>(r));
  for (const NewLink& l : *links) refill(l.from);
  return done(true);
}

ReachCounts CountUnreachable(const faiss::IndexHNSWFlat& index) {
  const faiss::HNSW& g = index.hnsw;
  const size_t n = static_cast<size_t>(index.ntotal);
  ReachCounts c;
  if (n == 0) return c;
  if (g.entry_point < 0) return ReachCounts{n, n};
  const auto l0 = static_cast<size_t>(g.cum_nneighbor_per_level[1]);
  const int* nb = g.neighbors.data();
  const auto bfs = [&](auto&& links_of) {
    std::vector<char> seen(n, 0);
    std::vector<int> queue{g.entry_point};
    seen[static_cast<size_t>(g.entry_point)] = 1;
    for (size_t h = 0; h < queue.size(); h++)
      links_of(static_cast<size_t>(queue[h]), [&](int w) {
        if (!seen[static_cast<size_t>(w)]) seen[static_cast<size_t>(w)] = 1, queue.push_back(w);
      });
    return n - queue.size();
  };
  std::vector<size_t> fills(n);
  for (size_t v = 0; v < n; v++) fills[v] = ListFill(g, v, l0);
  const auto at = [&](size_t v, size_t i) { return nb[g.offsets[v] + i]; };
  c.from_entry_missing = bfs([&](size_t v, auto&& visit) {
    for (size_t i = 0; i < fills[v]; i++) visit(at(v, i));
  });
  // The links reversed, for the paths to the entry.
  std::vector<size_t> in_at;
  std::vector<int> in;
  ReverseLinks(n, [&](size_t v) { return fills[v]; }, at, &in_at, &in);
  c.to_entry_missing = bfs([&](size_t v, auto&& visit) {
    for (size_t i = in_at[v]; i < in_at[v + 1]; i++) visit(in[i]);
  });
  return c;
}

size_t CountTreeFaults(const faiss::IndexHNSWFlat& index, const ReachTrees& trees) {
  if (!trees.ok) return 0;
  const faiss::HNSW& g = index.hnsw;
  const size_t n = static_cast<size_t>(index.ntotal);
  if (trees.prev.size() != n || trees.next.size() != n || trees.fill.size() != n ||
      trees.entry != g.entry_point)
    return n == 0 ? 1 : n;
  const auto l0 = static_cast<size_t>(g.cum_nneighbor_per_level[1]);
  const int* nb = g.neighbors.data();
  const auto has = [&](int v, int x) {
    const int* lv = nb + g.offsets[static_cast<size_t>(v)];
    for (size_t i = 0; i < l0 && lv[i] >= 0; i++)
      if (lv[i] == x) return true;
    return false;
  };
  // 0 unknown, 1 on the way, 2 leads to the entry, 3 does not.
  const auto leads = [&](const std::vector<int>& ptr) {
    std::vector<uint8_t> state(n, 0);
    state[static_cast<size_t>(g.entry_point)] = 2;
    std::vector<int> path;
    size_t bad = 0;
    for (size_t s = 0; s < n; s++) {
      path.clear();
      int u = static_cast<int>(s);
      while (u >= 0 && state[static_cast<size_t>(u)] == 0) {
        state[static_cast<size_t>(u)] = 1;
        path.push_back(u);
        u = ptr[static_cast<size_t>(u)];
      }
      const uint8_t end = u >= 0 && state[static_cast<size_t>(u)] == 2 ? 2 : 3;
      for (int w : path) state[static_cast<size_t>(w)] = end;
      bad += end == 3 ? path.size() : 0;
    }
    return bad;
  };
  size_t faults = leads(trees.prev) + leads(trees.next);
  for (size_t v = 0; v < n; v++) {
    const size_t f = ListFill(g, v, l0);
    const int p = trees.prev[v], x = trees.next[v];
    const bool is_entry = static_cast<int>(v) == g.entry_point;
    if (f != trees.fill[v] || (is_entry ? p != ReachTrees::kNone : p < 0 || !has(p, int(v))) ||
        (is_entry ? x != ReachTrees::kNone : x < 0 || !has(int(v), x)))
      faults++;
  }
  return faults;
}

}  // namespace recserve
