// Which HNSW graph serves maximum-inner-product search best on a model's own item vectors?
// The index builds FAISS's inner-product graph, whose neighbour choice assumes a metric
// and leaves a graph of high-norm hubs (native/hnsw/reconnect.cc, PlanReconnect). Two graphs
// built in a metric space are the usual alternatives, and this program builds all three
// over the same rows and searches each with the same raw inner-product queries:
// - ip:     IndexHNSWFlat, inner product, over the rows as they are (what the index does);
// - cosine: the same over the rows scaled to unit length, then searched over the raw rows
//           (the graph's links, the rows' own scores: its storage is overwritten with them);
// - l2:     IndexHNSWFlat, L2, over [x, sqrt(P^2 - |x|^2)] with P the largest norm, and
//           queries [q, 0], whose L2 order is the inner-product order (Bachrach et al.,
//           "Speeding up the Xbox recommender system using a Euclidean transformation for
//           inner-product spaces", RecSys 2014).
// Queries are rows of the set itself (the similar-items case); the truth is IndexFlatIP.
// Prints recall@k (default 10) and microseconds per query (one thread, FAISS's own search)
// for efSearch 16 to 1024.
//
//   g++ -O2 -fopenmp bench/native/mips-graphs.cc -o /tmp/mips-graphs -lfaiss -lopenblas
//   /tmp/mips-graphs ROWS.f32 DIM [N rows, default all] [M 16] [efConstruction 40] [k 10]
//
// ROWS.f32 is raw float32 rows, as a model version's item_embeddings.f32.
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using Label = faiss::Index::idx_t;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Share of the true top-k ids (any order) among each query's k results.
double Recall(const std::vector<Label>& truth, const std::vector<Label>& got, size_t nq,
              size_t k) {
  size_t hit = 0;
  for (size_t q = 0; q < nq; q++)
    for (size_t i = 0; i < k; i++)
      hit += std::count(truth.begin() + q * k, truth.begin() + q * k + k, got[q * k + i]) > 0;
  return double(hit) / double(nq * k);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: mips-graphs ROWS.f32 DIM [N] [M] [efConstruction] [k]\n");
    return 2;
  }
  const size_t d = std::strtoul(argv[2], nullptr, 10);
  std::FILE* f = std::fopen(argv[1], "rb");
  if (!f || d == 0) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 2;
  }
  std::fseek(f, 0, SEEK_END);
  const size_t rows_in_file = static_cast<size_t>(std::ftell(f)) / (4 * d);
  std::fseek(f, 0, SEEK_SET);
  const size_t n = argc > 3 ? std::min<size_t>(std::strtoul(argv[3], nullptr, 10), rows_in_file)
                            : rows_in_file;
  const int m = argc > 4 ? std::atoi(argv[4]) : 16;
  const int efc = argc > 5 ? std::atoi(argv[5]) : 40;
  const size_t k = argc > 6 ? std::strtoul(argv[6], nullptr, 10) : 10;
  std::vector<float> x(n * d);
  if (std::fread(x.data(), 4, x.size(), f) != x.size()) {
    std::fprintf(stderr, "short read from %s\n", argv[1]);
    return 2;
  }
  std::fclose(f);

  std::vector<double> norm2(n, 0);
  double p2 = 0;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < d; j++) norm2[i] += double(x[i * d + j]) * x[i * d + j];
    p2 = std::max(p2, norm2[i]);
  }
  std::vector<float> unit(x), lifted(n * (d + 1));
  for (size_t i = 0; i < n; i++) {
    const double s = norm2[i] > 0 ? 1 / std::sqrt(norm2[i]) : 0;
    for (size_t j = 0; j < d; j++) {
      unit[i * d + j] = static_cast<float>(x[i * d + j] * s);
      lifted[i * (d + 1) + j] = x[i * d + j];
    }
    lifted[i * (d + 1) + d] = static_cast<float>(std::sqrt(std::max(0.0, p2 - norm2[i])));
  }

  // Built on every core, as the model builder builds; searched on one.
  omp_set_num_threads(omp_get_num_procs());
  std::printf("%zu x %zu rows from %s, M %d, efConstruction %d\n", n, d, argv[1], m, efc);
  faiss::IndexHNSWFlat ip(static_cast<int>(d), m, faiss::METRIC_INNER_PRODUCT);
  faiss::IndexHNSWFlat cosine(static_cast<int>(d), m, faiss::METRIC_INNER_PRODUCT);
  faiss::IndexHNSWFlat l2(static_cast<int>(d + 1), m, faiss::METRIC_L2);
  struct Graph {
    const char* name;
    faiss::IndexHNSWFlat* index;
    const float* rows;
  } graphs[] = {
      {"ip", &ip, x.data()}, {"cosine", &cosine, unit.data()}, {"l2", &l2, lifted.data()}};
  for (auto& g : graphs) {
    g.index->hnsw.efConstruction = efc;
    const auto t = Clock::now();
    g.index->add(static_cast<Label>(n), g.rows);
    std::printf("  %-6s graph built in %.1f s\n", g.name, Seconds(t));
  }
  // The cosine graph's links, scored with the raw rows.
  std::memcpy(dynamic_cast<faiss::IndexFlat*>(cosine.storage)->get_xb(), x.data(), x.size() * 4);

  const size_t nq = std::min<size_t>(500, n);
  std::mt19937 rng(5);
  std::vector<float> q(nq * d), q_lifted(nq * (d + 1), 0.f);
  for (size_t i = 0; i < nq; i++) {
    const size_t row = rng() % n;
    std::memcpy(&q[i * d], &x[row * d], d * 4);
    std::memcpy(&q_lifted[i * (d + 1)], &x[row * d], d * 4);
  }
  std::vector<float> dist(nq * k);
  std::vector<Label> truth(nq * k), got(nq * k);
  faiss::IndexFlatIP flat(static_cast<int>(d));
  flat.add(static_cast<Label>(n), x.data());
  flat.search(static_cast<Label>(nq), q.data(), static_cast<Label>(k), dist.data(), truth.data());

  omp_set_num_threads(1);
  std::printf("\nefSearch  graph   recall@%-3zu us/query\n", k);
  for (int ef : {16, 32, 64, 128, 256, 1024}) {
    for (auto& g : graphs) {
      g.index->hnsw.efSearch = ef;
      const float* queries = g.index == &l2 ? q_lifted.data() : q.data();
      const auto t = Clock::now();
      g.index->search(static_cast<Label>(nq), queries, static_cast<Label>(k), dist.data(),
                      got.data());
      const double us = Seconds(t) * 1e6 / double(nq);
      std::printf("%8d  %-6s  %9.3f  %8.0f\n", ef, g.name, Recall(truth, got, nq, k), us);
    }
  }
  return 0;
}
