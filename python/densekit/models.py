"""``Sequential``: a Keras-style stack of layers trained with densekit's kernels.

All weights live in one flat parameter buffer (each layer's kernel and bias are views into
it), all gradients in a second one with the same layout, so one optimizer kernel call updates
the whole model. fit/evaluate run prebuilt kernel-call plans on buffers made once per batch
shape (``_plan.py``); shuffled batches are gathered into those buffers by the ``take_rows``
kernel (without the GIL). A training step allocates no arrays.

Threads: one thread at a time trains a model (fit, or the thread of a ``fit_async`` job);
``predict`` and ``get_weights`` from other threads meanwhile read a snapshot of the weights
taken at a step boundary (``_guard.py``); calls that would change the model or its metrics
from another thread while it trains raise RuntimeError. The training loop is in ``_fit.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _fit, jobs, kernels, layers, losses, optimizers
from . import callbacks as callbacks_module
from . import metrics as metrics_module
from ._guard import WeightGuard
from ._plan import Workspace, build_ops, inference_chain
from .layers import InputLayer, Layer, _unique_name

_BIG_NORM = 1e300  # clip_by_global_norm with this bound only measures the norm


def _aligned_zeros(size: int, dtype) -> np.ndarray:
    """A zero vector starting on a 64-byte cache line (NumPy gives 16 bytes): the kernels
    then read the weights in whole lines (batch-1 predict reads a 784x256 kernel 15% faster
    from L2 aligned than 16 bytes off)."""
    dtype = np.dtype(dtype)
    spare = 64 // dtype.itemsize
    raw = np.zeros(size + spare, dtype)
    start = (-raw.ctypes.data % 64) // dtype.itemsize
    return raw[start : start + size]


def _int_at_least(value, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


class Sequential:
    """A linear stack of layers: ``Sequential([Input((784,)), Dense(256, "relu"), Dense(10)])``.

    ``dtype`` ("float32" default, or "float64") is the dtype of every weight and buffer;
    inputs are converted to it once per call.
    """

    def __init__(self, layers=None, name=None, dtype=None):
        self.name = name or _unique_name("sequential")
        self._dtype = None if dtype is None else _float_dtype(dtype, "dtype")
        self._layers: list[Layer] = []
        self.built = False
        self.input_dim: int | None = None
        self.output_dim: int | None = None
        self.optimizer: optimizers.Optimizer | None = None
        self.loss: losses.Loss | None = None
        self.compiled = False
        self.stop_training = False
        self.history: callbacks_module.History | None = None
        self._metric_identifiers: list = []
        self._params = np.zeros(0, np.float32)
        self._ready = False
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
            self._build(self.input_dim)
        elif self._declared_input_dim() is not None and self.layers:
            self.build()  # as Keras: a model that starts with an Input is built at once

    def pop(self) -> Layer:
        self._refuse_while_training("pop")
        if not self.layers:
            raise IndexError("pop: the model has no layers")
        layer = self._layers.pop()
        if self.built and self.layers:
            self._build(self.input_dim)
        elif not self.layers:
            self.built = False
            self._invalidate()
        return layer

    def _declared_input_dim(self) -> int | None:
        for layer in self._layers[:1]:
            if layer._input_shape is not None:
                return layer._input_shape[0]
        return None

    def build(self, input_shape=None) -> None:
        """Create the weights for inputs of ``input_shape``: (None, features) or (features,).
        Without an argument, the shape of the Input layer (or ``input_shape=``) is used."""
        if input_shape is None:
            features = self._declared_input_dim()
            if features is None:
                raise ValueError(
                    "input_shape: unknown; pass build(input_shape=(None, features)), start the "
                    "model with Input(shape=(features,)), or call fit/predict"
                )
        else:
            shape = (
                (input_shape,) if isinstance(input_shape, (int, np.integer)) else tuple(input_shape)
            )
            if len(shape) == 2:
                shape = shape[1:]
            if len(shape) != 1:
                raise ValueError(
                    f"input_shape: expected (None, features) or (features,), got {input_shape!r}"
                )
            features = _int_at_least(shape[0], 1, "input_shape")
        self._build(features)

    def _build(self, features: int) -> None:
        self._refuse_while_training("build")
        declared = self._declared_input_dim()
        if declared is not None and declared != features:
            raise ValueError(f"input_shape: the model declares {declared} features, got {features}")
        if not self.layers:
            raise ValueError("The model has no layers; add some before building it")
        previous = {id(layer): layer.get_weights() for layer in self.layers if layer.built}
        width = features
        for layer in self.layers:
            width = layer._build(width)
        dtype = self._np_dtype
        specs = [
            (layer, shape, init) for layer in self.layers for _, shape, init in layer._weight_specs
        ]
        params = _aligned_zeros(sum(math.prod(shape) for _, shape, _ in specs), dtype)
        views, offset, slices = [], 0, []
        for _, shape, init in specs:
            size = math.prod(shape)
            view = params[offset : offset + size].reshape(shape)
            view[...] = init(shape, dtype)
            views.append(view)
            slices.append((offset, size, shape))
            offset += size
        position = 0
        self._weight_slices = slices  # (offset, size, shape) of each weight in the buffer
        self._layer_slices = {}
        for layer in self.layers:
            count = len(layer._weight_specs)
            layer._attach(views[position : position + count])
            self._layer_slices[id(layer)] = slices[position : position + count]
            position += count
            kept = previous.get(id(layer))
            if kept is not None and [w.shape for w in kept] == [w.shape for w in layer.weights]:
                layer.set_weights(kept)
        self._params, self._weight_views = params, views
        self.input_dim, self.output_dim = features, width
        self.built = True
        self._predict_ops = build_ops(self.layers, features, training=False, absorbed=None)
        # predict's kernel call, holding the live weights (views into the buffer made above)
        self._predict_chain = inference_chain(self._predict_ops) if self._predict_ops else None
        self._invalidate()

    def _invalidate(self) -> None:
        """Forget plans and buffers (after a change of layers or of compile settings)."""
        self._ready = False
        self._workspaces: dict[tuple[str, int], Workspace] = {}

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

    trainable_weights = weights

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
                guard.version += 1
        finally:
            if claimed:
                guard.release()

    def count_params(self) -> int:
        return int(self._params.size) if self.built else 0

    def summary(self, print_fn=None) -> None:
        """Print each layer's name, type, output shape and parameter count."""
        print_fn = print_fn or print
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = f"(None, {layer.output_dim})" if layer.built else "?"
            count = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, count))
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
        rule = "-" * sum(widths)
        lines = [f'Model: "{self.name}"', rule]
        for i, row in enumerate(rows):
            lines.append("".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            lines.append("=" * len(rule) if i == 0 else rule)
        lines.append(f"Total params: {self.count_params():,}")
        lines.append(f"Trainable params: {self.count_params():,}")
        lines.append("Non-trainable params: 0")
        for line in lines:
            print_fn(line)

    # -- configuration -----------------------------------------------------------------
    def get_config(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "layers": [layers.serialize(layer) for layer in self._layers],
            "input_dim": self.input_dim if self.built else None,
        }

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        model = cls(
            [layers.deserialize(c) for c in config["layers"]],
            name=config.get("name"),
            dtype=config.get("dtype"),
        )
        if config.get("input_dim") is not None:
            model._build(int(config["input_dim"]))
        return model

    # -- compile -----------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None) -> None:
        """Choose the optimizer, the loss and the metrics (Keras's names and classes)."""
        self._refuse_while_training("compile")
        if loss is None:
            raise ValueError("loss: compile needs a loss, e.g. loss='mse'")
        optimizer = optimizers.get(optimizer)
        loss = losses.get(loss)
        if loss.reduction == "none":
            raise ValueError("loss: a loss with reduction='none' cannot be trained on")
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, metrics_module.Metric)):
            metrics = [metrics]
        identifiers = list(metrics)
        for identifier in identifiers:
            metrics_module.get(identifier, loss)  # validates names now
        self.optimizer, self.loss, self._metric_identifiers = optimizer, loss, identifiers
        self.compiled = True
        self._invalidate()

    @property
    def metrics_names(self) -> list[str]:
        self._prepare()
        return ["loss", *(m.name for m in self._metrics)]

    @property
    def metrics(self) -> list[metrics_module.Metric]:
        self._prepare()
        return list(self._metrics)

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"You must call compile() before {what}()")

    def _prepare(self) -> None:
        """Once per compile/build: ops, metrics, gradient buffer, optimizer state."""
        if self._ready:
            return
        self._require_compiled("using the model for training or evaluation")
        if not self.built:
            self.build()
        loss = self.loss
        absorbed = None if loss.from_logits else loss.fused_activation
        self._ops = {}
        for mode in ("train", "evaluate"):
            ops = build_ops(self.layers, self.input_dim, mode == "train", absorbed)
            if ops is None:
                raise ValueError(
                    f"loss: {type(loss).__name__}(from_logits=False) takes probabilities from a "
                    f"{absorbed} output, but the model's last layer is not a {absorbed}; end the "
                    f"model with activation='{absorbed}' or use from_logits=True"
                )
            self._ops[mode] = ops
        self._absorbed = absorbed
        self._metrics = [
            metrics_module.get(i, loss, self.output_dim) for i in self._metric_identifiers
        ]
        kinds = {"labels": "integer labels", "dense": "one target per output"}
        for metric in self._metrics:
            if metric.target_kind != loss.target_kind:
                raise ValueError(
                    f"metrics: {metric.name!r} needs {kinds[metric.target_kind]}, but "
                    f"{loss.name} is given {kinds[loss.target_kind]}"
                )
        self._metrics_need_probabilities = any(m.needs_probabilities for m in self._metrics)
        if loss.target_kind == "labels":
            self._target_template = np.zeros((0,), np.int64)
            if self.output_dim < 2:
                raise ValueError(
                    f"loss: {loss.name} needs at least 2 outputs, the model has {self.output_dim}"
                )
        else:
            self._target_template = np.zeros((0, self.output_dim), self._np_dtype)

        self._grads, grad_views, self._layer_grads = self._new_gradients()
        self._grad_views = grad_views
        self.optimizer.build(self._params, self._grads, grad_views)
        self._prepare_regularization()
        self._workspaces = {}
        self._ready = True

    def _new_gradients(self):
        """A flat gradient buffer shaped like the parameters, its views in Keras's order, and
        the views of each layer (by layer id)."""
        grads = _aligned_zeros(self._params.size, self._params.dtype)
        grad_views = [grads[o : o + size].reshape(shape) for o, size, shape in self._weight_slices]
        layer_grads, position = {}, 0
        for layer in self.layers:
            count = len(layer._weight_specs)
            layer_grads[id(layer)] = grad_views[position : position + count]
            position += count
        return grads, grad_views, layer_grads

    def _regularization_calls(self, layer_grads) -> list:
        """L2 penalties' gradients ``dw += 2 * l2 * w``, one kernel call per kernel (the SGD
        kernel with maximize=True computes ``param += lr * grad``) into ``layer_grads``."""
        calls = []
        for layer in self.layers:
            regularizer = getattr(layer, "kernel_regularizer", None)
            if regularizer is None or regularizer.l2 == 0:
                continue
            calls.append(
                functools.partial(
                    kernels.sgd_step,
                    layer_grads[id(layer)][0],
                    layer.kernel,
                    lr=2.0 * regularizer.l2,
                    maximize=True,
                )
            )
        return calls

    def _prepare_regularization(self) -> None:
        """L2 penalties: the gradient calls, and the penalty value from the norm of all
        kernels that share a factor."""
        self._regularization_grads, groups = self._regularization_calls(self._layer_grads), {}
        for layer in self.layers:
            regularizer = getattr(layer, "kernel_regularizer", None)
            if regularizer is None or regularizer.l2 == 0:
                continue
            groups.setdefault(regularizer.l2, []).append(layer.kernel)
        self._regularization_norms = [
            (factor, functools.partial(kernels.clip_by_global_norm, arrays, _BIG_NORM))
            for factor, arrays in groups.items()
        ]

    def _regularization_penalty(self) -> float:
        return sum(factor * norm() ** 2 for factor, norm in self._regularization_norms)

    def _first_weighted_op(self, mode: str) -> int | None:
        for i, op in enumerate(self._ops[mode]):
            if op.has_weights:
                return i
        return None

    def _workspace(self, mode: str, rows: int) -> Workspace:
        """The buffers for batches of up to ``rows`` rows: an existing workspace that is big
        enough, else a new one (made once per batch shape)."""
        key = (mode, rows)
        workspace = self._workspaces.get(key)
        if workspace is None:
            for (other_mode, capacity), other in self._workspaces.items():
                if other_mode == mode and capacity >= rows:
                    return other
            if len(self._workspaces) >= 8:
                self._workspaces.clear()
            workspace = self._workspaces[key] = Workspace(self, mode, rows)
        return workspace

    # -- input checks ----------------------------------------------------------------------
    def _inputs(self, x, name: str = "x") -> np.ndarray:
        """``x`` as a C-contiguous (n, features) array of the model's dtype (building the
        model from its width if needed)."""
        dtype = self._np_dtype
        if not (isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous):
            if x is None:
                raise TypeError(f"{name}: expected an array of shape (samples, features), got None")
            if np.iscomplexobj(x):
                raise TypeError(f"{name}: expected real numbers, got complex values")
            try:
                x = np.ascontiguousarray(x, dtype=dtype)
            except (TypeError, ValueError) as error:
                raise TypeError(f"{name}: cannot convert to a {dtype} array ({error})") from None
        if x.ndim != 2:
            raise ValueError(
                f"{name}: expected a 2-D array (samples, features), got shape {x.shape}"
            )
        if not self.built:
            self.build((None, x.shape[1]))
        if x.shape[1] != self.input_dim:
            raise ValueError(f"{name}: expected shape (n, {self.input_dim}), got {x.shape}")
        return x

    def _targets(self, y, n: int, name: str = "y") -> np.ndarray:
        if y is None:
            raise TypeError(f"{name}: the targets are missing")
        return self.loss.prepare_target(y, n, self.output_dim, self._np_dtype, name)

    def _sample_weights(self, sample_weight, n: int, name: str = "sample_weight"):
        if sample_weight is None:
            return None
        try:
            weights = np.ascontiguousarray(sample_weight, dtype=self._np_dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}: cannot convert to an array ({error})") from None
        if weights.shape != (n,):
            raise ValueError(
                f"{name}: expected one weight per sample, shape ({n},), got {weights.shape}"
            )
        if not np.all(np.isfinite(weights)) or (n and weights.min() < 0):
            raise ValueError(f"{name}: expected finite weights >= 0")
        return weights

    def _dataset(self, x, y, sample_weight, names=("x", "y", "sample_weight")):
        x = self._inputs(x, names[0])
        n = x.shape[0]
        self._prepare()
        y = self._targets(y, n, names[1])
        return x, y, self._sample_weights(sample_weight, n, names[2])

    # -- training --------------------------------------------------------------------------
    def _train_step(self, plan) -> float:
        """Forward, loss, backward, update: kernel calls only. Returns the batch loss."""
        for call in plan.forward:
            call()
        loss = plan.loss()[0]
        for call in plan.backward:
            call()
        if self._regularization_grads:
            for call in self._regularization_grads:
                call()
            loss += self._regularization_penalty()
        guard = self._guard
        with guard.lock:  # the only write to the weights: readers copy between two steps
            self.optimizer.apply()
            guard.version += 1
        for update in plan.metric_updates:
            update()
        return loss

    def _gradients(self, x, y, sample_weight=None) -> tuple[float, list[np.ndarray]]:
        """The loss of one batch in training mode and copies of its gradients (Keras's
        order), without updating anything: for tests and debugging."""
        self._require_compiled("_gradients")
        x, y, sample_weight = self._dataset(x, y, sample_weight)
        n = x.shape[0]
        plan = self._workspace("train", n).plan(n, sample_weight is not None)
        np.copyto(plan.x, x)
        np.copyto(plan.y, y)
        if sample_weight is not None:
            np.copyto(plan.sample_weight, sample_weight)
        for call in plan.forward:
            call()
        loss = plan.loss()[0]
        for call in plan.backward:
            call()
        for call in self._regularization_grads:
            call()
        if self._regularization_grads:
            loss += self._regularization_penalty()
        return loss, [g.copy() for g in self._grad_views]

    def _logs(self, loss_total: float, seen: int, prefix: str = "") -> dict:
        logs = {prefix + "loss": loss_total / seen if seen else float("nan")}
        for metric in self._metrics:
            logs[prefix + metric.name] = metric.result()
        return logs

    def _reset_metrics(self) -> None:
        for metric in self._metrics:
            metric.reset_state()

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
        with k lock-free threads (see ``densekit._hogwild``). Callbacks run on the thread
        that trains. A model trains one fit at a time: a second raises RuntimeError.
        """
        setup = _fit.setup(
            self,
            x,
            y,
            batch_size,
            epochs,
            verbose,
            callbacks,
            validation_split,
            validation_data,
            shuffle,
            sample_weight,
            initial_epoch,
            seed,
            validation_batch_size,
            validation_freq,
            class_weight,
            steps_per_epoch,
            workers,
            strategy,
        )
        self._guard.claim("fit", self.name)
        try:
            return _fit.run(self, setup)
        finally:
            self._guard.release()

    def fit_async(self, *args, **kwargs) -> jobs.TrainingJob:
        """``fit`` in the background: takes fit's arguments, checks them (raising at once on
        bad ones) and returns a running ``densekit.jobs.TrainingJob``, a
        ``concurrent.futures.Future`` of the History that asyncio code can ``await``. Training
        and its callbacks run on the job's thread; meanwhile ``predict`` from other threads
        sees the weights after some whole step. ``job.stop()`` / ``job.cancel()`` end it at
        the next batch boundary."""
        setup = _fit.setup(self, *args, **kwargs)
        self._guard.claim("fit_async", self.name, for_job=True)
        try:
            job = jobs.TrainingJob(self, lambda job: _fit.run(self, setup, job), setup.epochs)
            job._start()
        except BaseException:
            self._guard.release()
            raise
        return job

    def _class_weighted(self, class_weight, y, sample_weight) -> np.ndarray:
        if not isinstance(class_weight, dict):
            raise TypeError(
                f"class_weight: expected a dict {{class: weight}}, got {class_weight!r}"
            )
        if y.ndim == 1:
            classes = y
        elif y.shape[1] > 1:
            classes = np.argmax(y, axis=1)
        else:
            classes = np.rint(y[:, 0]).astype(np.int64)
        weights = np.ones(len(y), self._np_dtype)
        for label, weight in class_weight.items():
            if not (isinstance(weight, (int, float, np.number)) and weight >= 0):
                raise ValueError(
                    f"class_weight: weight of class {label!r} must be >= 0, got {weight!r}"
                )
            weights[classes == label] = weight
        return weights if sample_weight is None else weights * sample_weight

    def _validation_data(self, data):
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise ValueError(
                "validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, sample_weight)"
            )
        weights = data[2] if len(data) == 3 else None
        return self._dataset(
            data[0],
            data[1],
            weights,
            ("validation_data[0]", "validation_data[1]", "validation_data[2]"),
        )

    def train_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """One training step on this batch. Returns its loss (with metrics: [loss, *metrics],
        or a dict with ``return_dict``); metrics cover this batch only."""
        self._require_compiled("train_on_batch")
        self._refuse_while_training("train_on_batch")
        x, y, sample_weight = self._dataset(x, y, sample_weight)
        n = x.shape[0]
        if n == 0:
            raise ValueError("x: empty batch")
        self._guard.claim("train_on_batch", self.name)
        try:
            plan = self._workspace("train", n).plan(n, sample_weight is not None)
            np.copyto(plan.x, x)
            np.copyto(plan.y, y)
            if sample_weight is not None:
                np.copyto(plan.sample_weight, sample_weight)
            self._reset_metrics()
            loss = self._train_step(plan)
            return self._result(self._logs(loss * n, n), return_dict)
        finally:
            self._guard.release()

    def _result(self, logs: dict, return_dict: bool):
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    # -- evaluation and prediction ------------------------------------------------------------
    def _evaluate_arrays(self, x, y, sample_weight, batch_size, hooks, progress) -> dict:
        """Mean loss (weighted by batch size, plus the weight penalty) and metrics over x."""
        self._reset_metrics()
        n = x.shape[0]
        if n == 0:
            return self._logs(0.0, 0)
        weighted = sample_weight is not None
        workspace = self._workspace("evaluate", min(batch_size, n))
        loss_total = 0.0
        for step, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            plan = workspace.plan(stop - start, weighted)
            if hooks is not None and hooks.batch_hooks["test"]:
                hooks.on_test_batch_begin(step, {})
            np.copyto(plan.x, x[start:stop])
            np.copyto(plan.y, y[start:stop])
            if weighted:
                np.copyto(plan.sample_weight, sample_weight[start:stop])
            for call in plan.forward:
                call()
            loss_total += plan.loss()[0] * plan.n
            for update in plan.metric_updates:
                update()
            if hooks is not None and hooks.batch_hooks["test"]:
                hooks.on_test_batch_end(step, self._logs(loss_total, stop))
            if progress is not None:
                progress.advance(lambda stop=stop, total=loss_total: self._logs(total, stop))
        logs = self._logs(loss_total, n)
        if self._regularization_norms:
            logs["loss"] += self._regularization_penalty()
        return logs

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        callbacks=None,
        return_dict=False,
    ):
        """The loss (and metrics) over ``x`` and ``y``: a float, [loss, *metrics], or a dict."""
        self._require_compiled("evaluate")
        self._refuse_from_other_threads("evaluate")
        batch_size = 32 if batch_size is None else _int_at_least(batch_size, 1, "batch_size")
        verbose = callbacks_module.resolve_verbose(verbose)
        x, y, sample_weight = self._dataset(x, y, sample_weight)
        steps = -(-x.shape[0] // batch_size)
        objects = list(callbacks or [])
        progress = None
        if verbose == 1:
            progress = callbacks_module.ProgbarLogger(verbose)
            objects.append(progress)
        params = {"verbose": verbose, "epochs": 1, "steps": steps, "mode": "evaluate"}
        hooks = callbacks_module.CallbackList(objects, self, params)
        hooks.on_test_begin()
        logs = self._evaluate_arrays(x, y, sample_weight, batch_size, hooks, progress)
        hooks.on_test_end(logs)
        return self._result(logs, return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (and metrics) of one batch, without training."""
        self._require_compiled("test_on_batch")
        self._refuse_from_other_threads("test_on_batch")
        x, y, sample_weight = self._dataset(x, y, sample_weight)
        return self._result(
            self._evaluate_arrays(x, y, sample_weight, max(1, x.shape[0]), None, None), return_dict
        )

    def _snapshot_weights(self, params: np.ndarray) -> list:
        """Per predict op, its weights as views into ``params`` (a snapshot), or None."""
        return [
            [
                params[o : o + size].reshape(shape)
                for o, size, shape in self._layer_slices[id(op.layer)]
            ]
            if op.has_weights
            else None
            for op in self._predict_ops
        ]

    def predict(self, x, batch_size=None, verbose=0, callbacks=None) -> np.ndarray:
        """The model's outputs for ``x``, (n, outputs), computed ``batch_size`` rows at a time
        (default 32). ``verbose=1`` shows a progress bar (default 0, unlike Keras's "auto",
        so that calls in a serving loop print nothing). Safe from several threads at once;
        while the model trains on another thread, it computes with the weights after some
        whole step (a snapshot copied between two steps)."""
        batch_size = 32 if batch_size is None else _int_at_least(batch_size, 1, "batch_size")
        x = self._inputs(x)
        verbose = callbacks_module.resolve_verbose(verbose)
        if verbose or callbacks:
            return self._predict_with_callbacks(x, batch_size, verbose, callbacks)
        return self._predict_arrays(x, batch_size, None, None)

    def _predict_with_callbacks(self, x, batch_size, verbose, callbacks):
        objects = list(callbacks or [])
        progress = None
        if verbose == 1:
            progress = callbacks_module.ProgbarLogger(verbose)
            objects.append(progress)
        steps = -(-x.shape[0] // batch_size)
        params = {"verbose": verbose, "epochs": 1, "steps": steps, "mode": "predict"}
        hooks = callbacks_module.CallbackList(objects, self, params)
        hooks.on_predict_begin()
        outputs = self._predict_arrays(x, batch_size, hooks, progress)
        hooks.on_predict_end()
        return outputs

    def _predict_arrays(self, x, batch_size, hooks, progress) -> np.ndarray:
        n = x.shape[0]
        if self._predict_chain is None:
            return x.copy()
        params, counted = self._guard.begin_read(self._params)
        try:
            chain = self._predict_chain
            if params is not self._params:  # training on another thread: a snapshot
                chain = inference_chain(self._predict_ops, self._snapshot_weights(params))
            if n <= batch_size and hooks is None:
                # one batch, the latency path: the kernel allocates the outputs (checking an
                # out= array against every weight would cost ~1 us of a 10 us batch-1 call)
                return chain(x)
            outputs = np.empty((n, self.output_dim), self._np_dtype)
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
        x = self._inputs(x)
        return self._predict_arrays(x, max(1, x.shape[0]), None, None)

    def predict_async(self, x, batch_size=None) -> jobs.AsyncFuture:
        """``predict`` on densekit's inference threads: returns at once a
        ``concurrent.futures.Future`` of the outputs that asyncio code can ``await``. ``x``
        is checked (and converted) now; do not change it until the future is done."""
        batch_size = 32 if batch_size is None else _int_at_least(batch_size, 1, "batch_size")
        x = self._inputs(x)
        return jobs.submit(self._predict_arrays, x, batch_size, None, None)

    # -- saving --------------------------------------------------------------------------
    def save(self, filepath, include_optimizer=True) -> None:
        """Write the model (config, weights, compile settings, optimizer state) to one file,
        atomically. Load it with ``densekit.load_model``."""
        from . import saving

        self._refuse_from_other_threads("save")
        saving.save_model(self, filepath, include_optimizer=include_optimizer)

    def save_weights(self, filepath) -> None:
        from . import saving

        self._refuse_from_other_threads("save_weights")
        saving.save_weights(self, filepath)

    def load_weights(self, filepath) -> None:
        from . import saving

        saving.load_weights(self, filepath)

    def __repr__(self) -> str:
        return f"<Sequential name={self.name!r} layers={len(self.layers)} built={self.built}>"


def _float_dtype(dtype, name: str) -> str:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {dtype!r}") from None
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {dtype!r}")
    return resolved.name
