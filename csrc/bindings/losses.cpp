#include "bindings.hpp"
namespace densekit::bind {
void bind_losses(pybind11::module_&) {}
}
