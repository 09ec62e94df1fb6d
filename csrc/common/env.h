// Test and benchmark overrides read from the environment (docs: README, "Environment variables").
#pragma once

#include <cstdlib>
#include "../compat/qk_compat.h"

namespace qk {

inline const char* env_get(const char* name) {
  QK_GETENV_BEGIN
  const char* v = std::getenv(name);
  QK_GETENV_END
  return v;
}

// The variable as an integer, or fallback when it is unset or empty.
inline int env_int(const char* name, int fallback = 0) {
  const char* v = env_get(name);
  return (v != nullptr && *v != '\0') ? std::atoi(v) : fallback;
}

}  // namespace qk
