// The one table of activations. Each row of DENSEKIT_ACTIVATIONS generates the enumerator
// ActivationKind::name, the registry entries (activation_from_name, activation_name, alpha),
// the forms the kernels use (TileActivation, vector math or not) and, in the bindings,
// _core.ACTIVATIONS and _core.ACTIVATION_INFO. Row order is the order of ACTIVATIONS.
//
// Adding an activation: a row here, its scalar formula (scalar::forward and
// scalar::derivative_from_z in vecmath/scalar_activations.hpp), its vector formula if it has
// vector math (vector_forward and derivative in vecmath/vector_math.inc), its float64
// reference (tests/reference.py) and its name in python/densekit/_core.pyi's ActivationName.
#pragma once

#include <string>

namespace densekit {

// Columns:
//   name          the registry name (and the enumerator)
//   alpha         whether it takes alpha, and its default (0 when it takes none)
//   from_output   when the derivative follows from the output y alone (else from z):
//                 always, never, or alpha_positive (only for alpha > 0)
//   tile          the form a matrix-product tile applies on registers (TileActivation), or
//                 none: applied to the stored tile afterwards
//   vector_math   whether it has vector math (vecmath/vector_math.inc, on ISAs that have any);
//                 otherwise scalar::forward applies it
//   elementwise   false for softmax and log_softmax (row operations over the last axis)
#define DENSEKIT_ACTIVATIONS(X)                                                      \
  /*  name        alpha  default from_output     tile        vector_math elementwise */ \
  X(linear,     false, 0.0,  always,         linear,     false,      true)            \
  X(relu,       false, 0.0,  always,         relu,       false,      true)            \
  X(leaky_relu, true,  0.01, alpha_positive, leaky_relu, false,      true)            \
  X(elu,        true,  1.0,  never,          none,       true,       true)            \
  X(sigmoid,    false, 0.0,  always,         none,       true,       true)            \
  X(tanh,       false, 0.0,  always,         none,       true,       true)            \
  X(softplus,   false, 0.0,  never,          none,       true,       true)            \
  X(gelu,       false, 0.0,  never,          none,       true,       true)            \
  X(gelu_tanh,  false, 0.0,  never,          none,       true,       true)            \
  X(softmax,    false, 0.0,  always,         none,       false,      false)           \
  X(silu,       false, 0.0,  never,          none,       true,       true)            \
  X(selu,       false, 0.0,  never,          none,       true,       true)            \
  X(relu6,      false, 0.0,  always,         none,       true,       true)            \
  X(hard_sigmoid, false, 0.0, always,        none,       true,       true)            \
  X(softsign,   false, 0.0,  never,          none,       true,       true)            \
  X(mish,       false, 0.0,  never,          none,       true,       true)            \
  X(log_softmax, false, 0.0, always,         none,       false,      false)           \
  X(exponential, false, 0.0, always,         none,       true,       true)

enum class ActivationKind {
#define DENSEKIT_ENUMERATOR(name, ...) name,
  DENSEKIT_ACTIVATIONS(DENSEKIT_ENUMERATOR)
#undef DENSEKIT_ENUMERATOR
};

// Activations a matrix-product tile applies on registers before storing it (none: the driver
// applies the activation to the tile just stored, the tile applying linear).
enum class TileActivation : int { none = -1, linear = 0, relu = 1, leaky_relu = 2 };

enum class FromOutput { always, never, alpha_positive };

struct ActivationInfo {
  const char* name;
  ActivationKind kind;
  bool has_alpha;
  double default_alpha;
  FromOutput from_output;
  TileActivation tile;
  bool vector_math;
  bool elementwise;
};

inline constexpr ActivationInfo kActivationTable[] = {
#define DENSEKIT_ROW(name, has_alpha, default_alpha, from_output, tile, vector_math,        \
                     elementwise)                                                         \
  {#name,                                                                                    \
   ActivationKind::name,                                                                     \
   has_alpha,                                                                                \
   default_alpha,                                                                            \
   FromOutput::from_output,                                                                  \
   TileActivation::tile,                                                                     \
   vector_math,                                                                              \
   elementwise},
    DENSEKIT_ACTIVATIONS(DENSEKIT_ROW)
#undef DENSEKIT_ROW
};

inline constexpr int kActivationCount =
    static_cast<int>(sizeof(kActivationTable) / sizeof(kActivationTable[0]));

// The row of an activation (rows are in enum order).
constexpr const ActivationInfo& activation_info(ActivationKind kind) {
  return kActivationTable[static_cast<int>(kind)];
}

struct Activation {
  ActivationKind kind = ActivationKind::linear;
  double alpha = 0.0;  // slope of leaky_relu for z <= 0, scale of elu
};

// Name lookup; returns false for an unknown name.
inline bool activation_from_name(const std::string& name, ActivationKind* kind) {
  for (const ActivationInfo& row : kActivationTable) {
    if (name == row.name) {
      *kind = row.kind;
      return true;
    }
  }
  return false;
}

inline const char* activation_name(ActivationKind kind) { return activation_info(kind).name; }
// Whether alpha applies at all, and its default (leaky_relu 0.01 as in torch, elu 1.0).
inline bool activation_has_alpha(ActivationKind kind) { return activation_info(kind).has_alpha; }
inline double activation_default_alpha(ActivationKind kind) {
  return activation_info(kind).default_alpha;
}

// The derivative can be computed from y alone (otherwise z is needed).
inline bool derivative_from_output(const Activation& act) {
  switch (activation_info(act.kind).from_output) {
    case FromOutput::always: return true;
    case FromOutput::alpha_positive: return act.alpha > 0.0;
    case FromOutput::never: break;
  }
  return false;
}

inline bool derivative_is_one(const Activation& act) {
  return act.kind == ActivationKind::linear;
}

inline TileActivation tile_activation(ActivationKind kind) { return activation_info(kind).tile; }
// softmax and log_softmax act on whole rows (the last axis).
inline bool is_row_activation(ActivationKind kind) { return !activation_info(kind).elementwise; }
inline bool has_vector_math(ActivationKind kind) { return activation_info(kind).vector_math; }

}  // namespace densekit
