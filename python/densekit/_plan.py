"""Kernel-call plans: a Sequential model turned into prebuilt calls on preallocated buffers.

The layers become *ops* (a Dense layer with no activation absorbs an Activation layer after
it; Dropout is an op only in training; a loss that absorbs the output activation takes the
last op's logits). A ``Workspace`` owns the buffers of one mode (train, evaluate) at one batch
capacity B; its ``plan(n)`` gives, for a batch of n <= B rows, the calls bound to views of the
first n rows of those buffers (still C-contiguous), made once per batch size and cached. A
training step is then: run the forward calls, the loss call, the backward calls, the
optimizer: no allocation, no lookups.

Shapes: every buffer is (rows, width); x is (n, features), op i writes acts[i] (n, width_i),
and in training grads[i] holds d(loss)/d(acts[i]). A model whose samples have more axes (an
Input (a, b, ...)) holds them flattened, (n, a * b * ...); an op that acts on the last axis of
per-sample inputs (a, b) sees n * a rows of b (``rows_per_sample`` = a): its input is a
reshaped view of the buffer before it, so a Flatten is no call at all (a view of the same
rows), and every op's buffers have n * rows_per_sample rows.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _norm_plan, kernels, mixed_precision
from .activations import NEEDS_PREACTIVATION, Activation
from .layers import Activation as ActivationLayer
from .layers import Dense, Dropout, ReLU

LINEAR = Activation("linear", None)


def _with_alpha(options: dict, activation: Activation) -> dict:
    if activation.alpha is not None:
        options["alpha"] = activation.alpha
    return options


class DenseOp:
    has_weights = True

    def __init__(self, layer: Dense, activation: Activation):
        self.layer, self.activation, self.width = layer, activation, layer.units
        self.needs_preact = activation.name in NEEDS_PREACTIVATION
        regularizer = layer.activity_regularizer
        # a penalty on the layer's output (acts of this op), None without one
        self.activity_regularizer = regularizer if regularizer and regularizer.active else None

    def with_activation(self, activation: Activation) -> DenseOp:
        return DenseOp(self.layer, activation)

    def inference_step(self, weights=None):
        """This layer as a DenseChain step, with the live weights or ``weights``
        ([kernel(, bias)])."""
        if weights is None:
            kernel, bias = self.layer.kernel, self.layer.bias
        else:
            kernel, bias = weights[0], weights[1] if len(weights) > 1 else None
        return (kernel, bias, self.activation.name, self.activation.alpha)

    def forward(self, x, y, preact):
        options = _with_alpha({"out": y}, self.activation)
        if preact is not None:
            options["preact_out"] = preact
        layer = self.layer
        return functools.partial(
            kernels.dense_forward, x, layer.kernel, layer.bias, self.activation.name, **options
        )

    def activation_options(self) -> dict:
        """``activation`` (and ``alpha`` where it has one) as a kernel's keywords."""
        return _with_alpha({"activation": self.activation.name}, self.activation)

    def backward_options(self, y, preact, dx, weight_grads) -> dict:
        """The keywords of a dense backward kernel: activation, the outputs wanted (a frozen
        weight has no gradient view, None: the kernel skips its product) and the
        derivative's input (preact or y)."""
        options = {"need_dx": dx is not None, **self.activation_options()}
        if dx is not None:
            options["dx_out"] = dx
        if weight_grads[0] is not None:
            options["dw_out"] = weight_grads[0]
        else:
            options["need_dw"] = False
        if self.layer.use_bias and weight_grads[1] is not None:
            options["db_out"] = weight_grads[1]
        else:
            options["need_db"] = False
        if self.activation.name != "linear":
            if self.needs_preact:
                options["preact"] = preact
            else:
                options["y"] = y
        return options

    def backward(self, dy, x, y, preact, dx, weight_grads):
        options = self.backward_options(y, preact, dx, weight_grads)
        return functools.partial(kernels.dense_backward, dy, x, self.layer.kernel, **options)


class Bf16DenseOp(DenseOp):
    """A Dense layer under "mixed_bfloat16": its products in bf16 (kernels.dense_forward_bf16
    / dense_backward_bf16), everything else float32. The layer's float32 kernel is rounded
    and packed into a ``Bf16Weights`` when ``weights_key()`` (the model's weight version)
    or the layer's ``weights_generation`` has moved since: once per optimizer step in
    training, once per change of the weights in inference."""

    inference_weights = True

    def __init__(self, layer: Dense, activation: Activation, weights_key):
        super().__init__(layer, activation)
        mixed_precision.check_bf16_speed()
        self.weights_key = weights_key
        self.with_transposed = False  # set when a backward call needs dx = dz @ w.T
        self._packed = None
        self._key = None
        self._snapshot = (None, None)  # (kernel snapshot, its Bf16Weights)

    def with_activation(self, activation: Activation) -> Bf16DenseOp:
        return Bf16DenseOp(self.layer, activation, self.weights_key)

    def packed(self):
        """The live kernel's Bf16Weights, packed again if the weights moved."""
        key = (self.weights_key(), self.layer.weights_generation)
        packed = self._packed
        if packed is None or packed.transposed != self.with_transposed:
            packed = self._packed = kernels.Bf16Weights(
                self.layer.kernel, transposed=self.with_transposed
            )
        elif key != self._key:
            packed.pack(self.layer.kernel)
        self._key = key
        return packed

    def forward(self, x, y, preact):
        options = {"out": y, **self.activation_options()}
        if preact is not None:
            options["preact_out"] = preact
        layer, packed, dense_forward_bf16 = self.layer, self.packed, kernels.dense_forward_bf16

        def forward():
            dense_forward_bf16(x, packed(), layer.bias, **options)

        return forward

    def backward(self, dy, x, y, preact, dx, weight_grads):
        options = self.backward_options(y, preact, dx, weight_grads)
        if dx is not None:
            self.with_transposed = True
        op, dense_backward_bf16 = self, kernels.dense_backward_bf16

        def backward():
            # the forward of this step packed the weights (with w.T where dx is needed)
            dense_backward_bf16(dy, x, op._packed, **options)

        return backward

    def _inference_weights(self, weights):
        """(Bf16Weights, bias) of the live weights (packed again if they moved) or of the
        snapshot ``weights`` ([kernel(, bias)])."""
        if weights is None:
            return self.packed(), self.layer.bias
        kernel, bias = weights[0], weights[1] if len(weights) > 1 else None
        held, packed = self._snapshot
        if held is not kernel:
            packed = kernels.Bf16Weights(kernel)
            self._snapshot = (kernel, packed)
        return packed, bias

    def inference_step(self, weights=None):
        """This layer as a DenseChain step (a bf16 step). With the live weights, the chain
        holds this op's Bf16Weights, which ``packed()`` packs again in place when they move
        (RefreshedChain calls it before each use)."""
        packed, bias = self._inference_weights(weights)
        return (packed, bias, self.activation.name, self.activation.alpha)

    def infer(self, x, weights=None):
        packed, bias = self._inference_weights(weights)
        return kernels.dense_forward_bf16(x, packed, bias, **self.activation_options())


class Int8DenseOp(DenseOp):
    """A Dense layer quantized to int8 (``Sequential.quantize``): kernels.dense_forward_int8
    with the layer's ``quantized_kernel``. Inference only. Its quantized weights are fixed
    (a snapshot of ``weights`` has nothing newer): in a chain, the step holds them."""

    inference_weights = True

    def inference_step(self, weights=None):
        """This layer as a DenseChain step (an int8 step), with its quantized weights."""
        layer = self.layer
        return (layer.quantized_kernel, layer.bias, self.activation.name, self.activation.alpha)

    def with_activation(self, activation: Activation) -> Int8DenseOp:
        return Int8DenseOp(self.layer, activation)

    def forward(self, x, y, preact):
        options = {"out": y, **self.activation_options()}
        layer, dense_forward_int8 = self.layer, kernels.dense_forward_int8

        def forward():
            dense_forward_int8(x, layer.quantized_kernel, layer.bias, **options)

        return forward

    def backward(self, dy, x, y, preact, dx, weight_grads):
        raise ValueError(
            f"fit: layer {self.layer.name!r} is int8-quantized (inference only: predict and "
            "evaluate); train the float32 model, then quantize it"
        )

    def infer(self, x, weights=None):
        options = self.activation_options()
        return kernels.dense_forward_int8(
            x, self.layer.quantized_kernel, self.layer.bias, **options
        )


def dense_op(layer: Dense, activation: Activation, training: bool, weights_key) -> DenseOp:
    """The op of a Dense layer for its dtype policy."""
    policy = layer.dtype_policy
    if policy.quantization_mode == "int8":
        return Int8DenseOp(layer, activation)
    if policy.compute_dtype == "bfloat16":
        return Bf16DenseOp(layer, activation, weights_key)
    return DenseOp(layer, activation)


class ActivationOp:
    has_weights = False
    needs_preact = False

    def __init__(self, layer, activation: Activation, width: int):
        self.layer, self.activation, self.width = layer, activation, width

    def inference_step(self, weights=None):
        return (None, None, self.activation.name, self.activation.alpha)

    def forward(self, x, y, preact):
        options = _with_alpha({"out": y}, self.activation)
        return functools.partial(kernels.activation_forward, x, self.activation.name, **options)

    def backward(self, dy, x, y, preact, dx, weight_grads):
        options = _with_alpha({"y": y, "z": x, "out": dx}, self.activation)
        return functools.partial(kernels.activation_backward, dy, self.activation.name, **options)


class ReluOp:
    """A ``ReLU`` layer whose parameters no fused activation computes (a threshold, a cap
    other than 6, a cap with a slope): ``relu_forward`` / ``relu_backward``, the derivative
    from the op's input."""

    has_weights = False
    needs_preact = False
    inference_weights = False

    def __init__(self, layer: ReLU, width: int):
        self.layer, self.width = layer, width
        self.activation = LINEAR
        self.parameters = {
            "max_value": layer.max_value,
            "negative_slope": layer.negative_slope,
            "threshold": layer.threshold,
        }

    def forward(self, x, y, preact):
        return functools.partial(kernels.relu_forward, x, out=y, **self.parameters)

    def backward(self, dy, x, y, preact, dx, weight_grads):
        return functools.partial(kernels.relu_backward, dy, x, out=dx, **self.parameters)

    def infer(self, x, weights=None):
        return kernels.relu_forward(x, **self.parameters)


class DropoutOp:
    """Inverted dropout: y = x * mask, mask = floor(u + 1 - rate) / (1 - rate) with u ~ U[0, 1)
    (1 / (1 - rate) where u >= rate, else 0).

    No dropout kernel exists yet: the mask is drawn with NumPy into preallocated buffers, in
    the model's dtype throughout so that no ufunc needs a casting buffer (a handful of
    whole-array calls per step, no Python loop)."""

    has_weights = False
    needs_preact = False

    def __init__(self, layer: Dropout, width: int):
        self.layer, self.width = layer, width
        self.activation = LINEAR

    def scratch(self, shape, dtype):
        return {"mask": np.empty(shape, dtype)}

    def forward(self, x, y, preact, scratch):
        mask = scratch["mask"]
        dtype = mask.dtype
        rng, keep = self.layer.rng, dtype.type(1.0 - self.layer.rate)
        scale = dtype.type(1.0 / (1.0 - self.layer.rate))
        random, add, floor, multiply = rng.random, np.add, np.floor, np.multiply

        def forward():
            random(dtype=dtype, out=mask)
            add(mask, keep, out=mask)
            floor(mask, out=mask)
            multiply(mask, scale, out=mask)
            multiply(x, mask, out=y)

        return forward

    def backward(self, dy, x, y, preact, dx, weight_grads, scratch):
        return functools.partial(np.multiply, dy, scratch["mask"], out=dx)


def fold_batch_norms(ops, weights, version=None):
    """``ops`` and their ``weights`` with each Dense (no activation) + inference batch norm
    (+ elementwise activation) replaced by a ``FoldedBatchNormOp``: live weights (weights
    None) folded at ``version``, snapshots folded at once."""
    new_ops, new_weights, i = [], [], 0
    while i < len(ops):
        op = ops[i]
        if i + 1 < len(ops) and _norm_plan.FoldedBatchNormOp.fits(op, ops[i + 1]):
            norm, activation, used = ops[i + 1], ops[i + 1].activation, 2
            after = ops[i + 2] if i + 2 < len(ops) else None
            if (
                isinstance(after, ActivationOp)
                and kernels.ACTIVATION_INFO[after.activation.name]["elementwise"]
                and after.rows_per_sample == 1
            ):
                activation, used = after.activation, 3
            live = weights[i] is None
            folded = _norm_plan.FoldedBatchNormOp(
                op, norm, activation, None if live else (weights[i], weights[i + 1])
            )
            if live:
                folded.refresh(version)
            new_ops.append(folded)
            new_weights.append(None)
            i += used
        else:
            new_ops.append(op)
            new_weights.append(weights[i])
            i += 1
    return new_ops, new_weights


class RefreshedChain:
    """A DenseChain on live weights that are not the layers' arrays themselves: folded
    weights (``_norm_plan.FoldedBatchNormOp``), int8 layers' ``QuantizedWeights`` (a new
    object whenever the layer's weights are set) and bf16 layers' ``Bf16Weights``. Called
    like the chain; ``refresh(version)`` folds and packs the live weights again where they
    moved, and makes the chain again when a layer holds other packed weights than it was
    made with."""

    def __init__(self, make, folded, low):
        self._make_chain, self._folded, self._low = make, folded, low
        self._chain, self._held = None, None  # made at the first use (bf16 weights pack then)

    def _current(self):
        return tuple(
            op.layer.quantized_kernel if isinstance(op, Int8DenseOp) else op.packed()
            for op in self._low
        )

    def refresh(self, version) -> None:
        for op in self._folded:
            op.refresh(version)
        held = self._current()
        if self._chain is None or any(a is not b for a, b in zip(held, self._held)):
            self._chain, self._held = self._make_chain(), held

    def __call__(self, x, out=None):
        if self._chain is None:
            self.refresh(None)
        return self._chain(x) if out is None else self._chain(x, out=out)


def inference_chain(ops, weights=None, version=None):
    """The inference ops as one kernel call where they chain (else a Pipeline), with the live
    weights or, per op, ``weights`` (a snapshot: [kernel(, bias)], or None for an op without
    weights). A Dense layer and the batch normalization after it fold into one step; with
    live weights, folded steps or int8 / bf16 layers, the result has ``refresh(version)``, to
    call before each use."""
    weights = weights or [None] * len(ops)
    ops, weights = fold_batch_norms(ops, weights, version)
    live = all(own is None for own in weights)
    folded = [op for op in ops if isinstance(op, _norm_plan.FoldedBatchNormOp)]
    # not chainable: normalization, ReluOp (a pipeline reads int8 and bf16 weights live)
    chainable = all(getattr(op, "inference_step", None) for op in ops)
    if not chainable or any(op.rows_per_sample != 1 for op in ops):
        pipeline = _norm_plan.inference_pipeline(ops, weights)
        return RefreshedChain(lambda: pipeline, folded, []) if folded and live else pipeline
    low = [op for op in ops if isinstance(op, (Int8DenseOp, Bf16DenseOp))]

    def chain():
        return kernels.DenseChain([op.inference_step(own) for op, own in zip(ops, weights)])

    return RefreshedChain(chain, folded, low) if (folded or low) and live else chain()


def _place(op, layer) -> None:
    """Set ``op.rows_per_sample`` and ``op.input_width`` from its layer's per-sample input
    shape (a, ..., b): a * ... rows of b features per sample (an op that acts on whole
    samples sets them itself)."""
    if getattr(op, "whole_samples", False):
        return
    shape = layer.input_sample_shape
    op.rows_per_sample = 1 if shape is None else math.prod(shape[:-1])
    op.input_width = None if shape is None else shape[-1]


def _always_new():
    return object()


def build_ops(layers, input_width: int, training: bool, absorbed: str | None, weights_key=None):
    """The ops of the model's layers; ``absorbed`` is the output activation the loss takes
    over (its kernel works on logits), or None. Returns None if the model does not end in
    that activation. ``weights_key()`` changes whenever the weights may have changed (the
    model's weight version; default: always), for ops that hold a converted copy of them."""
    weights_key = weights_key or _always_new
    ops: list = []
    width = input_width
    for layer in layers:
        if layer.input_sample_shape is not None:
            width = layer.input_sample_shape[-1]
        if isinstance(layer, Dense):
            ops.append(dense_op(layer, layer.activation, training, weights_key))
            width = layer.units
        elif isinstance(layer, ReLU) and layer.activation is None:
            ops.append(ReluOp(layer, width))
        elif isinstance(layer, ActivationLayer):
            if layer.activation.name == "linear":
                continue
            last = ops[-1] if ops else None
            if (
                isinstance(last, DenseOp)
                and last.activation.name == "linear"
                and last.activity_regularizer is None  # its penalty is on the Dense output
            ):
                ops[-1] = last.with_activation(layer.activation)
            else:
                ops.append(ActivationOp(layer, layer.activation, width))
        elif isinstance(layer, Dropout):
            if training and layer.rate > 0:
                ops.append(DropoutOp(layer, width))
        else:
            op = _norm_plan.op_for(layer, width, training)
            if op is not NotImplemented and op is not None:
                ops.append(op)
    for op in ops:
        _place(op, op.layer)
    if absorbed is not None:
        last = ops[-1] if ops else None
        if last is None or last.activation.name != absorbed:
            return None
        if last.rows_per_sample != 1:
            raise ValueError(
                f"loss: it takes the {absorbed} over each sample's outputs, but the model's "
                f"last {absorbed} acts on the last axis of {last.layer.name!r}'s per-sample "
                f"input {last.layer.input_sample_shape}, before a Flatten; apply the "
                f"{absorbed} after the Flatten, or use from_logits=True"
            )
        if isinstance(last, DenseOp):
            if last.activity_regularizer is not None:
                raise ValueError(
                    f"activity_regularizer: layer {last.layer.name!r} penalises its "
                    f"{absorbed} output, which the loss takes over (it works on logits); "
                    "put the activation in an Activation layer after it, or use a loss with "
                    "from_logits=True and a linear last layer"
                )
            ops[-1] = last.with_activation(LINEAR)
            _place(ops[-1], last.layer)
        else:
            ops.pop()
    return ops


def _with_penalties(kernel_loss, penalties):
    """``kernel_loss`` (a loss kernel call returning (value, grad)) with the activity
    penalties of the batch added to its value."""

    def loss_with_penalties():
        value, grad = kernel_loss()
        for penalty in penalties:
            value += penalty()
        return value, grad

    return loss_with_penalties


class Plan:
    """The calls and buffer views of one batch size (see the module docstring)."""

    __slots__ = (
        "backward",
        "buffer_calls",
        "forward",
        "loss",
        "metric_updates",
        "n",
        "output",
        "reading",
        "sample_weight",
        "updates",
        "x",
        "y",
    )

    def load(self, x, y, sample_weight=None, in_place: bool = False) -> None:
        """Take a batch of ``n`` rows: copy it into this plan's buffers, or, with
        ``in_place``, read a C-contiguous x of the plan's dtype and shape where it is: the
        first op's calls are bound to it (``reading``), as torch reads a tensor it is given,
        which saves the step the one large copy (800 KB for 256 rows of 784 float32). Only a
        caller that holds x unchanged until the step's calls have run may ask for it
        (``train_on_batch``, ``evaluate``: they return after them; not a batch of a source
        that a prefetching thread may fill again). Any other x is copied into the plan's
        buffer and the calls bound to it are used. Targets and sample weights are copied.

        Parameters
        ----------
        x, y : numpy.ndarray
            The inputs and targets, already of the plan's dtypes and shapes.
        sample_weight : numpy.ndarray or None
            The samples' weights; given exactly when the plan was made weighted.
        in_place : bool
            Read x where it is when its layout allows.
        """
        if (
            in_place
            and self.reading is not None
            and x.flags.c_contiguous
            and x.dtype == self.x.dtype
            and x.shape == self.x.shape
        ):
            self.forward, self.backward = self.reading(x)
        else:
            np.copyto(self.x, x)
            self.forward, self.backward = self.buffer_calls
        np.copyto(self.y, y)
        if sample_weight is not None:
            np.copyto(self.sample_weight, sample_weight)

    def gather(self, x, y, sample_weight, rows) -> None:
        """Gather the rows ``rows`` of a dataset into this plan's buffers (``take_rows``
        kernel, without the GIL).

        Parameters
        ----------
        x, y : numpy.ndarray
            The whole inputs and targets.
        sample_weight : numpy.ndarray or None
            The samples' weights; given exactly when the plan was made weighted.
        rows : numpy.ndarray
            ``n`` int64 row indices.
        """
        take_rows = kernels.take_rows
        take_rows(x, rows, out=self.x)
        take_rows(y, rows, out=self.y)
        if sample_weight is not None:
            take_rows(sample_weight, rows, out=self.sample_weight)
        self.forward, self.backward = self.buffer_calls


def first_weighted_op(ops, layer_grads=None) -> int | None:
    """The index of the first op with weights (backward stops there), or None; with
    ``layer_grads`` (see ``Workspace``), the first whose weights are trained (have a
    gradient view): the ops before it need no backward at all."""
    for i, op in enumerate(ops):
        if op.has_weights and (
            layer_grads is None or any(g is not None for g in layer_grads[id(op.layer)])
        ):
            return i
    return None


class Workspace:
    """Buffers of one mode ("train" or "evaluate") at one batch capacity, and their plans.

    ``layer_grads`` maps ``id(layer)`` to the gradient views the backward calls write;
    ``metrics`` are the metric objects the plans update, ``metric_weighted`` whether each is
    given the sample weights of a weighted plan; ``absorbed`` is the output activation the
    loss works on logits for (or None).
    """

    def __init__(
        self,
        ops,
        mode: str,
        capacity: int,
        *,
        dtype,
        input_width: int,
        output_width: int,
        target_template: np.ndarray,
        loss,
        absorbed: str | None,
        layer_grads: dict,
        metrics: list,
        metric_weighted: list | None = None,
    ):
        self.mode, self.capacity = mode, capacity
        self.layer_grads, self.metrics = layer_grads, metrics
        self.metric_weighted = metric_weighted or [False] * len(metrics)
        self.loss, self.absorbed = loss, absorbed
        self.training = mode == "train"
        self.ops = ops
        rows = capacity
        self.x = kernels.zeros((rows, input_width), dtype)
        self.y = kernels.zeros((rows, *target_template.shape[1:]), target_template.dtype)
        self.sample_weight = kernels.zeros(rows, dtype)
        self.acts, self.preacts, self.grads, self.scratch = [], [], [], []
        self.activity_scratch = []  # per op: the L1 activity penalty's sign buffer, or None
        first_trained = first_weighted_op(ops, layer_grads)
        for i, op in enumerate(self.ops):
            shape = (rows * op.rows_per_sample, op.width)
            self.acts.append(kernels.zeros(shape, dtype))
            keep_preact = self.training and op.needs_preact
            self.preacts.append(kernels.zeros(shape, dtype) if keep_preact else None)
            needs_grad = self.training and first_trained is not None and i >= first_trained
            self.grads.append(kernels.zeros(shape, dtype) if needs_grad else None)
            has_scratch = hasattr(op, "scratch")
            self.scratch.append(op.scratch(shape, dtype) if has_scratch else None)
            activity = getattr(op, "activity_regularizer", None)
            needs = activity is not None and activity.needs_scratch
            self.activity_scratch.append(kernels.zeros(shape, dtype) if needs else None)
        self.first_trained = first_trained
        # A trained mixed_bfloat16 first layer reads x twice a step (its forward's product,
        # and dw = x^T dz): on the register-tile paths x is rounded to bf16 once, into x16,
        # and both calls read that (the products round a float32 operand to the same bits,
        # so the results are the same). Not on the AMX path, where the extra pass over x cost
        # more than the two roundings it saves (csrc/lowp/README.md).
        self.x16 = None
        if (
            self.training
            and first_trained == 0
            and isinstance(ops[0], Bf16DenseOp)
            and np.dtype(dtype) == np.float32
            and kernels.bf16_config()["path"] != "amx"
        ):
            # ml_dtypes is imported where bf16 is first used: its import takes ~0.6 s,
            # three quarters of `import densekit`'s, which a float32 user need not pay
            import ml_dtypes

            shape = (rows * ops[0].rows_per_sample, ops[0].input_width)
            self.x16 = kernels.zeros(shape, ml_dtypes.bfloat16)
        self.probabilities = None
        if absorbed is not None and any(m.needs_probabilities for m in metrics):
            self.probabilities = kernels.zeros((rows, output_width), dtype)
        self._plans: dict[tuple[int, bool], Plan] = {}

    def plan(self, n: int, weighted: bool) -> Plan:
        """The plan for batches of ``n <= capacity`` rows, with or without sample weights
        (made once, then cached)."""
        key = (n, weighted)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(n, weighted)
        return plan

    @property
    def planned(self) -> set[tuple[int, bool]]:
        """The (rows, weighted) keys of the plans made so far."""
        return set(self._plans)

    def _make_plan(self, n: int, weighted: bool) -> Plan:
        loss = self.loss

        counts = [n * op.rows_per_sample for op in self.ops]  # each op's rows

        def rows(buffers):
            return [None if a is None else a[:count] for a, count in zip(buffers, counts)]

        def rows_of(scratch, count):
            return None if scratch is None else {k: v[:count] for k, v in scratch.items()}

        plan = Plan()
        plan.n = n
        plan.x, plan.y = self.x[:n], self.y[:n]
        plan.sample_weight = self.sample_weight[:n] if weighted else None
        acts = rows(self.acts)
        preacts = rows(self.preacts)
        grads = rows(self.grads)
        scratch = [
            op.scratch_rows(s, count) if hasattr(op, "scratch_rows") else rows_of(s, count)
            for op, s, count in zip(self.ops, self.scratch, counts)
        ]
        activity_scratch = rows(self.activity_scratch)
        # op i's input, and where its backward writes d(loss)/d(input): the buffers before
        # it, as its rows (a view: the same memory, reshaped; a Flatten between is no call)
        inputs = [
            before.reshape(count, op.input_width)
            for before, op, count in zip([plan.x, *acts[:-1]], self.ops, counts)
        ]
        x_rows, x16 = inputs[0], None  # x16: x rounded, read by the first layer's calls
        if self.x16 is not None:
            x16 = inputs[0] = self.x16[: counts[0]]
        input_grads = [None] + [
            None if before is None else before.reshape(count, op.input_width)
            for before, op, count in zip(grads[:-1], self.ops[1:], counts[1:])
        ]

        def forward_call(i, source):
            op = self.ops[i]
            if scratch[i] is not None:
                return op.forward(source, acts[i], None, scratch[i])
            return op.forward(source, acts[i], preacts[i])

        forward = [forward_call(i, source) for i, source in enumerate(inputs)]
        if x16 is not None:  # the step's first call rounds x into x16
            forward.insert(0, functools.partial(kernels.to_bfloat16, x_rows, out=x16))
        output = acts[-1].reshape(n, -1) if acts else plan.x  # flat samples
        plan.output = output

        options = {"reduction": loss.kernel_reduction, **loss.kernel_options()}
        if weighted:
            options["sample_weight"] = plan.sample_weight
        if self.training:
            options["grad_out"] = grads[-1].reshape(n, -1)
        else:
            options["compute_grad"] = False
        kernel_loss = functools.partial(loss.kernel, output, plan.y, **options)
        # activity penalties (Keras's: regularizer(output) / batch size) join the loss
        activity = [
            (i, op.activity_regularizer, activity_scratch[i])
            for i, op in enumerate(self.ops)
            if getattr(op, "activity_regularizer", None) is not None
        ]
        penalties = tuple(r.bind(acts[i], None, s, scale=1.0 / n) for i, r, s in activity)
        plan.loss = _with_penalties(kernel_loss, penalties) if penalties else kernel_loss
        # ... and their gradients join d(loss)/d(acts[i]) before op i's backward
        activity_grads = {
            i: r.bind(acts[i], grads[i], s, scale=1.0 / n, penalty=False)
            for i, r, s in activity
            if grads[i] is not None
        }

        def backward_call(i, source):
            op = self.ops[i]
            dx = input_grads[i] if i > self.first_trained else None
            args = (grads[i], source, acts[i], preacts[i], dx, self.layer_grads[id(op.layer)])
            if scratch[i] is not None:
                return op.backward(*args, scratch[i])
            return op.backward(*args)

        backward = []
        if self.training:
            for i in range(len(self.ops) - 1, self.first_trained - 1, -1):
                if i in activity_grads:
                    backward.append(activity_grads[i])
                backward.append(backward_call(i, inputs[i]))

        predictions, kind = output, "probabilities"
        metric_updates = []
        if self.absorbed is not None:
            kind = "logits"
            if self.probabilities is not None:
                predictions = self.probabilities[:n]
                metric_updates.append(
                    functools.partial(
                        kernels.activation_forward, output, self.absorbed, out=predictions
                    )
                )
        for metric, weighted in zip(self.metrics, self.metric_weighted):
            if metric.needs_probabilities:
                args = (plan.y, predictions, "probabilities")
            else:
                args = (plan.y, output, kind)
            if weighted and plan.sample_weight is not None:
                metric_updates.append(metric.bind(*args, sample_weight=plan.sample_weight))
            else:  # Keras's weighted metrics are unweighted on batches without weights
                metric_updates.append(metric.bind(*args))

        # state updates (moving statistics) that the training state runs with the optimizer
        plan.updates = tuple(
            call
            for op, s in zip(self.ops, scratch)
            if self.training and hasattr(op, "updates")
            for call in op.updates(s)
        )
        plan.forward = tuple(forward)
        plan.backward = tuple(backward)
        plan.buffer_calls = (plan.forward, plan.backward)
        plan.reading = None
        if self.ops:
            # the first op's calls on a caller's x (its rows as the op reads them); its
            # backward, when it has one, is the last backward call
            last_reads_x = self.training and self.first_trained == 0

            def reading(x):
                source = x.reshape(counts[0], self.ops[0].input_width)
                if x16 is not None:  # the first layer's calls read x16: round x into it
                    first = functools.partial(kernels.to_bfloat16, source, out=x16)
                    return (first, *plan.buffer_calls[0][1:]), plan.buffer_calls[1]
                calls = (forward_call(0, source), *plan.buffer_calls[0][1:])
                if not last_reads_x:
                    return calls, plan.buffer_calls[1]
                return calls, (*plan.buffer_calls[1][:-1], backward_call(0, source))

            plan.reading = reading
        plan.metric_updates = tuple(metric_updates)
        return plan
