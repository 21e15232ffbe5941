"""``Sequential``: a Keras-style stack of layers trained with densekit's kernels.

All weights live in one flat parameter buffer (each layer's kernel and bias are views into
it). ``Sequential`` is the Keras-facing surface: structure, weights, compile, fit, evaluate,
predict, saving. The training machinery (plans, workspaces, the flat gradient buffer, the
optimizer binding, regularization, metrics) belongs to a ``training.TrainingState`` made once
per compile and build; the fit loop is in ``_fit.py``, model files in ``saving.py``.

Threads: one thread at a time trains a model (fit, or the thread of a ``fit_async`` job);
``predict`` and ``get_weights`` from other threads meanwhile read a snapshot of the weights
taken at a step boundary (``_guard.py``); calls that would change the model or its metrics
from another thread while it trains raise RuntimeError.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from . import _fit, _summary, distributed, jobs, kernels, layers, losses, optimizers, saving
from . import callbacks as callbacks_module
from . import metrics as metrics_module
from ._fit import int_at_least
from ._guard import WeightGuard
from ._plan import RefreshedChain, build_ops, inference_chain
from .layers import InputLayer, Layer, unique_name
from .training import TrainingState, dataset_for, inputs_for


class Sequential:
    """A linear stack of layers: ``Sequential([Input((784,)), Dense(256, "relu"), Dense(10)])``.

    ``dtype`` ("float32" default, or "float64") is the dtype of every weight and buffer;
    inputs are converted to it once per call. Inputs are (n, features) arrays, or (n, a, b,
    ...) arrays for a model whose Input has more axes: its layers act on the last axis (as
    Keras's) until a ``Flatten``, which is a reshape of the data (no copy of C-contiguous
    inputs), and its outputs are (n, outputs): the last layer's output must be flat.
    """

    def __init__(self, layers=None, name=None, dtype=None):
        self.name = name or unique_name("sequential")
        self._dtype = None if dtype is None else _float_dtype(dtype, "dtype")
        self._layers: list[Layer] = []
        self.built = False
        self.input_dim: int | None = None  # the width of a flattened sample
        self.output_dim: int | None = None
        self.input_sample_shape: tuple[int, ...] | None = None  # per sample, e.g. (28, 28)
        self.output_sample_shape: tuple[int, ...] | None = None
        self.optimizer: optimizers.Optimizer | None = None
        self.loss: losses.Loss | None = None
        self.compiled = False
        self.check_finite = False
        self.stop_training = False
        self.history: callbacks_module.History | None = None
        # the MPIStrategy of the last fit under one: files are then written by rank 0 only
        self.distribute_strategy: distributed.MPIStrategy | None = None
        self._metric_identifiers: list = []
        self._weighted_metric_identifiers: list = []
        self._params = np.zeros(0, np.float32)
        self._trainable_params = self._params  # the prefix the optimizer updates
        self._trainable_size = 0
        self._layout: tuple[bool, ...] = ()  # per weight (Keras's order): trainable when laid out
        self._trainable = True
        self._state: TrainingState | None = None
        self._guard = WeightGuard()
        self._predict_chain: kernels.DenseChain | None = None
        for layer in layers or []:
            self.add(layer)

    # -- structure ---------------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        """The layers, without the Input (as in Keras)."""
        return [layer for layer in self._layers if not isinstance(layer, InputLayer)]

    @property
    def dtype(self) -> str:
        if self._dtype is not None:
            return self._dtype
        for layer in self._layers:
            if layer.dtype is not None:
                return _float_dtype(layer.dtype, f"dtype of layer {layer.name!r}")
        return "float32"

    @property
    def _np_dtype(self):
        return np.dtype(self.dtype)

    def add(self, layer: Layer) -> None:
        self._refuse_while_training("add")
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected a densekit.layers.Layer, got {layer!r}")
        if isinstance(layer, InputLayer) and self._layers:
            raise ValueError("layer: an Input can only be the first layer of a Sequential model")
        if any(existing is layer for existing in self._layers):
            raise ValueError(f"layer: {layer.name!r} is already in this model")
        self._layers.append(layer)
        if self.built:
            self._build(self.input_sample_shape)
        elif self._declared_input_shape() is not None and self.layers:
            self.build()  # as Keras: a model that starts with an Input is built at once

    def pop(self) -> Layer:
        self._refuse_while_training("pop")
        if not self.layers:
            raise IndexError("pop: the model has no layers")
        layer = self._layers.pop()
        if self.built and self.layers:
            self._build(self.input_sample_shape)
        elif not self.layers:
            self.built = False
            self._invalidate()
        return layer

    def _declared_input_shape(self) -> tuple[int, ...] | None:
        for layer in self._layers[:1]:
            if layer.declared_input_shape is not None:
                return layer.declared_input_shape
        return None

    def build(self, input_shape=None) -> None:
        """Create the weights for inputs of ``input_shape``: ``(None, features)``, ``(None,
        a, b, ...)`` (the batch axis first, as in Keras), or ``(features,)``. Without an
        argument, the shape of the Input layer (or ``input_shape=``) is used.

        Parameters
        ----------
        input_shape : tuple, int or None
            The inputs' shape; an int or a 1-tuple is the per-sample feature count.

        Raises
        ------
        ValueError
            When the shape is unknown or malformed, or the model's layers do not fit it
            (see ``Sequential``).
        """
        if input_shape is None:
            shape = self._declared_input_shape()
            if shape is None:
                raise ValueError(
                    "input_shape: unknown; pass build(input_shape=(None, features)), start the "
                    "model with Input(shape=(features,)), or call fit/predict"
                )
        else:
            shape = (
                (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
            )
            if len(shape) > 1:  # the batch axis first
                shape = shape[1:]
            if not shape:
                raise ValueError(
                    f"input_shape: expected (None, features), (None, a, b, ...) or "
                    f"(features,), got {input_shape!r}"
                )
            shape = tuple(int_at_least(extent, 1, "input_shape") for extent in shape)
        self._build(shape)

    def ensure_built(self, input_shape) -> None:
        """Build the model for ``input_shape`` unless it is built: what a first ``fit``,
        ``evaluate`` or ``predict`` does to a model without an Input. Threads racing to use a
        new model build it once, whichever comes first, and all use that build.

        Parameters
        ----------
        input_shape : tuple or int
            ``(None, features)``, ``(None, a, b, ...)`` or ``(features,)``.
        """
        if self.built:
            return
        with self._guard.build_lock:
            if not self.built:
                self.build(input_shape)

    def _build(self, sample_shape: tuple[int, ...]) -> None:
        with self._guard.build_lock:  # one build at a time; re-entrant for training_state
            self._build_unlocked(tuple(sample_shape))

    def _build_unlocked(self, sample_shape: tuple[int, ...]) -> None:
        self._refuse_while_training("build")
        declared = self._declared_input_shape()
        if declared is not None and declared != sample_shape:
            raise ValueError(
                f"input_shape: the model declares per-sample inputs {declared}, got {sample_shape}"
            )
        if not self.layers:
            raise ValueError("The model has no layers; add some before building it")
        previous = {id(layer): layer.get_weights() for layer in self.layers if layer.built}
        for layer in self.layers:
            policy = layer.dtype_policy
            if policy.variable_dtype != self.dtype and (
                policy.is_mixed or policy.quantization_mode
            ):
                raise ValueError(
                    f"dtype: layer {layer.name!r} has the policy {policy.name!r}, whose weights "
                    f"are {policy.variable_dtype}, but the model's dtype is {self.dtype}"
                )
        shape = sample_shape
        for layer in self.layers:
            shape = layer.build_for(shape)
        output_sample_shape = shape
        dtype = self._np_dtype
        specs = [
            (shape, init, layer.weight_is_trainable(attr))
            for layer in self.layers
            for attr, shape, init in layer.weight_specs
        ]
        params = kernels.zeros(sum(math.prod(shape) for shape, _, _ in specs), dtype)
        # The trainable weights come first in the buffer, the frozen ones after them, so
        # that the optimizer's one kernel call covers exactly the trainable prefix; the
        # weights are drawn in Keras's order all the same.
        offsets, offset = {}, 0
        for trained in (True, False):
            for i, (shape, _, trainable) in enumerate(specs):
                if trainable == trained:
                    offsets[i] = offset
                    offset += math.prod(shape)
            if trained:
                self._trainable_size = offset
        views, slices = [], []
        for i, (shape, init, _) in enumerate(specs):
            size, offset = math.prod(shape), offsets[i]
            view = params[offset : offset + size].reshape(shape)
            view[...] = init(shape, dtype)
            views.append(view)
            slices.append((offset, size, shape))
        self._layout = tuple(trainable for _, _, trainable in specs)
        trainable_size = self._trainable_size
        self._trainable_params = (
            params if trainable_size == params.size else params[:trainable_size]
        )
        position = 0
        self._weight_slices = slices  # (offset, size, shape) of each weight in the buffer
        self._layer_slices = {}
        for layer in self.layers:
            count = len(layer.weight_specs)
            layer.attach_weights(views[position : position + count])
            self._layer_slices[id(layer)] = slices[position : position + count]
            position += count
            kept = previous.get(id(layer))
            if kept is not None and [w.shape for w in kept] == [w.shape for w in layer.weights]:
                layer.set_weights(kept)
            else:
                layer.weights_changed()
        self._params, self._weight_views = params, views
        self.input_sample_shape, self.output_sample_shape = sample_shape, output_sample_shape
        self.input_dim, self.output_dim = math.prod(sample_shape), math.prod(output_sample_shape)
        guard = self._guard
        self._predict_ops = build_ops(
            self.layers,
            self.input_dim,
            training=False,
            absorbed=None,
            weights_key=lambda: guard.version,
        )
        # predict's kernel call, holding the live weights (views into the buffer made above)
        self._predict_chain = (
            inference_chain(self._predict_ops, version=guard.version) if self._predict_ops else None
        )
        self._invalidate()
        self.built = True  # last: a thread that sees it built (without the lock) sees it all

    def _invalidate(self) -> None:
        """Forget the training state (after a change of layers or of compile settings)."""
        self._state = None

    # -- threads -------------------------------------------------------------------------
    @property
    def training(self) -> bool:
        """Whether a fit (or a fit_async job) is training the model now."""
        return self._guard.training

    def _refuse_while_training(self, what: str) -> None:
        """Changes of structure or settings are refused during training (from any thread);
        a callback may still read, predict and save."""
        if self._guard.training:
            raise RuntimeError(
                f"{what}: model {self.name!r} is training; wait for its fit (or fit_async "
                "job) to end, or stop it first"
            )

    def _refuse_from_other_threads(self, what: str) -> None:
        if self._guard.busy_elsewhere():
            raise RuntimeError(
                f"{what}: model {self.name!r} is training on another thread; call it from a "
                "callback (they run on the training thread) or after the job ends"
            )

    # -- weights -----------------------------------------------------------------------
    @property
    def weights(self) -> list[np.ndarray]:
        """Live views of every weight, Keras's order (kernel then bias, layer by layer)."""
        return list(self._weight_views) if self.built else []

    @property
    def trainable_weights(self) -> list[np.ndarray]:
        """Live views of the weights training updates (those of trainable layers), Keras's
        order."""
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self) -> list[np.ndarray]:
        """Live views of the weights training leaves alone (those of frozen layers)."""
        return [w for layer in self.layers for w in layer.non_trainable_weights]

    @property
    def trainable(self) -> bool:
        """Keras's model-wide flag: setting it sets every layer's ``trainable`` (taking
        effect at the next ``compile``, as in Keras)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"trainable: expected True or False, got {value!r}")
        for layer in self._layers:
            layer.trainable = bool(value)
        self._trainable = bool(value)

    def get_layer(self, name=None, index=None) -> Layer:
        """A layer by ``name`` or by ``index`` into ``layers`` (Keras's rules: give one of the
        two; an unknown name or an index out of range raises ValueError).

        Parameters
        ----------
        name : str or None
            The layer's name.
        index : int or None
            Its position in ``layers`` (the Input not counted); negative counts from the end.

        Returns
        -------
        densekit.layers.Layer
            The layer.
        """
        if index is not None and name is not None:
            raise ValueError(
                f"Provide only a layer name or a layer index, got index={index!r}, name={name!r}"
            )
        own = self.layers
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise TypeError(f"index: expected an int, got {index!r}")
            if not -len(own) <= index < len(own):
                raise ValueError(
                    f"index: asked for layer {index}, but the model has {len(own)} layers"
                )
            return own[index]
        if name is not None:
            for layer in own:
                if layer.name == name:
                    return layer
            raise ValueError(
                f"name: no layer {name!r}; the layers are {[layer.name for layer in own]}"
            )
        raise ValueError("Provide either a layer name or a layer index to get_layer")

    @property
    def input_shape(self) -> tuple:
        """``(None, features)`` or ``(None, a, b, ...)``: the shape of the inputs (the batch
        dimension None).

        Raises
        ------
        AttributeError
            When the input shape is not known yet (no Input, not built), as in Keras.
        """
        shape = self.input_sample_shape if self.built else self._declared_input_shape()
        if shape is None:
            raise AttributeError(f"Sequential model {self.name!r} has no defined input shape yet")
        return (None, *shape)

    @property
    def output_shape(self) -> tuple:
        """``(None, outputs)``: the shape of the outputs (the batch dimension None); ``(None,
        a, ..., outputs)`` for a model whose last layers act on the last axis of samples of
        more axes (it predicts, but a loss needs flat outputs).

        Raises
        ------
        AttributeError
            When the model is not built yet, as in Keras.
        """
        if not self.built:
            raise AttributeError(f"Sequential model {self.name!r} has no defined output shape yet")
        return (None, *self.output_sample_shape)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the weights; from another thread while the model trains, those after
        some whole step (a snapshot)."""
        if not self.built:
            return []
        params, counted = self._guard.begin_read(self._params)
        try:
            return [
                params[offset : offset + size].reshape(shape).copy()
                for offset, size, shape in self._weight_slices
            ]
        finally:
            self._guard.end_read(counted)

    def set_weights(self, weights) -> None:
        self._refuse_from_other_threads("set_weights")
        own = self.weights
        weights = list(weights)
        if len(weights) != len(own):
            raise ValueError(f"weights: the model has {len(own)} weight arrays, got {len(weights)}")
        arrays = [np.asarray(w) for w in weights]
        for i, (target, array) in enumerate(zip(own, arrays)):
            if array.shape != target.shape:
                raise ValueError(f"weights[{i}]: expected shape {target.shape}, got {array.shape}")
        guard = self._guard
        claimed = not guard.training  # a callback on the training thread writes directly
        if claimed:
            guard.claim("set_weights", self.name)  # waits for predictions in flight
        try:
            with guard.lock:
                for target, array in zip(own, arrays):
                    np.copyto(target, array, casting="same_kind")
                for layer in self.layers:
                    layer.weights_changed()
                guard.version += 1
        finally:
            if claimed:
                guard.release()

    def quantize(self, mode="int8") -> None:
        """Quantize the model's Dense layers in place, as Keras 3's ``model.quantize``: each
        kernel becomes int8 per output column (symmetric, scale = max(abs(column)) / 127, rounding
        to nearest even) with its float32 scales as the non-trainable weight
        ``kernel_scale``; the layers' policy becomes "int8_from_float32". ``predict``,
        ``predict_async`` and ``evaluate`` then quantize each input row to int8 on the fly and
        compute exact int32 products (AVX512-VNNI where present) with a float32 epilogue;
        ``save`` / ``load_model`` keep it. The model is then inference only: ``fit`` raises.

        Parameters
        ----------
        mode : str
            "int8" (the only mode).

        Raises
        ------
        ValueError
            For another mode, a float64 model, or a model with no Dense layer to quantize.
        """
        if mode != "int8":
            raise ValueError(f"mode: expected 'int8', got {mode!r}")
        self._refuse_while_training("quantize")
        if not self.built:
            raise ValueError("quantize: the model is not built; build it (or fit it) first")
        if self.dtype != "float32":
            raise ValueError(
                f"quantize: int8 weights stand for float32 ones; the model is {self.dtype}"
            )
        dense = [
            layer
            for layer in self.layers
            if isinstance(layer, layers.Dense) and layer.quantization_mode is None
        ]
        if not dense:
            raise ValueError("quantize: the model has no Dense layer left to quantize")
        new_weights = {}
        for layer in dense:
            kernel, scale = layer.quantized_values()
            new_weights[id(layer)] = [
                kernel,
                *([layer.bias.copy()] if layer.use_bias else []),
                scale,
            ]
        for layer in dense:
            layer.take_quantization(mode)
        self._build(self.input_sample_shape)
        for layer in dense:
            layer.set_weights(new_weights[id(layer)])
        self._guard.version += 1

    def count_params(self) -> int:
        return int(self._params.size) if self.built else 0

    def summary(
        self, line_length=None, positions=None, print_fn=None, show_trainable=False
    ) -> None:
        """Print a table of the layers (name and type, output shape, parameter count) and the
        total, trainable, non-trainable (and, once the optimizer is bound, optimizer)
        parameter counts with their memory, as Keras's ``summary`` does, as plain text.

        Parameters
        ----------
        line_length : int or None
            The width of the table (default 88, Keras's).
        positions : list of float or int, or None
            Where each column ends: fractions of ``line_length`` (all <= 1) or absolute
            character positions (default ``[0.45, 0.80, 1.0]``, Keras's).
        print_fn : callable or None
            Called with each line (default ``print``).
        show_trainable : bool
            Add a column saying whether each layer with weights is trainable (Y/N).
        """
        _summary.print_summary(self, line_length, positions, print_fn, show_trainable)

    # -- configuration -----------------------------------------------------------------
    def get_config(self) -> dict:
        config = {
            "name": self.name,
            "dtype": self.dtype,
            "layers": [layers.serialize(layer) for layer in self._layers],
            "input_dim": self.input_dim if self.built else None,
        }
        if self.built and len(self.input_sample_shape) > 1:  # only then: flat configs as before
            config["input_shape"] = list(self.input_sample_shape)
        if not self._trainable:  # only when set: other configs stay as they were
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        model = cls(
            [layers.deserialize(c) for c in config["layers"]],
            name=config.get("name"),
            dtype=config.get("dtype"),
        )
        if config.get("trainable") is False:
            model._trainable = False  # the layers' own flags came with their configs
        if config.get("input_shape") is not None:
            model._build(tuple(int(extent) for extent in config["input_shape"]))
        elif config.get("input_dim") is not None:
            model._build((int(config["input_dim"]),))
        return model

    # -- compile -----------------------------------------------------------------------
    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        weighted_metrics=None,
        check_finite=False,
    ) -> None:
        """Choose the optimizer, the loss and the metrics (Keras's names and classes).

        ``metrics`` are computed without the sample weights, ``weighted_metrics`` with them
        (``sample_weight``, times the ``class_weight`` of fit), as in Keras; the logs name a
        weighted metric whose name is taken ``weighted_<name>``.

        ``check_finite=True`` (densekit's, not Keras's) checks every training step before
        its update: a step whose loss or gradients are NaN or infinite (bad data, a
        diverging learning rate) is refused, and ``fit`` (``train_on_batch``, a job) raises
        FloatingPointError naming the epoch and batch, the weights and optimizer state still
        those of the last good step. It costs one pass over the gradients per step. Without
        it, as in Keras, such a step writes NaN into the weights (``TerminateOnNaN`` stops
        training only after that update).
        """
        self._refuse_while_training("compile")
        if not isinstance(check_finite, (bool, np.bool_)):
            raise TypeError(f"check_finite: expected True or False, got {check_finite!r}")
        if loss is None:
            raise ValueError("loss: compile needs a loss, e.g. loss='mse'")
        optimizer = optimizers.get(optimizer)
        loss = losses.get(loss)
        if loss.reduction == "none":
            raise ValueError("loss: a loss with reduction='none' cannot be trained on")
        identifiers = _metric_list(metrics)
        weighted_identifiers = _metric_list(weighted_metrics)
        for identifier in identifiers + weighted_identifiers:
            metrics_module.get(identifier, loss)  # validates names now
        self.optimizer, self.loss, self._metric_identifiers = optimizer, loss, identifiers
        self._weighted_metric_identifiers = weighted_identifiers
        self.check_finite = bool(check_finite)
        self.compiled = True
        self._invalidate()

    def get_compile_config(self) -> dict | None:
        """The compile settings as plain data (JSON-able), or None before ``compile``."""
        if not self.compiled:
            return None
        config = {
            "optimizer": optimizers.serialize(self.optimizer),
            "loss": losses.serialize(self.loss),
            "metrics": [_metric_config(m) for m in self._metric_identifiers],
        }
        if self._weighted_metric_identifiers:  # only when set, as check_finite
            config["weighted_metrics"] = [
                _metric_config(m) for m in self._weighted_metric_identifiers
            ]
        if self.check_finite:  # only when set: files without it stay as they were
            config["check_finite"] = True
        return config

    def compile_from_config(self, config: dict) -> None:
        """``compile`` with settings from ``get_compile_config``."""
        self.compile(
            optimizer=optimizers.deserialize(config["optimizer"]),
            loss=losses.deserialize(config["loss"]),
            metrics=[_metric_from_config(m) for m in config["metrics"]],
            weighted_metrics=[_metric_from_config(m) for m in config.get("weighted_metrics", [])],
            check_finite=config.get("check_finite", False),
        )

    @property
    def metrics_names(self) -> list[str]:
        """``"loss"`` and the logs' key of each metric (the metrics, then the weighted
        metrics)."""
        return ["loss", *self.training_state.metric_keys]

    @property
    def metrics(self) -> list[metrics_module.Metric]:
        return list(self.training_state.metrics)

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"You must call compile() before {what}()")

    @property
    def training_state(self) -> TrainingState:
        """The training machinery of the compiled, built model (``training.TrainingState``):
        made on first use after each compile or change of layers, building the model if its
        input shape is known."""
        state = self._state
        if state is not None:
            return state
        self._require_compiled("using the model for training or evaluation")
        with self._guard.build_lock:  # made once: the optimizer is bound to one state
            if self._state is not None:
                return self._state
            if not self.built:
                self.build()
            if len(self.output_sample_shape) > 1:
                raise ValueError(
                    f"loss: the model's outputs are {self.output_shape}; densekit's losses and "
                    "metrics take flat (n, outputs) outputs: put a Flatten after the layers "
                    "that act on the last axis"
                )
            if self._weights_trainable() != self._layout:
                # trainable flags changed since the build: lay the buffer out again
                # (trainable weights first), keeping the values
                self._build_unlocked(self.input_sample_shape)
            state = self._state = TrainingState(
                self.layers,
                self._params,
                self._weight_slices,
                input_dim=self.input_dim,
                output_dim=self.output_dim,
                input_shape=self.input_sample_shape,
                loss=self.loss,
                optimizer=self.optimizer,
                metric_identifiers=self._metric_identifiers,
                weighted_metric_identifiers=self._weighted_metric_identifiers,
                guard=self._guard,
                check_finite=self.check_finite,
                trainable_parameters=self._trainable_params,
            )
        return state

    def _weights_trainable(self) -> tuple[bool, ...]:
        """Per weight (Keras's order), whether its layer trains it now."""
        return tuple(
            layer.weight_is_trainable(attr)
            for layer in self.layers
            for attr, _, _ in layer.weight_specs
        )

    def optimizer_state(self) -> tuple[int, dict[str, np.ndarray]] | None:
        """The optimizer's step count and state arrays (live) when they belong to this
        model's weights (the optimizer was bound to them by training or evaluation), else
        None."""
        optimizer = self.optimizer
        if not (self.compiled and self.built and optimizer.is_bound_to(self._trainable_params)):
            return None
        return optimizer.iterations, dict(optimizer.variables)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        sample_weight=None,
        initial_epoch=0,
        seed=None,
        validation_batch_size=None,
        validation_freq=1,
        class_weight=None,
        steps_per_epoch=None,
        workers=1,
        strategy=None,
    ) -> callbacks_module.History:
        """Train for ``epochs`` epochs (from ``initial_epoch``) on ``x`` and ``y``.

        ``x`` is an array (with targets ``y``), or a ``densekit.data.Dataset`` or an iterator
        of (x, y[, sample_weight]) batches (prepared on a background thread: see
        ``densekit.data``); ``steps_per_epoch`` cuts an endless or one-shot iterator into
        epochs. Array batches are shuffled each epoch by a generator seeded with
        ``(seed, epoch)``, so a run resumed with ``initial_epoch`` and the same seed sees the
        same batches. ``seed=None`` draws one (reproducible after
        ``densekit.set_random_seed``). The last fraction ``validation_split`` of the samples
        (before shuffling) is held out, as in Keras. ``class_weight`` ({class: weight})
        multiplies the training samples' weights by the weight of their class (the label, the
        argmax of a one-hot row, or a 0/1 target). ``workers=k, strategy="hogwild"`` trains
        with k lock-free threads (see ``densekit._hogwild``). ``strategy="mpi"`` (or a
        ``densekit.distributed.MPIStrategy``) trains data-parallel over MPI processes, with
        ``batch_size`` the global batch (see :doc:`/guide/distributed`). Callbacks run on the
        thread that trains. A model trains one fit at a time: a second raises RuntimeError.
        """
        # fit's parameters by name, taken first thing: this signature is their only list
        # (fit_async binds its arguments to it, _fit.setup reads them by name)
        arguments = {name: value for name, value in locals().items() if name != "self"}
        return self._train(arguments, "fit")

    def fit_async(self, *args, detached=False, **kwargs) -> jobs.TrainingJob:
        """``fit`` in the background: takes fit's arguments, checks them (raising at once on
        bad ones) and returns a running ``densekit.jobs.TrainingJob``, a
        ``concurrent.futures.Future`` of the History that asyncio code can ``await``. Training
        and its callbacks run on the job's thread; meanwhile ``predict`` from other threads
        sees the weights after some whole step. ``job.stop()`` / ``job.cancel()`` end it at
        the next batch boundary.

        Ctrl-C (KeyboardInterrupt) while ``job.result()`` waits cancels the job (as Ctrl-C
        stops a synchronous ``fit``) and propagates. With ``detached=True`` the job trains on
        whatever happens to its waiters (a Ctrl-C interrupts only the wait), as a task
        submitted to an executor does; stop it with ``job.stop()`` or ``job.cancel()``."""
        if not isinstance(detached, (bool, np.bool_)):
            raise TypeError(f"detached: expected True or False, got {detached!r}")
        bound = inspect.signature(self.fit).bind(*args, **kwargs)
        bound.apply_defaults()
        return self._train(bound.arguments, "fit_async", detached=bool(detached))

    def _train(self, arguments: dict, what: str, detached: bool = False):
        """Check fit's ``arguments`` (by name) here, then train on this thread (fit) or on a
        job's thread (fit_async)."""
        self._require_compiled("fit")
        self._refuse_while_training("fit")
        if what == "fit_async" and arguments["strategy"] is not None:
            if arguments["strategy"] != "hogwild":  # the job's thread makes the MPI calls
                distributed.resolve(arguments["strategy"]).require_thread_multiple(what)
        setup = _fit.setup(self, arguments)
        if what == "fit":
            self._guard.claim("fit", self.name)
            try:
                return _fit.run(self, setup)
            finally:
                self._guard.release()
        self._guard.claim("fit_async", self.name, for_job=True)
        try:
            job = jobs.TrainingJob(
                self,
                lambda job: _fit.run(self, setup, job),
                setup.epochs,
                self._guard,
                detached=detached,
            )
            job.start()
        except BaseException:
            self._guard.release()
            raise
        return job

    def train_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """One training step on this batch. Returns its loss (with metrics: ``[loss, *metrics]``,
        or a dict with ``return_dict``); metrics cover this batch only."""
        self._require_compiled("train_on_batch")
        self._refuse_while_training("train_on_batch")
        x, y, sample_weight = dataset_for(self, x, y, sample_weight)
        n = x.shape[0]
        if n == 0:
            raise ValueError("x: empty batch")
        self._guard.claim("train_on_batch", self.name)
        try:
            state = self._state
            plan = state.load_batch(x, y, sample_weight, in_place=True)
            state.reset_metrics()
            with state.deferring_interrupts():  # Ctrl-C: the whole step or none of it
                loss = state.train_step(plan)
            return self._result(state.logs(loss * n, n), return_dict)
        finally:
            self._guard.release()

    def _result(self, logs: dict, return_dict: bool):
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    # -- evaluation and prediction ------------------------------------------------------------
    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        callbacks=None,
        return_dict=False,
        strategy=None,
    ):
        """The loss (and metrics) over ``x`` and ``y``: a float, ``[loss, *metrics]``, or a dict.

        With ``strategy="mpi"`` (or an ``MPIStrategy``), called on every rank with the same
        data, each global batch of ``batch_size`` rows is shared out across the processes and
        every rank gets the same figures."""
        self._require_compiled("evaluate")
        self._refuse_from_other_threads("evaluate")
        batch_size = 32 if batch_size is None else int_at_least(batch_size, 1, "batch_size")
        verbose = callbacks_module.resolve_verbose(verbose)
        if strategy is not None:
            strategy = distributed.resolve(strategy)
            verbose = verbose if strategy.is_root else 0  # one progress bar, rank 0's
        x, y, sample_weight = dataset_for(self, x, y, sample_weight)
        if x.shape[0] == 0:
            raise ValueError("x: no samples to evaluate")
        steps = -(-x.shape[0] // batch_size)
        hooks, progress = callbacks_module.configure(
            callbacks, self, verbose, epochs=1, steps=steps, mode="evaluate"
        )
        hooks.on_test_begin()
        if strategy is not None:
            logs = strategy.evaluate(self._state, x, y, sample_weight, batch_size, hooks, progress)
        else:
            logs = self._state.evaluate(x, y, sample_weight, batch_size, hooks, progress)
        hooks.on_test_end(logs)
        return self._result(logs, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) of one batch, without training."""
        self._require_compiled("test_on_batch")
        self._refuse_from_other_threads("test_on_batch")
        x, y, sample_weight = dataset_for(self, x, y, sample_weight)
        if x.shape[0] == 0:
            raise ValueError("x: empty batch")
        logs = self._state.evaluate(x, y, sample_weight, x.shape[0])
        return self._result(logs, return_dict)

    def _snapshot_weights(self, params: np.ndarray) -> list:
        """Per predict op, its weights as views into ``params`` (a snapshot), or None."""
        return [
            [
                params[o : o + size].reshape(shape)
                for o, size, shape in self._layer_slices[id(op.layer)]
            ]
            if getattr(op, "inference_weights", op.has_weights)
            else None
            for op in self._predict_ops
        ]

    def predict(self, x, batch_size=None, verbose=0, callbacks=None, strategy=None) -> np.ndarray:
        """The model's outputs for ``x``, (n, outputs), computed ``batch_size`` rows at a time
        (default 32). ``verbose=1`` shows a progress bar (default 0, unlike Keras's "auto",
        so that calls in a serving loop print nothing). Safe from several threads at once;
        while the model trains on another thread, it computes with the weights after some
        whole step (a snapshot copied between two steps). With ``strategy="mpi"`` (or an
        ``MPIStrategy``), called on every rank with the same ``x``, each process computes a
        block of rows and the whole result is returned on every rank (on rank 0 only, the
        others getting None, with ``MPIStrategy(predict_to="root")``)."""
        batch_size = 32 if batch_size is None else int_at_least(batch_size, 1, "batch_size")
        x = inputs_for(self, x)
        if strategy is not None:
            return distributed.resolve(strategy).predict(self, x, batch_size, verbose, callbacks)
        verbose = callbacks_module.resolve_verbose(verbose)
        if verbose or callbacks:
            return self._predict_with_callbacks(x, batch_size, verbose, callbacks)
        return self._predict_arrays(x, batch_size, None, None)

    def _predict_with_callbacks(self, x, batch_size, verbose, callbacks):
        steps = -(-x.shape[0] // batch_size)
        hooks, progress = callbacks_module.configure(
            callbacks, self, verbose, epochs=1, steps=steps, mode="predict"
        )
        hooks.on_predict_begin()
        outputs = self._predict_arrays(x, batch_size, hooks, progress)
        hooks.on_predict_end()
        return outputs

    def _predict_arrays(self, x, batch_size, hooks, progress) -> np.ndarray:
        outputs = self._predict_flat(x, batch_size, hooks, progress)
        if len(self.output_sample_shape) > 1:  # outputs of more axes, as the last layer's
            return outputs.reshape(x.shape[0], *self.output_sample_shape)
        return outputs

    def _predict_flat(self, x, batch_size, hooks, progress) -> np.ndarray:
        """The outputs of the (n, input_dim) inputs ``x``, flat: (n, output_dim)."""
        n = x.shape[0]
        if self._predict_chain is None:
            return x.copy()
        params, counted = self._guard.begin_read(self._params)
        try:
            chain = self._predict_chain
            if params is not self._params:  # training on another thread: a snapshot
                chain = inference_chain(self._predict_ops, self._snapshot_weights(params))
            elif isinstance(chain, RefreshedChain):  # folded batch norms, int8 / bf16 layers
                chain.refresh(self._guard.version)
            if n <= batch_size and hooks is None:
                # one batch, the latency path: the kernel allocates the outputs (checking an
                # out= array against every weight is a sizeable part of a batch-1 call)
                return chain(x)
            outputs = kernels.empty((n, self.output_dim), self._np_dtype)
            self._predict_batches(chain, x, outputs, batch_size, hooks, progress)
            return outputs
        finally:
            self._guard.end_read(counted)

    def _predict_batches(self, chain, x, outputs, batch_size, hooks, progress):
        batch_hooks = hooks is not None and hooks.batch_hooks["predict"]
        for step, start in enumerate(range(0, x.shape[0], batch_size)):
            stop = start + batch_size
            if batch_hooks:
                hooks.on_predict_batch_begin(step, {})
            chain(x[start:stop], out=outputs[start:stop])
            if batch_hooks:
                hooks.on_predict_batch_end(step, {"outputs": outputs[start:stop]})
            if progress is not None:
                progress.advance(dict)

    def predict_on_batch(self, x) -> np.ndarray:
        """The outputs for one batch, in one pass."""
        x = inputs_for(self, x)
        return self._predict_arrays(x, max(1, x.shape[0]), None, None)

    def predict_async(self, x, batch_size=None) -> jobs.AsyncFuture:
        """``predict`` on densekit's inference threads: returns at once a
        ``concurrent.futures.Future`` of the outputs that asyncio code can ``await``. ``x``
        is checked (and converted) now; do not change it until the future is done."""
        batch_size = 32 if batch_size is None else int_at_least(batch_size, 1, "batch_size")
        x = inputs_for(self, x)
        return jobs.submit(self._predict_arrays, x, batch_size, None, None)

    # -- saving --------------------------------------------------------------------------
    def save(self, filepath, include_optimizer=True) -> None:
        """Write the model (config, weights, compile settings, optimizer state) to one file,
        atomically: densekit's format for a ``.npz`` name, Keras 3's for ``.keras``. Load it
        with ``densekit.load_model``. After a fit under an MPIStrategy only rank 0 writes (the
        other ranks return at once)."""
        self._refuse_from_other_threads("save")
        if self.distribute_strategy is not None and not self.distribute_strategy.is_root:
            return
        saving.save_model(self, filepath, include_optimizer=include_optimizer)

    def save_weights(self, filepath) -> None:
        """Write the weights only (Keras's order) to one file, atomically (after a fit under
        an MPIStrategy, from rank 0 only)."""
        self._refuse_from_other_threads("save_weights")
        if self.distribute_strategy is not None and not self.distribute_strategy.is_root:
            return
        saving.save_weights(self, filepath)

    def load_weights(self, filepath) -> None:
        """Load weights saved by ``save_weights`` or ``save`` (building the model if needed)."""
        saving.load_weights(self, filepath)

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r} layers={len(self.layers)} built={self.built}>"


def _metric_list(metrics) -> list:
    """compile's ``metrics`` / ``weighted_metrics``: None, one metric or a list of them."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, dict, metrics_module.Metric)):
        return [metrics]
    return list(metrics)


def _metric_config(metric):
    """A compiled metric as plain data: its name, or its config."""
    return metric if isinstance(metric, str) else metrics_module.serialize(metric)


def _metric_from_config(config):
    return config if isinstance(config, str) else metrics_module.deserialize(config)


def _float_dtype(dtype, name: str) -> str:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {dtype!r}") from None
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {dtype!r}")
    return resolved.name


def clone_model(model, clone_function=None) -> Sequential:
    """A new model with ``model``'s architecture and fresh weights, as Keras's
    ``clone_model``: each layer is made again from its config (same names, settings,
    regularizers, constraints and ``trainable`` flags) and the weights are drawn again by
    the layers' initializers (a seeded initializer draws the same values, an unseeded one
    new ones). The clone is built when ``model`` is, and not compiled.

    Parameters
    ----------
    model : Sequential
        The model to clone.
    clone_function : callable or None
        ``layer -> new layer``, called on each layer (the Input included) instead of
        ``type(layer).from_config(layer.get_config())``. It must return a new layer: a
        densekit model owns its layers' weights, so a layer cannot be in two models.

    Returns
    -------
    Sequential
        The clone.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a densekit.Sequential, got {model!r}")
    if clone_function is None:

        def clone_function(layer):
            return type(layer).from_config(layer.get_config())

    elif not callable(clone_function):
        raise TypeError(f"clone_function: expected a callable, got {clone_function!r}")
    new_layers = []
    for layer in model._layers:
        new = clone_function(layer)
        if not isinstance(new, Layer):
            raise TypeError(
                f"clone_function: expected a densekit.layers.Layer for {layer.name!r}, got {new!r}"
            )
        if new is layer:
            raise ValueError(
                f"clone_function: returned the layer {layer.name!r} itself; a densekit layer "
                "cannot be in two models (its weights live in its model's buffer)"
            )
        new_layers.append(new)
    clone = Sequential(name=model.name, dtype=model._dtype)
    for layer in new_layers:
        clone.add(layer)
    clone._trainable = model.trainable
    if model.built and not clone.built:
        clone.build((None, *model.input_sample_shape))
    return clone


def quantize(model: Sequential, mode="int8") -> Sequential:
    """A copy of ``model`` (same layers and weights) quantized with ``Sequential.quantize``;
    ``model`` itself is left as it is.

    Parameters
    ----------
    model : Sequential
        A built float32 model.
    mode : str
        "int8".

    Returns
    -------
    Sequential
        The quantized copy, compiled as ``model`` was (without its optimizer state).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a densekit.Sequential, got {model!r}")
    if not model.built:
        raise ValueError("model: not built; build it (or fit it) first")
    copy = clone_model(model)
    copy.set_weights(model.get_weights())
    if model.compiled:
        copy.compile_from_config(model.get_compile_config())
    copy.quantize(mode)
    return copy


def load_model(filepath, compile=True) -> Sequential:
    """A model saved with ``model.save``: same config and weights (bitwise), compiled with
    the saved settings and optimizer state (unless ``compile=False``), so training resumes
    where it stopped.

    Parameters
    ----------
    filepath : str or os.PathLike
        A file written by ``Sequential.save``, or a Keras 3 ``.keras`` file.
    compile : bool
        Whether to compile the model with the saved settings and optimizer state.

    Returns
    -------
    Sequential
        The model.

    Raises
    ------
    densekit.saving.ModelFileError
        When the file is not a readable densekit model file.
    """
    contents = saving.read_model_file(filepath)
    try:
        model = Sequential.from_config(contents.config)
    except (KeyError, TypeError, ValueError) as error:
        raise saving.ModelFileError(f"{filepath}: invalid model configuration ({error})") from None
    saving.restore_model(model, contents, compile=compile)
    return model
