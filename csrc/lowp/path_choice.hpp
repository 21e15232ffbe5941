// The environment variable that lowers a low-precision product's path (DENSEKIT_BF16,
// DENSEKIT_INT8), read once: paths are numbered from the lowest (0, "emulated", always there).
#pragma once

#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

namespace densekit::lowp {

struct PathRequest {
  int path = 0;           // the path to use
  bool forced = false;    // the variable was set and honoured
  std::string requested;  // the variable as given ("" when unset)
  std::string note;       // why a request was not honoured ("" when it was)
};

// An environment variable's value in lower case.
inline std::string lowered(const char* value) {
  std::string out;
  for (const char* p = value; *p != '\0'; ++p)
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
  return out;
}

inline PathRequest read_path_request(const char* variable, const std::vector<std::string>& names,
                                     int best) {
  PathRequest r;
  r.path = best;
  const char* env = std::getenv(variable);
  if (env == nullptr || *env == '\0') return r;
  r.requested = env;
  const std::string value = lowered(env);
  int wanted = -1;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == value) wanted = static_cast<int>(i);
  const std::string prefix = std::string(variable) + "='" + r.requested + "' ";
  if (wanted < 0) {
    std::string known;
    for (size_t i = names.size(); i-- > 0;) known += names[i] + (i > 0 ? ", " : "");
    r.note = prefix + "is not one of " + known + "; using " + names[size_t(best)];
  } else if (wanted > best) {
    r.note = prefix + "is not supported by this CPU/build/DENSEKIT_ISA; using " +
             names[size_t(best)];
  } else {
    r.path = wanted;
    r.forced = true;
  }
  return r;
}

}  // namespace densekit::lowp
