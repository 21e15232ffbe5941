#include "bindings.hpp"
namespace densekit::bind {
void bind_optim(pybind11::module_&) {}
}
