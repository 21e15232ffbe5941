"""Layers of a Sequential model: Input, Dense, Activation and Dropout, with Keras's arguments.

A layer describes itself (configuration, weight shapes and initializers); the model owns the
storage (every weight is a view into one flat parameter buffer) and turns the layers into
kernel calls (``_plan.py``). Inputs are (n, features) arrays: n samples, features per sample.
"""

from __future__ import annotations

import collections
import copy
import itertools

import numpy as np

from . import _random, _registry, activations, constraints, initializers, regularizers

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


def _feature_shape(shape, name: str) -> tuple[int]:
    """A per-sample shape: (features,) (an int is accepted for it)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name}: expected a shape tuple like (784,), got {shape!r}") from None
    if len(shape) != 1:
        raise ValueError(
            f"{name}: expected a per-sample shape (features,), got {shape!r} (densekit models "
            "take flat (n, features) inputs; reshape images to (n, height * width) first)"
        )
    return (_positive_int(shape[0], name),)


class Layer(_registry.Configurable):
    """Base class of the layers.

    The model builds a layer in two calls: ``build_weights(input_dim)`` declares its weights
    (``weight_specs``) and returns its output width, then ``attach_weights(views)`` hands it
    views into the model's flat parameter buffer, one per declared weight. Subclasses override
    ``build_weights`` and say what they compute.
    """

    def __init__(self, name=None, dtype=None, input_shape=None, input_dim=None, trainable=True):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name: expected a str, got {name!r}")
        self.trainable = trainable
        base = "".join("_" + c.lower() if c.isupper() else c for c in type(self).__name__)
        self.name = name or unique_name(base.lstrip("_"))
        self.dtype = None if dtype is None else np.dtype(dtype).name
        if input_dim is not None:
            input_shape = (input_dim,)
        self._input_shape = (
            None if input_shape is None else _feature_shape(input_shape, "input_shape")
        )
        self.input_dim: int | None = None
        self.output_dim: int | None = None
        self.built = False
        # (attribute, shape, initializer) per weight, in Keras's order; set by build_weights.
        self._weight_specs: list[tuple[str, tuple[int, ...], initializers.Initializer]] = []

    # -- building ----------------------------------------------------------------------
    @property
    def declared_input_shape(self) -> tuple[int] | None:
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

    def count_params(self) -> int:
        return sum(int(np.prod(shape)) for _, shape, _ in self._weight_specs)

    # -- configuration -----------------------------------------------------------------
    def get_config(self) -> dict:
        config = {"name": self.name}
        if self.dtype is not None:
            config["dtype"] = self.dtype
        if self._input_shape is not None:
            config["input_shape"] = list(self._input_shape)
        if not self._trainable:  # only when frozen: other configs stay as they were
            config["trainable"] = False
        return config

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class InputLayer(Layer):
    """The input's per-sample shape; ``Input(shape)`` makes one for ``Sequential([...])``."""

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
    """Declare a model's per-sample input shape: ``Sequential([Input((784,)), Dense(10)])``."""
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

    def build_weights(self, input_dim: int) -> int:
        self.input_dim, self.output_dim = input_dim, self.units
        self._weight_specs = [("kernel", (input_dim, self.units), self.kernel_initializer)]
        if self.use_bias:
            self._weight_specs.append(("bias", (self.units,), self.bias_initializer))
        return self.units

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


_REGISTRY = {cls.__name__: cls for cls in (InputLayer, Dense, Activation, Dropout)}


def serialize(layer: Layer) -> dict:
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config: dict) -> Layer:
    cls = _REGISTRY.get(config.get("class_name")) if isinstance(config, dict) else None
    if cls is None:
        raise ValueError(f"unknown layer {config!r}; expected one of {sorted(_REGISTRY)}")
    return cls.from_config(dict(config.get("config", {})))


def weight_shapes(layer_list, input_dim: int, trainable_only: bool = False) -> list:
    """The shapes (Keras's order) of the weights ``layer_list`` gets on inputs of
    ``input_dim`` features (``trainable_only``: of those training updates), worked out
    without building the layers or allocating anything (the layers are left as they are)."""
    shapes, width = [], input_dim
    for layer in layer_list:
        probe = copy.copy(layer)  # build_weights sets attributes: on the copy only
        width = probe.build_weights(width)
        shapes.extend(
            shape
            for attr, shape, _ in probe.weight_specs
            if not trainable_only or probe.weight_is_trainable(attr)
        )
    return shapes
