// Errors the engines throw for bad input. Engines know nothing of N-API; the binding
// layer maps ArgumentError to a JS TypeError or RangeError carrying the same message,
// and any other std::exception to a plain Error.
#pragma once
#include <stdexcept>
#include <string>

namespace recserve {

class ArgumentError : public std::invalid_argument {
 public:
  enum class Kind { Type, Range };
  ArgumentError(Kind kind, const std::string& msg) : std::invalid_argument(msg), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

[[noreturn]] inline void ThrowRange(const std::string& msg) {
  throw ArgumentError(ArgumentError::Kind::Range, msg);
}
[[noreturn]] inline void ThrowType(const std::string& msg) {
  throw ArgumentError(ArgumentError::Kind::Type, msg);
}

}  // namespace recserve
