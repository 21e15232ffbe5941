"""The training state of a compiled, built model, and the seams the training strategies use.

A ``TrainingState`` owns what a training step works on: the kernel-call plans and their
workspaces (``_plan.py``), the flat gradient buffer (laid out like the trainable prefix of the
flat parameter buffer, so that one optimizer kernel call updates every trained weight), the
optimizer bound to both buffers, the regularization and constraint calls and the metrics.
``Sequential`` makes one per compile and build; fit's loop (``_fit.py``), Hogwild!
(``_hogwild.py``: one ``replica`` per worker), saving and the benchmarks use it through the
methods below. A data-parallel strategy splits a step the same way: ``compute_gradients`` of
its slice of the batch into ``gradients`` (the one buffer to reduce across processes), then
``apply_gradients``; ``set_parameters`` and ``set_optimizer_state`` bring every process to the
same start.

Threads: during training ``apply_gradients`` is the only write to the parameters; it runs under
the model's weight guard (``_guard.py``), so readers on other threads see whole steps. Inside
``deferring_interrupts`` (a training on the main thread) a Ctrl-C that comes during an update is
raised after it, so that the weights, the optimizer state and its step count stay one step.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from . import kernels, optimizers
from . import metrics as metrics_module
from ._guard import WeightGuard
from ._interrupts import DeferredInterrupts
from ._plan import Plan, Workspace, build_ops, first_weighted_op

_BIG_NORM = 1e300  # clip_by_global_norm with this bound only measures the norm
_MAX_WORKSPACES = 8  # batch shapes kept at once; a ninth clears them


def _converted(x, dtype, name: str) -> np.ndarray:
    """``x`` as a C-contiguous array of ``dtype`` (itself when it is one)."""
    if not (isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous):
        if x is None:
            raise TypeError(f"{name}: expected an array of shape (samples, features), got None")
        if np.iscomplexobj(x):
            raise TypeError(f"{name}: expected real numbers, got complex values")
        try:
            x = np.ascontiguousarray(x, dtype=dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}: cannot convert to a {dtype} array ({error})") from None
    return x


def as_inputs(x, dtype, name: str = "x", sample_shape=None) -> np.ndarray:
    """``x`` as a C-contiguous 2-D array of ``dtype``: (samples, features), or (samples, a,
    b, ...) reshaped to (samples, a * b * ...) when ``sample_shape`` is ``(a, b, ...)``. No
    copy when it is one already (a C-contiguous array of that dtype: the reshape is a view).

    Parameters
    ----------
    x : array_like
        The inputs, (samples, features) or (samples, *sample_shape).
    dtype : numpy.dtype
        The model's dtype.
    name : str
        The argument's name in error messages.
    sample_shape : tuple of int or None
        The model's per-sample input shape (None: any, as long as ``x`` has at least two
        axes).

    Returns
    -------
    numpy.ndarray
        The converted inputs, (samples, features).

    Raises
    ------
    TypeError
        When ``x`` is None, complex or not convertible.
    ValueError
        When ``x`` has fewer than two axes, or other per-sample extents than ``sample_shape``.
    """
    x = _converted(x, dtype, name)
    if x.ndim < 2 or (sample_shape is not None and x.ndim != 1 + len(sample_shape)):
        if sample_shape is None or len(sample_shape) == 1:
            expected = "a 2-D array (samples, features)"
        else:
            extents = ", ".join(str(extent) for extent in sample_shape)
            expected = f"a {1 + len(sample_shape)}-D array (samples, {extents})"
        raise ValueError(f"{name}: expected {expected}, got shape {x.shape}")
    if sample_shape is not None and x.shape[1:] != tuple(sample_shape):
        expected = ", ".join(str(extent) for extent in ("n", *sample_shape))
        raise ValueError(f"{name}: expected shape ({expected}), got {x.shape}")
    return x if x.ndim == 2 else x.reshape(x.shape[0], -1)


def inputs_for(model, x, name: str = "x") -> np.ndarray:
    """``x`` converted for ``model`` (see ``as_inputs``), building the model from its shape
    if it is not built yet.

    Parameters
    ----------
    model : densekit.Sequential
        The model.
    x : array_like
        The inputs, (samples, features) or (samples, a, b, ...).
    name : str
        The argument's name in error messages.

    Returns
    -------
    numpy.ndarray
        The converted inputs, (samples, features): a view of ``x`` when it is C-contiguous
        and of the model's dtype.
    """
    if (
        type(x) is np.ndarray
        and x.ndim == 2
        and model.built
        and x.shape[1:] == model.input_sample_shape
        and x.dtype == model.dtype
        and x.flags.c_contiguous
    ):  # the model's inputs as they are (a batch-1 predict's latency: 1 us -> 0.3 us)
        return x
    x = _building(model, x, name)
    return as_inputs(x, np.dtype(model.dtype), name, model.input_sample_shape)


def _building(model, x, name: str) -> np.ndarray:
    """``x`` converted to the model's dtype (its shape kept), the model built from that
    shape if it is not built yet."""
    x = _converted(x, np.dtype(model.dtype), name)
    if not model.built and x.ndim >= 2:
        model.ensure_built((None, *x.shape[1:]))  # once, whichever thread comes first
    return x


def dataset_for(model, x, y, sample_weight=None, names=("x", "y", "sample_weight")):
    """``(x, y, sample_weight)`` converted for the compiled ``model``, building it from the
    shape of ``x`` if needed (see ``TrainingState.dataset``).

    Parameters
    ----------
    model : densekit.Sequential
        The compiled model.
    x, y : array_like
        Inputs and targets.
    sample_weight : array_like or None
        The samples' weights.
    names : tuple of str
        The three arguments' names in error messages.

    Returns
    -------
    tuple
        ``(x, y, sample_weight)``, C-contiguous arrays (``sample_weight`` may be None).
    """
    x = _building(model, x, names[0])  # converted once; dataset() checks and flattens it
    return model.training_state.dataset(x, y, sample_weight, names)


def _is_state_value(value) -> bool:
    """A number (not a bool) or an array: what a metric's running state is made of."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, float, np.integer, np.floating, np.ndarray))


class TrainingState:
    """Plans, workspaces, gradients, optimizer binding, regularization and metrics of a model.

    Parameters
    ----------
    layers : list of densekit.layers.Layer
        The model's built layers (without the Input), in order.
    parameters : numpy.ndarray
        The flat parameter buffer; each layer's weights are views into it.
    weight_slices : list of tuple
        ``(offset, size, shape)`` of each weight in ``parameters``, Keras's order.
    input_dim, output_dim : int
        The model's input and output widths (the input's flattened).
    input_shape : tuple of int or None
        The model's per-sample input shape (None: ``(input_dim,)``).
    loss : densekit.losses.Loss
        The compiled loss.
    optimizer : densekit.optimizers.Optimizer
        The compiled optimizer; it is bound here to ``parameters`` and the new gradient
        buffer (keeping its state if it was bound to ``parameters`` already).
    metric_identifiers : list
        The compiled metrics (names or objects).
    weighted_metric_identifiers : list
        The compiled weighted metrics: they see the batches' sample weights (with the class
        weights folded in), as Keras's ``weighted_metrics``.
    guard : WeightGuard
        The model's weight guard, taken around each optimizer step.
    check_finite : bool
        Whether ``train_step`` refuses a step whose loss or gradients are not finite (see
        ``refuse_non_finite``).
    trainable_parameters : numpy.ndarray or None
        The prefix of ``parameters`` holding the trained weights (the model lays them out
        first, the frozen ones after them), the part the optimizer updates; None: all of
        ``parameters``. Which weights are trained is read from the layers here, once (a
        later change of ``trainable`` takes effect with the next state, as Keras's takes
        effect at the next compile).

    Raises
    ------
    ValueError
        When the loss, the metrics and the model's last layer do not fit together.
    """

    def __init__(
        self,
        layers,
        parameters: np.ndarray,
        weight_slices,
        *,
        input_dim: int,
        output_dim: int,
        input_shape: tuple[int, ...] | None = None,
        loss,
        optimizer: optimizers.Optimizer,
        metric_identifiers,
        guard: WeightGuard,
        weighted_metric_identifiers=(),
        check_finite: bool = False,
        trainable_parameters: np.ndarray | None = None,
    ):
        self._layers = list(layers)
        self._trainable_parameters = (
            parameters if trainable_parameters is None else trainable_parameters
        )
        self._weight_trained = [
            layer.weight_is_trainable(attr)
            for layer in self._layers
            for attr, _, _ in layer.weight_specs
        ]
        trained_end = max(
            (o + size for (o, size, _), t in zip(weight_slices, self._weight_trained) if t),
            default=0,
        )
        if trained_end > self._trainable_parameters.size:
            raise ValueError(
                "trainable_parameters: the trained weights do not lie in it (lay the "
                "buffer out with the trainable weights first)"
            )
        self._pending_updates: tuple = ()  # the last batch's moving-statistics updates
        self.check_finite = bool(check_finite)
        self._parameters, self._weight_slices = parameters, list(weight_slices)
        self._input_dim, self._output_dim = input_dim, output_dim
        self._input_shape = (input_dim,) if input_shape is None else tuple(input_shape)
        self._dtype = parameters.dtype
        self._guard, self._locked = guard, True
        self.loss = loss
        self._weights_version = lambda: guard.version
        absorbed = None if loss.from_logits else loss.fused_activation
        self._ops = {}
        for mode in ("train", "evaluate"):
            ops = build_ops(
                self._layers, input_dim, mode == "train", absorbed, self._weights_version
            )
            if ops is None:
                raise ValueError(
                    f"loss: {type(loss).__name__}(from_logits=False) takes probabilities from a "
                    f"{absorbed} output, but the model's last layer is not a {absorbed}; end the "
                    f"model with activation='{absorbed}' or use from_logits=True"
                )
            self._ops[mode] = ops
        self._absorbed = absorbed
        # the metrics, then the weighted metrics; each builds its state for the output width
        lists = (("metrics", metric_identifiers), ("weighted_metrics", weighted_metric_identifiers))
        self.metrics, self.metric_weighted = [], []
        kinds = {"labels": "integer labels", "dense": "one target per output"}
        for argument, identifiers in lists:
            for identifier in identifiers:
                metric = metrics_module.get(identifier, loss, output_dim)
                if metric.target_kind != loss.target_kind:
                    raise ValueError(
                        f"{argument}: {metric.name!r} needs {kinds[metric.target_kind]}, but "
                        f"{loss.name} is given {kinds[loss.target_kind]}"
                    )
                metric.build(output_dim)
                self.metrics.append(metric)
                self.metric_weighted.append(argument == "weighted_metrics")
        # the logs' keys, as Keras names them (a repeated name gets _1, weighted_ ...)
        self.metric_keys = metrics_module.log_names(
            [metric.name for metric in self.metrics], self.metric_weighted
        )
        if loss.target_kind == "labels":
            self._target_template = np.zeros((0,), np.int64)
            if output_dim < 2:
                raise ValueError(
                    f"loss: {loss.name} needs at least 2 outputs, the model has {output_dim}"
                )
        else:
            self._target_template = np.zeros((0, output_dim), self._dtype)
        self._bind_gradients()
        self.optimizer = optimizer
        optimizer.build(self._trainable_parameters, self._gradients, self._trained_views())
        self._regularization_grads = self._regularization_calls()
        self._regularization_penalties = self._regularization_calls(with_gradients=False)
        self._constraints = self._constraint_calls()
        self._workspaces: dict[tuple[str, int], Workspace] = {}
        self._interrupts = DeferredInterrupts()  # active in a training on the main thread

    def _bind_gradients(self) -> None:
        """A new flat gradient buffer shaped like the trainable parameters, its views in
        Keras's order (None for a frozen weight), and each layer's views (by layer id)."""
        gradients = kernels.zeros(self._trainable_parameters.size, self._dtype)
        views = [
            gradients[o : o + size].reshape(shape) if trained else None
            for (o, size, shape), trained in zip(self._weight_slices, self._weight_trained)
        ]
        layer_grads, position = {}, 0
        for layer in self._layers:
            count = len(layer.weights)
            layer_grads[id(layer)] = views[position : position + count]
            position += count
        self._gradients, self._gradient_views, self._layer_grads = gradients, views, layer_grads

    def _trained_views(self) -> list[np.ndarray]:
        return [view for view in self._gradient_views if view is not None]

    def _trained_weights(self, pairs_of):
        """``(weight, its gradient view, item)`` for each ``(attribute, item)`` that
        ``pairs_of(layer)`` gives for a trained weight (layers without the method give
        none): Keras regularizes and constrains the trainable weights only."""
        for layer in self._layers:
            pairs = getattr(layer, pairs_of, None)
            if pairs is None:
                continue
            attributes = [attr for attr, _, _ in layer.weight_specs]
            views = dict(zip(attributes, self._layer_grads[id(layer)]))
            for attr, item in pairs():
                if views.get(attr) is not None:
                    yield getattr(layer, attr), views[attr], item

    def _regularization_calls(self, with_gradients: bool = True) -> list:
        """The weight regularizers' calls (``Regularizer.bind``): each returns its penalty
        and, ``with_gradients``, adds its gradient into this state's gradients; each has
        its own scratch (a replica makes its own)."""
        return [
            regularizer.bind(
                weight,
                view if with_gradients else None,
                np.empty_like(weight) if regularizer.needs_scratch else None,
            )
            for weight, view, regularizer in self._trained_weights("weight_regularizers")
        ]

    def _constraint_calls(self) -> list:
        """The weight constraints' in-place projections (``Constraint.bind``)."""
        return [
            constraint.bind(weight)
            for weight, _, constraint in self._trained_weights("weight_constraints")
        ]

    # -- buffers -------------------------------------------------------------------------
    @property
    def parameters(self) -> np.ndarray:
        """The flat parameter buffer (every weight is a view into it); write it with
        ``set_parameters``."""
        return self._parameters

    @property
    def gradients(self) -> np.ndarray:
        """The flat gradient buffer, laid out like ``trainable_parameters``:
        ``compute_gradients`` writes it, ``apply_gradients`` reads it (a data-parallel
        strategy reduces it in between)."""
        return self._gradients

    @property
    def trainable_parameters(self) -> np.ndarray:
        """The part of ``parameters`` the optimizer updates (all of it unless some layers
        are frozen): the trained weights, laid out first."""
        return self._trainable_parameters

    @property
    def has_trainable_weights(self) -> bool:
        """Whether a training step has any weight to update."""
        return any(view is not None for view in self._gradient_views)

    def set_parameters(self, values) -> None:
        """Copy ``values`` into the parameters, as one step (readers on other threads see
        the values before or after, never a mix).

        Parameters
        ----------
        values : numpy.ndarray
            A flat array of ``parameters.size`` values.
        """
        guard = self._guard
        with guard.lock:
            np.copyto(self._parameters, values, casting="same_kind")
            guard.version += 1

    def finalize_optimizer(self) -> None:
        """Keras's ``finalize_variable_values``, which ``fit`` runs when it ends: with
        ``use_ema`` the trainable parameters take the optimizer's moving average, as one step
        (nothing otherwise)."""
        final = self.optimizer.finalized_parameters()
        if final is None:
            return
        guard = self._guard
        with guard.lock:
            np.copyto(self._trainable_parameters, final)
            guard.version += 1

    def optimizer_state(self) -> tuple[int, dict[str, np.ndarray]]:
        """The optimizer's step count and state arrays (live, flat, shaped like the
        trainable parameters).

        Returns
        -------
        tuple of (int, dict)
            ``(iterations, {name: array})``.
        """
        return self.optimizer.iterations, dict(self.optimizer.variables)

    def set_optimizer_state(self, iterations: int, variables: dict) -> None:
        """Set the optimizer's step count and copy its state arrays.

        Parameters
        ----------
        iterations : int
            The step count.
        variables : dict
            ``{name: array}`` for exactly the optimizer's state names, each shaped like the
            trainable parameters.

        Raises
        ------
        ValueError
            When the names or shapes differ from the optimizer's.
        """
        own = self.optimizer.variables
        if sorted(variables) != sorted(own):
            raise ValueError(
                f"variables: expected {sorted(own)} for {type(self.optimizer).__name__}, "
                f"got {sorted(variables)}"
            )
        for name, target in own.items():
            if np.shape(variables[name]) != target.shape:
                raise ValueError(
                    f"variables[{name!r}]: expected shape {target.shape}, "
                    f"got {np.shape(variables[name])}"
                )
        for name, target in own.items():
            np.copyto(target, variables[name], casting="same_kind")
        self.optimizer.iterations = int(iterations)

    # -- data ----------------------------------------------------------------------------
    def dataset(self, x, y, sample_weight=None, names=("x", "y", "sample_weight")):
        """Check and convert a batch or dataset to the model's dtypes and shapes.

        Parameters
        ----------
        x : array_like
            Inputs, (n, input_dim) or (n, *input_shape).
        y : array_like
            Targets as the loss takes them.
        sample_weight : array_like or None
            One finite weight >= 0 per sample.
        names : tuple of str
            The three arguments' names in error messages.

        Returns
        -------
        tuple
            ``(x, y, sample_weight)``, C-contiguous arrays (``sample_weight`` may be None).
        """
        x = as_inputs(x, self._dtype, names[0], self._input_shape)
        n = x.shape[0]
        if y is None:
            raise TypeError(f"{names[1]}: the targets are missing")
        y = self.loss.prepare_target(y, n, self._output_dim, self._dtype, names[1])
        return x, y, self._sample_weights(sample_weight, n, names[2])

    def _sample_weights(self, sample_weight, n: int, name: str):
        if sample_weight is None:
            return None
        try:
            weights = np.ascontiguousarray(sample_weight, dtype=self._dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}: cannot convert to an array ({error})") from None
        if weights.shape != (n,):
            raise ValueError(
                f"{name}: expected one weight per sample, shape ({n},), got {weights.shape}"
            )
        if not np.all(np.isfinite(weights)) or (n and weights.min() < 0):
            raise ValueError(f"{name}: expected finite weights >= 0")
        return weights

    def class_weighted(self, class_weight, y, sample_weight) -> np.ndarray:
        """Each sample's weight times the weight of its class.

        Parameters
        ----------
        class_weight : dict
            ``{class: weight}``, finite weights >= 0; other classes weigh 1.
        y : numpy.ndarray
            Converted targets: labels, one-hot rows (the class is the argmax) or 0/1 targets.
        sample_weight : numpy.ndarray or None
            Converted sample weights.

        Returns
        -------
        numpy.ndarray
            One weight per sample.
        """
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
        weights = np.ones(len(y), self._dtype)
        largest = float(np.finfo(self._dtype).max)  # a larger weight becomes inf
        for label, weight in class_weight.items():
            if not (
                isinstance(weight, (int, float, np.integer, np.floating))
                and not isinstance(weight, bool)
                and 0 <= weight <= largest
            ):
                raise ValueError(
                    f"class_weight: weight of class {label!r} must be a finite number >= 0, "
                    f"got {weight!r}"
                )
            weights[classes == label] = weight
        return weights if sample_weight is None else weights * sample_weight

    # -- plans ---------------------------------------------------------------------------
    def workspace(self, mode: str, rows: int) -> Workspace:
        """The buffers for batches of up to ``rows`` rows.

        Parameters
        ----------
        mode : {"train", "evaluate"}
            Training (with backward calls) or evaluation buffers.
        rows : int
            The largest batch the workspace must hold.

        Returns
        -------
        Workspace
            An existing workspace of that mode that is big enough, else a new one (made
            once per batch shape); ``workspace.plan(n, weighted)`` gives the calls for a
            batch of ``n`` rows.
        """
        key = (mode, rows)
        workspace = self._workspaces.get(key)
        if workspace is None:
            for (other_mode, capacity), other in self._workspaces.items():
                if other_mode == mode and capacity >= rows:
                    return other
            if len(self._workspaces) >= _MAX_WORKSPACES:
                self._workspaces.clear()
            workspace = self._workspaces[key] = Workspace(
                self._ops[mode],
                mode,
                rows,
                dtype=self._dtype,
                input_width=self._input_dim,
                output_width=self._output_dim,
                target_template=self._target_template,
                loss=self.loss,
                absorbed=self._absorbed,
                layer_grads=self._layer_grads,
                metrics=self.metrics,
                metric_weighted=self.metric_weighted,
            )
        return workspace

    def load_batch(
        self, x, y, sample_weight=None, mode: str = "train", in_place: bool = False
    ) -> Plan:
        """Load one converted batch (see ``dataset``) into a plan of its size.

        Parameters
        ----------
        x, y : numpy.ndarray
            The batch's inputs and targets.
        sample_weight : numpy.ndarray or None
            Its weights.
        mode : {"train", "evaluate"}
            The plan's mode.
        in_place : bool
            Let the plan read x where it is (``Plan.load``): only for a caller that holds x
            unchanged until the plan's calls have run.

        Returns
        -------
        Plan
            The plan, holding the batch.
        """
        n = x.shape[0]
        plan = self.workspace(mode, n).plan(n, sample_weight is not None)
        plan.load(x, y, sample_weight, in_place)
        return plan

    # -- steps ---------------------------------------------------------------------------
    def compute_gradients(self, plan: Plan) -> float:
        """Forward, loss, backward and the weight penalties' gradients of the batch in
        ``plan``, into ``gradients``; the parameters are not changed.

        Parameters
        ----------
        plan : Plan
            A training plan of this state, its buffers holding the batch.

        Returns
        -------
        float
            The batch's loss (mean over its samples, plus the regularization penalties).
        """
        for call in plan.forward:
            call()
        loss = plan.loss()[0]
        for call in plan.backward:
            call()
        self._pending_updates = plan.updates
        for call in self._regularization_grads:
            loss += call()
        return loss

    def backward_segments(self, plan: Plan) -> list[tuple[int, int] | None]:
        """Where each backward call of ``plan`` writes in ``gradients``: for call i (in
        ``plan.backward``'s order, last layer first), the ``(start, stop)`` range of the flat
        buffer it completes, or None for a call without weights. A data-parallel strategy
        sends a range to the other processes as soon as its call has run.

        Parameters
        ----------
        plan : Plan
            A training plan of this state.

        Returns
        -------
        list
            One entry per backward call.
        """
        ops = self._ops["train"]
        first = first_weighted_op(ops, self._layer_grads)  # where backward stops
        segments = []
        base, itemsize = self._gradients.ctypes.data, self._gradients.itemsize
        for op in reversed(ops[first:]):
            views = self._layer_grads.get(id(op.layer), ()) if op.has_weights else ()
            trained = [view for view in views if view is not None]  # frozen weights: None
            if not trained:
                segments.append(None)
                continue
            starts = [(view.ctypes.data - base) // itemsize for view in trained]
            stops = [start + view.size for start, view in zip(starts, trained)]
            segments.append((min(starts), max(stops)))
        if len(segments) != len(plan.backward):
            raise ValueError("plan: not a training plan of this state")
        return segments

    def add_regularization(self) -> float:
        """Add the weight regularizers' gradients to ``gradients`` (once: a data-parallel
        strategy calls it after the reduction, on the global gradient) and return their
        penalty.

        Returns
        -------
        float
            The penalty of the current weights (0.0 without weight regularizers).
        """
        penalty = 0.0
        for call in self._regularization_grads:
            penalty += call()
        return penalty

    def apply_gradients(self, schedule_step: int | None = None) -> None:
        """One optimizer step over the flat buffers, from ``gradients``.

        Parameters
        ----------
        schedule_step : int or None
            The step at which a learning-rate schedule is evaluated (default: the
            optimizer's own count; Hogwild workers pass the global one).
        """
        guard = self._guard
        if self._locked:
            interrupts = self._interrupts
            # A Ctrl-C landing between the kernel and the count is raised after both.
            interrupts.deferring = interrupts.active
            try:
                with guard.lock:  # readers on other threads copy between two steps
                    self.optimizer.apply(schedule_step)
                    for constrain in self._constraints:  # Keras: after every update
                        constrain()
                    for update in self._pending_updates:  # moving statistics
                        update()
                    guard.version += 1
            finally:
                interrupts.deferring = False
            if interrupts.pending is not None:
                interrupts.deliver()
        else:  # a Hogwild replica: no lock, by design
            self.optimizer.apply(schedule_step)
            for constrain in self._constraints:
                constrain()
            for update in self._pending_updates:
                update()
            guard.version = guard.version + 1 if schedule_step is None else schedule_step + 1

    def deferring_interrupts(self) -> DeferredInterrupts:
        """A context manager for a block in which Ctrl-C (SIGINT) during an optimizer step
        is raised after the step, so that the update and its count are one (on the main
        thread; elsewhere no signal arrives and it does nothing). ``fit`` and
        ``train_on_batch`` train in one.

        Returns
        -------
        densekit._interrupts.DeferredInterrupts
            This state's (reusable, not re-entrant) context manager.
        """
        return self._interrupts

    def update_metrics(self, plan: Plan) -> None:
        """Add the batch in ``plan`` to the metrics.

        Parameters
        ----------
        plan : Plan
            A plan of this state whose forward calls have run.
        """
        for update in plan.metric_updates:
            update()

    def train_step(self, plan: Plan) -> float:
        """``compute_gradients``, ``apply_gradients`` and ``update_metrics``: kernel calls
        only, no allocation.

        Parameters
        ----------
        plan : Plan
            A training plan of this state, its buffers holding the batch.

        Returns
        -------
        float
            The batch's loss (before the update).
        """
        loss = self.compute_gradients(plan)
        if self.check_finite:
            self.refuse_non_finite(loss)
        self.apply_gradients()
        self.update_metrics(plan)
        return loss

    def refuse_non_finite(self, loss: float) -> None:
        """Raise if the step just computed would write NaN or inf into the model: its
        ``loss`` or its ``gradients`` (their global norm, one kernel pass) are not finite.
        Call it between ``compute_gradients`` and ``apply_gradients``: nothing is updated
        yet, so the weights, the optimizer state and its step count stay those of the last
        step.

        Parameters
        ----------
        loss : float
            The loss ``compute_gradients`` returned.

        Raises
        ------
        FloatingPointError
            When the loss or a gradient is NaN or infinite.
        """
        advice = (
            "; the step was refused before its update: the weights and the optimizer state "
            "are those of the last step (look for NaN or inf in the inputs, targets or "
            "weights, or lower the learning rate)"
        )
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss of the batch is not finite ({loss})" + advice)
        norm = kernels.clip_by_global_norm([self._gradients], _BIG_NORM)  # measures only
        if not math.isfinite(norm):
            raise FloatingPointError(
                f"the gradients of the batch are not finite (global norm {norm})" + advice
            )

    def batch_gradients(self, x, y, sample_weight=None) -> tuple[float, list[np.ndarray]]:
        """The loss of one batch in training mode and copies of its gradients, without
        updating anything (for tests and debugging).

        Parameters
        ----------
        x, y : array_like
            The batch.
        sample_weight : array_like or None
            Its weights.

        Returns
        -------
        tuple
            ``(loss, [gradient of each trainable weight, Keras's order])``.
        """
        plan = self.load_batch(*self.dataset(x, y, sample_weight), in_place=True)
        loss = self.compute_gradients(plan)
        return loss, [g.copy() for g in self._trained_views()]

    def regularization_penalty(self) -> float:
        """The weight regularizers' penalty of the current weights (0.0 without any)."""
        return sum(penalty() for penalty in self._regularization_penalties)

    # -- metrics and evaluation ------------------------------------------------------------
    def reset_metrics(self) -> None:
        """Start the metrics over."""
        for metric in self.metrics:
            metric.reset_state()

    def metric_states(self) -> list[dict]:
        """Each metric's running state (for a backup taken inside an epoch): its public
        attributes that hold numbers or arrays (a running mean's ``total`` and ``count``,
        the counts of the other metrics), arrays copied.

        Returns
        -------
        list of dict
            One ``{attribute: value}`` per metric, in ``metrics`` order.
        """
        return [
            {
                key: value.copy() if isinstance(value, np.ndarray) else value
                for key, value in vars(metric).items()
                if not key.startswith("_") and _is_state_value(value)
            }
            for metric in self.metrics
        ]

    def set_metric_states(self, states) -> None:
        """Put back what ``metric_states`` returned (arrays copied into the metrics' own,
        which their bound updates hold).

        Parameters
        ----------
        states : list of dict
            One ``{attribute: value}`` per metric.

        Raises
        ------
        ValueError
            When the states do not fit the metrics: another count, attribute, kind of value
            or array shape.
        """
        if len(states) != len(self.metrics):
            raise ValueError(
                f"states: expected {len(self.metrics)} metric states, got {len(states)}"
            )
        own = self.metric_states()
        for metric, values, current in zip(self.metrics, states, own):
            if set(values) != set(current):
                raise ValueError(
                    f"states: metric {metric.name!r} keeps {sorted(current)}, got {sorted(values)}"
                )
            for key, value in values.items():
                if isinstance(current[key], np.ndarray) != isinstance(value, np.ndarray) or (
                    isinstance(value, np.ndarray) and value.shape != current[key].shape
                ):
                    raise ValueError(f"states: metric {metric.name!r} {key}: {value!r}")
                if not _is_state_value(value):
                    raise ValueError(f"states: metric {metric.name!r} {key}: {value!r}")
        for metric, values in zip(self.metrics, states):
            for key, value in values.items():
                target = getattr(metric, key)
                if isinstance(target, np.ndarray):
                    np.copyto(target, value, casting="unsafe")
                else:
                    setattr(metric, key, value)

    def logs(self, loss_total: float, seen: int, prefix: str = "") -> dict:
        """The logs dict: the mean loss and each metric's result.

        Parameters
        ----------
        loss_total : float
            The sum of the batches' losses, each times its batch size.
        seen : int
            The samples seen (NaN loss when 0).
        prefix : str
            Put before every key (e.g. ``"val_"``).

        Returns
        -------
        dict
            ``{"loss": ..., metric key: ...}`` (see ``metric_keys``).
        """
        logs = {prefix + "loss": loss_total / seen if seen else float("nan")}
        for key, metric in zip(self.metric_keys, self.metrics):
            logs[prefix + key] = metric.result()
        return logs

    def evaluate(self, x, y, sample_weight, batch_size: int, hooks=None, progress=None) -> dict:
        """The mean loss (weighted by batch size, plus the regularization penalties) and
        metrics over a converted dataset.

        Parameters
        ----------
        x, y : numpy.ndarray
            Converted inputs and targets (see ``dataset``).
        sample_weight : numpy.ndarray or None
            Converted weights.
        batch_size : int
            Rows per kernel call.
        hooks : densekit.callbacks.CallbackList or None
            Gets the test batch hooks.
        progress : densekit.callbacks.ProgbarLogger or None
            Advanced once per batch.

        Returns
        -------
        dict
            The logs (see ``logs``).

        Raises
        ------
        ValueError
            When ``x`` has no samples.
        """
        self.reset_metrics()
        n = x.shape[0]
        if n == 0:
            raise ValueError("x: no samples to evaluate")
        weighted = sample_weight is not None
        workspace = self.workspace("evaluate", min(batch_size, n))
        batch_hooks = hooks is not None and hooks.batch_hooks["test"]
        loss_total = 0.0
        for step, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            plan = workspace.plan(stop - start, weighted)
            if batch_hooks:
                hooks.on_test_batch_begin(step, {})
            plan.load(
                x[start:stop],
                y[start:stop],
                sample_weight[start:stop] if weighted else None,
                in_place=True,
            )
            for call in plan.forward:
                call()
            loss_total += plan.loss()[0] * plan.n
            self.update_metrics(plan)
            if batch_hooks:
                hooks.on_test_batch_end(step, self.logs(loss_total, stop))
            if progress is not None:
                progress.advance(lambda stop=stop, total=loss_total: self.logs(total, stop))
        logs = self.logs(loss_total, n)
        if self._regularization_penalties:
            logs["loss"] += self.regularization_penalty()
        return logs

    # -- strategies ------------------------------------------------------------------------
    def replica(self) -> TrainingState:
        """A state for one more trainer of the same parameters (a Hogwild! worker).

        It shares the parameters, the ops and the weight guard, and has its own gradient
        buffer, optimizer (a copy, with this optimizer's state and step count), metrics
        (copies) and workspaces. Its ``apply_gradients`` takes no lock.

        Returns
        -------
        TrainingState
            The replica.
        """
        other = copy.copy(self)
        other._bind_gradients()
        optimizer = optimizers.deserialize(optimizers.serialize(self.optimizer))
        optimizer.build(self._trainable_parameters, other._gradients, other._trained_views())
        for name, state in self.optimizer.variables.items():
            np.copyto(optimizer.variables[name], state)
        optimizer.iterations = self.optimizer.iterations
        other.optimizer = optimizer
        other._regularization_grads = other._regularization_calls()
        other._regularization_penalties = other._regularization_calls(with_gradients=False)
        other._constraints = other._constraint_calls()  # scratch of its own
        other.metrics = [copy.copy(metric) for metric in self.metrics]
        other._workspaces = {}
        other._interrupts = DeferredInterrupts()  # never active: a replica takes no lock
        other._locked = False
        return other
