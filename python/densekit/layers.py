"""Layers of a Sequential model: Input, Dense, Activation and Dropout, with Keras's arguments.

A layer describes itself (configuration, weight shapes and initializers); the model owns the
storage (every weight is a view into one flat parameter buffer) and turns the layers into
kernel calls (``_plan.py``). Inputs are (n, features) arrays: n samples, features per sample,
or (n, a, b, ...) arrays, whose last axis the layers act on until a ``Flatten``.
"""

from __future__ import annotations

import collections
import copy
import itertools
import math

import numpy as np

from . import (
    _random,
    _registry,
    activations,
    constraints,
    initializers,
    kernels,
    mixed_precision,
    regularizers,
)

_name_counters: dict[str, itertools.count] = collections.defaultdict(itertools.count)


def unique_name(base: str) -> str:
    """``base``, then ``base_1``, ``base_2``, ... on later calls (Keras's automatic names).

    Parameters
    ----------
    base : str
        The name's stem, e.g. ``"dense"``.

    Returns
    -------
    str
        A name not given out before in this process.
    """
    index = next(_name_counters[base])
    return base if index == 0 else f"{base}_{index}"


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return int(value)


def sample_shape(shape, name: str) -> tuple[int, ...]:
    """A per-sample shape: ``(features,)`` or ``(a, b, ...)`` (an int is accepted for
    ``(features,)``), every extent an int >= 1.

    Parameters
    ----------
    shape : int or tuple of int
        The shape.
    name : str
        The argument's name in error messages.

    Returns
    -------
    tuple of int
        The shape.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name}: expected a shape tuple like (784,), got {shape!r}") from None
    if not shape:
        raise ValueError(f"{name}: expected a per-sample shape like (784,), got {shape!r}")
    return tuple(_positive_int(extent, name) for extent in shape)


class Layer(_registry.Configurable):
    """Base class of the layers.

    The model builds a layer in two calls: ``build_for(sample_shape)`` declares its weights
    (``weight_specs``, through ``build_weights`` of the last axis) and returns its per-sample
    output shape, then ``attach_weights(views)`` hands it views into the model's flat
    parameter buffer, one per declared weight. Subclasses override ``build_weights`` and say
    what they compute.

    Every layer but ``Flatten`` computes on the last axis of its input, as Keras's do on
    inputs of more axes (a Dense layer maps each row of the last axis; a normalization layer
    takes that axis as its features): a per-sample input ``(a, b)`` is ``a`` rows of ``b``
    features to it, and its output is ``(a, output_dim)``.
    """

    # layers whose axis argument was given as 1 (the feature axis of flat inputs only) say
    # so here: on inputs of more axes, Keras's axis 1 is not the last one
    _axis_is_one = False

    def __init__(self, name=None, dtype=None, input_shape=None, input_dim=None, trainable=True):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name: expected a str, got {name!r}")
        self.trainable = trainable
        base = "".join("_" + c.lower() if c.isupper() else c for c in type(self).__name__)
        self.name = name or unique_name(base.lstrip("_"))
        # dtype: a NumPy dtype (the model's, float32 or float64) or a policy name
        # (densekit.mixed_precision); None takes the global policy where it is mixed.
        self._policy: mixed_precision.DTypePolicy | None = None
        self.weights_generation = 0  # counted by weights_changed
        if dtype is None:
            policy = mixed_precision.global_policy()
            self._policy = policy if policy.is_mixed else None
            self.dtype = None
        elif mixed_precision.is_policy_name(dtype):
            policy = mixed_precision.DTypePolicy(
                dtype
            )  # a name Keras has but densekit refuses raises
            self._policy = policy if policy.is_mixed else None
            self.dtype = None if policy.is_mixed else policy.variable_dtype
        else:
            self.dtype = np.dtype(dtype).name
        if input_dim is not None:
            input_shape = (input_dim,)
        self._input_shape = (
            None if input_shape is None else sample_shape(input_shape, "input_shape")
        )
        self.input_dim: int | None = None
        self.output_dim: int | None = None
        # the per-sample input and output shapes (after build_for)
        self.input_sample_shape: tuple[int, ...] | None = None
        self.output_sample_shape: tuple[int, ...] | None = None
        self.built = False
        # (attribute, shape, initializer) per weight, in Keras's order; set by build_weights.
        self._weight_specs: list[tuple[str, tuple[int, ...], initializers.Initializer]] = []

    # -- dtype policy --------------------------------------------------------------------
    @property
    def dtype_policy(self) -> mixed_precision.DTypePolicy:
        """The layer's ``DTypePolicy`` (its dtype's when it has no mixed policy)."""
        return self._policy or mixed_precision.DTypePolicy(self.dtype or "float32")

    @property
    def compute_dtype(self) -> str:
        """What the layer's products take: "bfloat16" under "mixed_bfloat16"."""
        return self.dtype_policy.compute_dtype

    @property
    def variable_dtype(self) -> str:
        """The dtype of the layer's weights."""
        return self.dtype_policy.variable_dtype

    def weights_changed(self) -> None:
        """Called after new values were written into this layer's weights by ``set_weights``
        (the layer's or the model's) or a build: counts ``weights_generation``, and a layer
        holding a derived copy of its weights (int8 weights) makes it again."""
        self.weights_generation += 1

    # -- building ----------------------------------------------------------------------
    @property
    def declared_input_shape(self) -> tuple[int, ...] | None:
        """The per-sample input shape given as ``input_shape``/``input_dim``, or None."""
        return self._input_shape

    @property
    def weight_specs(self) -> list[tuple[str, tuple[int, ...], initializers.Initializer]]:
        """``(attribute, shape, initializer)`` per weight, in Keras's order (after
        ``build_weights``)."""
        return list(self._weight_specs)

    def build_weights(self, input_dim: int) -> int:
        """Declare the weights for inputs of ``input_dim`` features.

        Parameters
        ----------
        input_dim : int
            The width of the layer's input.

        Returns
        -------
        int
            The width of its output.
        """
        self.input_dim = self.output_dim = input_dim
        return input_dim

    def build_for(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Declare the weights for per-sample inputs of ``input_shape`` (``build_weights`` of
        its last axis) and return the per-sample output shape: ``input_shape`` with the last
        axis ``output_dim`` wide.

        Parameters
        ----------
        input_shape : tuple of int
            The per-sample shape of the layer's input, e.g. ``(784,)`` or ``(28, 28)``.

        Returns
        -------
        tuple of int
            The per-sample shape of its output.

        Raises
        ------
        ValueError
            When the layer's axis was given as 1 and the input has more than one axis
            (Keras's axis 1 is then not the last one, which densekit's layers compute on).
        """
        input_shape = tuple(input_shape)
        if self._axis_is_one and len(input_shape) > 1:
            raise ValueError(
                f"axis: layer {self.name!r} was given axis=1, which on its per-sample input "
                f"{input_shape} is not the last axis; densekit's layers act on the last "
                "axis (axis=-1)"
            )
        width = self.build_weights(input_shape[-1])
        self.input_sample_shape = input_shape
        self.output_sample_shape = (*input_shape[:-1], width)
        return self.output_sample_shape

    def attach_weights(self, views: list[np.ndarray]) -> None:
        """Take the weights as views into the model's flat parameter buffer.

        Parameters
        ----------
        views : list of numpy.ndarray
            One array per entry of ``weight_specs``, of its shape.
        """
        for (attr, _, _), view in zip(self._weight_specs, views):
            setattr(self, attr, view)
        self.built = True

    # -- weights -----------------------------------------------------------------------
    @property
    def weights(self) -> list[np.ndarray]:
        """The live weight arrays (views into the model's buffer), Keras's order."""
        if not self.built:
            return []
        return [getattr(self, attr) for attr, _, _ in self._weight_specs]

    # -- trainable (Keras's flag) ---------------------------------------------------------
    @property
    def trainable(self) -> bool:
        """Whether training updates this layer's weights (Keras's flag). A frozen layer
        (``trainable = False``) gets no weight gradients (its backward computes only what
        the layers before it need) and the optimizer leaves its weights alone. As in Keras,
        a change takes effect at the model's next ``compile``."""
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"trainable: expected True or False, got {value!r}")
        self._trainable = bool(value)

    def weight_is_trainable(self, attribute: str) -> bool:
        """Whether the weight ``attribute`` (an entry of ``weight_specs``) is trained: every
        weight of a trainable layer (a layer with weights it never trains, such as moving
        statistics, says so here).

        Parameters
        ----------
        attribute : str
            The weight's attribute name, e.g. ``"kernel"``.

        Returns
        -------
        bool
            Whether the optimizer updates it.
        """
        return self._trainable

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        """The weights training updates (all of them, or none for a frozen layer)."""
        return [
            w
            for (attr, _, _), w in zip(self._weight_specs, self.weights)
            if self.weight_is_trainable(attr)
        ]

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        """The weights training leaves alone."""
        return [
            w
            for (attr, _, _), w in zip(self._weight_specs, self.weights)
            if not self.weight_is_trainable(attr)
        ]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights) -> None:
        own = self.weights
        if len(weights) != len(own):
            raise ValueError(
                f"weights: layer {self.name!r} has {len(own)} weights, got {len(weights)}"
            )
        arrays = [np.asarray(w) for w in weights]
        for (attr, shape, _), array in zip(self._weight_specs, arrays):
            if array.shape != shape:
                raise ValueError(
                    f"weights: layer {self.name!r} {attr}: expected shape {shape}, "
                    f"got {array.shape}"
                )
        for target, array in zip(own, arrays):
            np.copyto(target, array, casting="same_kind")
        self.weights_changed()

    def count_params(self) -> int:
        return sum(int(np.prod(shape)) for _, shape, _ in self._weight_specs)

    # -- configuration -----------------------------------------------------------------
    def get_config(self) -> dict:
        config = {"name": self.name}
        if self._policy is not None:
            config["dtype"] = self._policy.name
        elif self.dtype is not None:
            config["dtype"] = self.dtype
        if self._input_shape is not None:
            config["input_shape"] = list(self._input_shape)
        if not self._trainable:  # only when frozen: other configs stay as they were
            config["trainable"] = False
        return config

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class InputLayer(Layer):
    """The input's per-sample shape; ``Input(shape)`` makes one for ``Sequential([...])``:
    ``(features,)``, or more axes, e.g. ``(28, 28)`` for images, which a ``Flatten`` turns
    into ``(784,)`` (the layers before it act on the last axis)."""

    def __init__(self, shape=None, dtype=None, name=None, input_shape=None, trainable=True):
        shape = input_shape if shape is None else shape
        if shape is None:
            raise ValueError("shape: Input needs the per-sample shape, e.g. Input(shape=(784,))")
        super().__init__(name=name, dtype=dtype, input_shape=shape, trainable=trainable)
        self.shape = self._input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config["shape"] = list(config.pop("input_shape"))
        return config


def Input(shape, dtype=None, name=None) -> InputLayer:
    """Declare a model's per-sample input shape: ``Sequential([Input((784,)), Dense(10)])``,
    or ``Sequential([Input((28, 28)), Flatten(), Dense(10)])``."""
    return InputLayer(shape=shape, dtype=dtype, name=name)


class Dense(Layer):
    """``activation(x @ kernel + bias)``; kernel is (input features, units), bias (units,).

    ``kernel_regularizer`` / ``bias_regularizer`` add a penalty on the weights to the loss,
    ``activity_regularizer`` one on the layer's output (divided by the batch size);
    ``kernel_constraint`` / ``bias_constraint`` project the weights after each optimizer step
    (``densekit.regularizers``, ``densekit.constraints``; Keras's arguments)."""

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units")
        self.activation = activations.get(activation)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise TypeError(f"use_bias: expected True or False, got {use_bias!r}")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "bias_regularizer")
        self.activity_regularizer = regularizers.get(activity_regularizer, "activity_regularizer")
        self.kernel_constraint = constraints.get(kernel_constraint, "kernel_constraint")
        self.bias_constraint = constraints.get(bias_constraint, "bias_constraint")
        self.kernel: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    @property
    def quantization_mode(self) -> str | None:
        """ "int8" after ``Sequential.quantize("int8")``, else None."""
        return self.dtype_policy.quantization_mode

    def build_weights(self, input_dim: int) -> int:
        self.input_dim, self.output_dim = input_dim, self.units
        self._weight_specs = [("kernel", (input_dim, self.units), self.kernel_initializer)]
        if self.use_bias:
            self._weight_specs.append(("bias", (self.units,), self.bias_initializer))
        if self.quantization_mode == "int8":
            # the per-column scales; kernel then holds the int8 values times their scale
            self._weight_specs.append(("kernel_scale", (self.units,), initializers.get("ones")))
        self.quantized_kernel = None
        return self.units

    def weight_is_trainable(self, attribute: str) -> bool:
        if self.quantization_mode is not None and attribute in ("kernel", "kernel_scale"):
            return False  # the int8 weights are fixed; training them needs the float model
        return super().weight_is_trainable(attribute)

    def weights_changed(self) -> None:
        """Make the int8 weights again from kernel and kernel_scale (quantized layers):
        kernel / scale rounds back to the int8 value exactly, as kernel holds it times
        its scale in float32."""
        super().weights_changed()
        if self.quantization_mode is None or self.kernel is None:
            return
        scale = self.kernel_scale
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.rint(
                np.divide(self.kernel, scale, where=scale > 0, out=np.zeros_like(self.kernel))
            )
        if not (np.isfinite(q).all() and (np.abs(q) <= 127).all()):
            raise ValueError(
                f"weights: layer {self.name!r} is int8-quantized: kernel / kernel_scale must "
                "round to integers in [-127, 127]"
            )
        self.quantized_kernel = kernels.QuantizedWeights.from_int8(q.astype(np.int8), scale.copy())

    def take_quantization(self, mode: str) -> None:
        """Give this layer the policy of ``mode`` ("int8": "int8_from_float32"); its model
        then rebuilds its weights (``Sequential.quantize`` does both)."""
        if mode != "int8":
            raise ValueError(f"mode: expected 'int8', got {mode!r}")
        self._policy = mixed_precision.DTypePolicy("int8_from_float32")

    def quantized_values(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel, kernel_scale) of this layer quantized to int8 per output column: the
        float32 values that stand for int8 weights (each an integer in [-127, 127] times its
        column's scale) and the scales."""
        quantized = kernels.QuantizedWeights.quantize(np.ascontiguousarray(self.kernel, np.float32))
        kernel = quantized.weights.astype(np.float32) * quantized.scales
        return kernel, quantized.scales.copy()

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            activation=activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            bias_initializer=initializers.serialize(self.bias_initializer),
            kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=regularizers.serialize(self.bias_regularizer),
            activity_regularizer=regularizers.serialize(self.activity_regularizer),
            kernel_constraint=constraints.serialize(self.kernel_constraint),
            bias_constraint=constraints.serialize(self.bias_constraint),
        )
        return config

    def weight_regularizers(self) -> list:
        """``(attribute, regularizer)`` of each weight with an active regularizer."""
        pairs = [("kernel", self.kernel_regularizer)]
        if self.use_bias:
            pairs.append(("bias", self.bias_regularizer))
        return [(attr, r) for attr, r in pairs if r is not None and r.active]

    def weight_constraints(self) -> list:
        """``(attribute, constraint)`` of each weight with a constraint."""
        pairs = [("kernel", self.kernel_constraint)]
        if self.use_bias:
            pairs.append(("bias", self.bias_constraint))
        return [(attr, c) for attr, c in pairs if c is not None]


class Activation(Layer):
    """Applies an activation by name (a Dense layer before it with no activation absorbs it)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def get_config(self) -> dict:
        config = super().get_config()
        config["activation"] = activations.serialize(self.activation)
        return config


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of its inputs during training and scales the rest by
    1 / (1 - rate); the identity in evaluate and predict. Masks come from a generator seeded
    by ``seed`` (or by ``densekit.set_random_seed``), so training is reproducible."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"rate: expected a number in [0, 1), got {rate!r}")
        if noise_shape is not None:
            raise ValueError("noise_shape: not supported (masks are drawn per element)")
        self.rate = float(rate)
        self.seed = _random.check_seed(seed)
        self.rng = _random.generator(self.seed)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


# -- normalization and noise layers (BatchNormalization ... Flatten) -------------------------
def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _feature_axis(layer: Layer, axis, name: str = "axis") -> int:
    """The feature axis: the last, -1 (1 names it for flat (n, features) inputs only;
    ``build_for`` refuses it on inputs of more axes)."""
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if isinstance(axis, bool) or axis not in (-1, 1):
        raise ValueError(f"{name}: expected -1 (the last axis, the features), got {axis!r}")
    layer._axis_is_one = axis == 1
    return -1


def _positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


class _Values(initializers.Initializer):
    """Initial values given as an array (an adapted Normalization's statistics)."""

    def __init__(self, values):
        super().__init__(None)
        self.values = np.asarray(values, np.float64)

    def _draw(self, shape, rng):
        return np.broadcast_to(self.values, shape)

    def get_config(self) -> dict:
        return {"values": self.values.tolist()}


class _StatefulLayer(Layer):
    """A layer some of whose weights are statistics rather than trained parameters (listed
    in ``non_trainable_attributes``): they get no gradient and no optimizer state."""

    non_trainable_attributes: tuple[str, ...] = ()

    def weight_is_trainable(self, attribute: str) -> bool:
        return self.trainable and attribute not in self.non_trainable_attributes


class BatchNormalization(_StatefulLayer):
    """Normalizes each feature over the batch, then scales by ``gamma`` and shifts by ``beta``.

    In training (``fit``, ``train_on_batch``) it uses the batch's mean and biased variance
    and moves the moving statistics towards them after each step: ``moving = moving *
    momentum + batch * (1 - momentum)`` (Keras's rule; the update runs with the optimizer's,
    so other threads see whole steps). In ``evaluate`` and ``predict`` it uses the moving
    statistics. Weights, in Keras's order: ``gamma`` (with ``scale``), ``beta`` (with
    ``center``), then the non-trainable ``moving_mean`` and ``moving_variance``.
    """

    non_trainable_attributes = ("moving_mean", "moving_variance")

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = _feature_axis(self, axis)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)):
            raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.epsilon = _positive_number(epsilon, "epsilon")
        self.center, self.scale = _flag(center, "center"), _flag(scale, "scale")
        self.beta_initializer = initializers.get(beta_initializer, "beta_initializer")
        self.gamma_initializer = initializers.get(gamma_initializer, "gamma_initializer")
        self.moving_mean_initializer = initializers.get(
            moving_mean_initializer, "moving_mean_initializer"
        )
        self.moving_variance_initializer = initializers.get(
            moving_variance_initializer, "moving_variance_initializer"
        )
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def build_weights(self, input_dim: int) -> int:
        self.input_dim = self.output_dim = input_dim
        shape = (input_dim,)
        specs = []
        if self.scale:
            specs.append(("gamma", shape, self.gamma_initializer))
        if self.center:
            specs.append(("beta", shape, self.beta_initializer))
        specs.append(("moving_mean", shape, self.moving_mean_initializer))
        specs.append(("moving_variance", shape, self.moving_variance_initializer))
        self._weight_specs = specs
        return input_dim

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            axis=self.axis,
            momentum=self.momentum,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            beta_initializer=initializers.serialize(self.beta_initializer),
            gamma_initializer=initializers.serialize(self.gamma_initializer),
            moving_mean_initializer=initializers.serialize(self.moving_mean_initializer),
            moving_variance_initializer=initializers.serialize(self.moving_variance_initializer),
        )
        return config


class LayerNormalization(Layer):
    """Normalizes each sample over its features (mean and biased variance, ``epsilon`` added
    to the variance), then scales by ``gamma`` and shifts by ``beta`` (both trainable, in
    that order). The same in training and inference."""

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = _feature_axis(self, axis)
        self.epsilon = _positive_number(epsilon, "epsilon")
        self.center, self.scale = _flag(center, "center"), _flag(scale, "scale")
        self.beta_initializer = initializers.get(beta_initializer, "beta_initializer")
        self.gamma_initializer = initializers.get(gamma_initializer, "gamma_initializer")
        self.gamma = self.beta = None

    def build_weights(self, input_dim: int) -> int:
        self.input_dim = self.output_dim = input_dim
        specs = []
        if self.scale:
            specs.append(("gamma", (input_dim,), self.gamma_initializer))
        if self.center:
            specs.append(("beta", (input_dim,), self.beta_initializer))
        self._weight_specs = specs
        return input_dim

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            axis=self.axis,
            epsilon=self.epsilon,
            center=self.center,
            scale=self.scale,
            beta_initializer=initializers.serialize(self.beta_initializer),
            gamma_initializer=initializers.serialize(self.gamma_initializer),
        )
        return config


class Normalization(_StatefulLayer):
    """Keras's preprocessing layer: ``(x - mean) / max(sqrt(variance), 1e-7)`` per feature
    (``invert=True``: ``mean + x * max(sqrt(variance), 1e-7)``).

    Either give ``mean`` and ``variance`` (constants: the layer then has no weights, as in
    Keras) or call ``adapt(data)``, which computes them from data; they are then the
    non-trainable weights ``mean``, ``variance`` and ``count`` (the samples seen), saved
    with the model. ``adapt`` works before the layer is in a model or after.
    """

    non_trainable_attributes = ("mean", "variance", "count")

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = _feature_axis(self, axis)
        if (mean is None) != (variance is None):
            raise ValueError("mean, variance: give both (constants) or neither (adapt)")
        self.invert = _flag(invert, "invert")
        self.input_mean = self.input_variance = None
        if mean is not None:
            self.input_mean = self._statistic(mean, "mean")
            self.input_variance = self._statistic(variance, "variance")
            if np.any(self.input_variance < 0):
                raise ValueError("variance: expected values >= 0")
        self._adapted: tuple[np.ndarray, np.ndarray, float] | None = None
        self.mean = self.variance = self.count = None

    @staticmethod
    def _statistic(value, name: str) -> np.ndarray:
        try:
            array = np.array(value, np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a number or a 1-D array, got {value!r}") from None
        if array.ndim > 1 or not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: expected a finite number or 1-D array, got {value!r}")
        return array

    def build_weights(self, input_dim: int) -> int:
        self.input_dim = self.output_dim = input_dim
        if self.input_mean is not None:
            for name, value in (("mean", self.input_mean), ("variance", self.input_variance)):
                if value.ndim == 1 and value.shape != (input_dim,):
                    raise ValueError(
                        f"{name}: expected one value per feature ({input_dim}), got "
                        f"{value.shape[0]}"
                    )
            self._weight_specs = []
            return input_dim
        shape = (input_dim,)
        if self._adapted is not None and self._adapted[0].shape != shape:
            raise ValueError(
                f"input_shape: Normalization {self.name!r} was adapted to "
                f"{self._adapted[0].shape[0]} features, its input has {input_dim}"
            )
        if self._adapted is not None:
            mean, variance, count = self._adapted
            inits = [_Values(mean), _Values(variance), _Values(count)]
        else:
            inits = [initializers.Zeros(), initializers.Ones(), initializers.Zeros()]
        self._weight_specs = [
            ("mean", shape, inits[0]),
            ("variance", shape, inits[1]),
            ("count", (), inits[2]),
        ]
        return input_dim

    def statistics(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """The (mean, variance) the layer normalizes with, as ``dtype`` arrays of one value
        per feature (live views of the weights when adapted).

        Parameters
        ----------
        dtype : numpy.dtype
            The model's dtype.

        Returns
        -------
        tuple of numpy.ndarray
            ``(mean, variance)``, each (features,).
        """
        if self.input_mean is None:
            return self.mean, self.variance
        shape = (self.input_dim,)
        return (
            np.ascontiguousarray(np.broadcast_to(self.input_mean, shape), dtype),
            np.ascontiguousarray(np.broadcast_to(self.input_variance, shape), dtype),
        )

    def adapt(self, data, batch_size=None, steps=None) -> None:
        """Set ``mean`` and ``variance`` to those of ``data`` per feature (biased variance).

        Parameters
        ----------
        data : array_like or iterable of array_like
            (samples, features) values, or batches of them (combined exactly as Keras does);
            arrays of more axes, (samples, ..., features), count each row of the last axis
            as a sample, as Keras reduces over every axis but the last.
        batch_size, steps : None
            Accepted for Keras's signature; the data is read whole (an array) or batch by
            batch (an iterable).

        Raises
        ------
        ValueError
            When the layer was given constant statistics, the data is empty, not at least 2-D, or
            has another number of features than the layer.
        """
        if self.input_mean is not None:
            raise ValueError("adapt: this Normalization was given mean and variance")
        if isinstance(data, np.ndarray) or not hasattr(data, "__iter__"):
            batches = [data]
        else:
            batches = data
        total_mean = total_variance = None
        count = 0
        for batch in batches:
            batch = np.asarray(batch, np.float64)
            if batch.ndim < 2 or batch.shape[0] == 0:
                raise ValueError(
                    f"data: expected non-empty (samples, features) arrays, got shape {batch.shape}"
                )
            if batch.ndim > 2:  # as Keras: statistics over every axis but the last
                batch = batch.reshape(-1, batch.shape[-1])
            features = batch.shape[1] if total_mean is None else total_mean.shape[0]
            if batch.shape[1] != features or (self.built and features != self.input_dim):
                raise ValueError(
                    f"data: expected {self.input_dim or features} features, got shape {batch.shape}"
                )
            mean, variance = kernels.feature_moments(np.ascontiguousarray(batch))
            count += batch.shape[0]
            if total_mean is None:
                total_mean, total_variance = mean, variance
                continue
            # Keras's running combination of batch moments
            weight = batch.shape[0] / count
            combined = total_mean * (1 - weight) + mean * weight
            total_variance = (total_variance + (total_mean - combined) ** 2) * (1 - weight) + (
                variance + (mean - combined) ** 2
            ) * weight
            total_mean = combined
        if total_mean is None:
            raise ValueError("data: no batches to adapt to")
        self._adapted = (total_mean, total_variance, float(count))
        if self.built and self._weight_specs:
            np.copyto(self.mean, total_mean, casting="unsafe")
            np.copyto(self.variance, total_variance, casting="unsafe")
            self.count[...] = count

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            axis=self.axis,
            invert=self.invert,
            mean=None if self.input_mean is None else self.input_mean.tolist(),
            variance=None if self.input_variance is None else self.input_variance.tolist(),
        )
        return config


class GaussianNoise(Layer):
    """Adds zero-mean Gaussian noise of standard deviation ``stddev`` during training; the
    identity in evaluate and predict. The noise comes from a generator seeded by ``seed``
    (or by ``densekit.set_random_seed``), so training is reproducible, as with Dropout."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stddev, bool) or not isinstance(stddev, (int, float)) or stddev < 0:
            raise ValueError(f"stddev: expected a number >= 0, got {stddev!r}")
        self.stddev = float(stddev)
        self.seed = _random.check_seed(seed)
        self.rng = _random.generator(self.seed)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(stddev=self.stddev, seed=self.seed)
        return config


class Flatten(Layer):
    """Flattens each sample to one axis, as Keras's ``Flatten``: per-sample inputs
    ``(a, b, ...)`` become ``(a * b * ...,)``, in C order (a view of the data, no copy);
    the identity on flat ``(features,)`` inputs.

    ``data_format="channels_first"`` (Keras's setting for inputs whose first per-sample axis
    holds the channels) moves that axis last before flattening, as Keras does: then the
    flattening is a copy. None and ``"channels_last"`` flatten as the data lies.
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(
                f"data_format: expected 'channels_last', 'channels_first' or None, "
                f"got {data_format!r}"
            )
        self.data_format = data_format

    @property
    def moves_channels(self) -> bool:
        """Whether the flattening moves the first per-sample axis last (channels_first on an
        input of more than one axis; after ``build_for``)."""
        shape = self.input_sample_shape
        return self.data_format == "channels_first" and shape is not None and len(shape) > 1

    def build_for(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        width = math.prod(input_shape)
        self.build_weights(width)
        self.input_sample_shape, self.output_sample_shape = input_shape, (width,)
        return self.output_sample_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


_REGISTRY = {
    cls.__name__: cls
    for cls in (
        InputLayer,
        Dense,
        Activation,
        Dropout,
        BatchNormalization,
        LayerNormalization,
        Normalization,
        GaussianNoise,
        Flatten,
    )
}


# -- activation layers (Keras's ReLU, Softmax, LeakyReLU): each is an Activation whose kernel
# follows from its arguments, so the plan fuses it into a Dense layer before it like any other.


def _non_negative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    if not value >= 0 or not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


class ReLU(Activation):
    """Keras's ``ReLU`` layer, with Keras's full semantics::

        f(x) = min(x, max_value)                 for x > threshold
        f(x) = negative_slope * (x - threshold)  for x < threshold
        f(x) = 0                                 at the threshold

    The forms with a fused activation kernel map onto it, so that a Dense layer before the
    layer absorbs it: the defaults (``relu``), ``max_value=6`` (``relu6``) and
    ``negative_slope > 0`` without a cap or threshold (``leaky_relu``). Every other
    combination runs the ``relu_forward`` / ``relu_backward`` kernels as a layer of its own
    (``activation`` is then None). Its derivative is 1 for ``threshold < x <= max_value``,
    ``negative_slope`` below the threshold and 0 at it (Keras's at every other point).

    Parameters
    ----------
    max_value : float or None
        The cap, >= 0 (None: none).
    negative_slope : float
        The slope below the threshold, >= 0.
    threshold : float
        Inputs up to it give ``negative_slope * (x - threshold)``, >= 0.
    **kwargs
        ``name``, ``dtype``, ``input_shape`` as for every layer.
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        Layer.__init__(self, **kwargs)
        self.max_value = None if max_value is None else _non_negative(max_value, "max_value")
        self.negative_slope = _non_negative(negative_slope, "negative_slope")
        self.threshold = _non_negative(threshold, "threshold")
        self.activation = None
        if self.threshold == 0:
            if self.max_value is None:
                if self.negative_slope > 0:
                    self.activation = activations.Activation("leaky_relu", self.negative_slope)
                else:
                    self.activation = activations.get("relu")
            elif self.max_value == 6 and self.negative_slope == 0:
                self.activation = activations.get("relu6")

    def get_config(self) -> dict:
        config = Layer.get_config(self)
        config.update(
            max_value=self.max_value, negative_slope=self.negative_slope, threshold=self.threshold
        )
        return config


class Softmax(Activation):
    """Keras's ``Softmax`` layer: ``exp(x) / sum(exp(x))`` over the features.

    Parameters
    ----------
    axis : int
        -1, the last axis (1 names it on flat (n, features) inputs).
    **kwargs
        ``name``, ``dtype``, ``input_shape`` as for every layer.
    """

    def __init__(self, axis=-1, **kwargs):
        Layer.__init__(self, **kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (-1, 1):
            raise ValueError(
                f"axis: expected -1 or 1 (the features of (n, features)), got {axis!r}"
            )
        self.axis = int(axis)
        self._axis_is_one = self.axis == 1
        self.activation = activations.get("softmax")

    def get_config(self) -> dict:
        config = Layer.get_config(self)
        config["axis"] = self.axis
        return config


class LeakyReLU(Activation):
    """Keras's ``LeakyReLU`` layer: ``x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Parameters
    ----------
    negative_slope : float
        The slope below 0 (Keras's default 0.3); Keras 2's ``alpha=`` is accepted for it.
    **kwargs
        ``name``, ``dtype``, ``input_shape`` as for every layer.
    """

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:  # Keras 2's name, which Keras 3 still accepts
            negative_slope = kwargs.pop("alpha")
        Layer.__init__(self, **kwargs)
        self.negative_slope = _non_negative(negative_slope, "negative_slope")
        # slope 0 is relu, whose derivative follows from the output (leaky_relu's needs z)
        self.activation = (
            activations.Activation("leaky_relu", self.negative_slope)
            if self.negative_slope > 0
            else activations.get("relu")
        )

    def get_config(self) -> dict:
        config = Layer.get_config(self)
        config["negative_slope"] = self.negative_slope
        return config


_REGISTRY.update({cls.__name__: cls for cls in (ReLU, Softmax, LeakyReLU)})


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict) -> Layer:
    cls = _REGISTRY.get(config.get("class_name")) if isinstance(config, dict) else None
    if cls is None:
        raise ValueError(f"unknown layer {config!r}; expected one of {sorted(_REGISTRY)}")
    return cls.from_config(dict(config.get("config", {})))


def weight_shapes(layer_list, input_shape, trainable_only: bool = False) -> list:
    """The shapes (Keras's order) of the weights ``layer_list`` gets on per-sample inputs of
    ``input_shape`` (an int: that many features; ``trainable_only``: of those training
    updates), worked out without building the layers or allocating anything (the layers are
    left as they are)."""
    shapes, shape = [], sample_shape(input_shape, "input_shape")
    for layer in layer_list:
        probe = copy.copy(layer)  # build_for sets attributes: on the copy only
        shape = probe.build_for(shape)
        shapes.extend(
            weight
            for attr, weight, _ in probe.weight_specs
            if not trainable_only or probe.weight_is_trainable(attr)
        )
    return shapes
