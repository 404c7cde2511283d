// The id filters a search takes, in both indexes: ids each query must not return (already
// seen, blocked) and one allow list shared by the batch (a category, a region). Plain data,
// so the engines need no N-API; napi_args.h parses them from a call's arguments.
#pragma once
#include <cstdint>
#include <vector>

namespace recserve {

struct IdFilters {
  std::vector<std::vector<uint32_t>> exclude;  // empty, or one sorted list per query
  std::vector<uint32_t> allow;
  bool has_allow = false;
};

}  // namespace recserve
