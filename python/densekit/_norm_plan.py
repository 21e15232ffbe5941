"""Ops of the normalization and noise layers for the kernel-call plans (``_plan.py``).

Each op follows the plan's op protocol (``width``, ``activation``, ``has_weights``,
``forward``/``backward`` returning prebuilt calls on buffer views) and adds per-op scratch
buffers (``scratch``/``scratch_rows``: the batch statistics a backward pass needs) and, for
batch normalization in training, ``updates``: the moving-statistics update, which the
training state runs with the optimizer step (under the weight guard), not in the forward
pass. ``infer(x, weights)`` computes the op alone for ``predict`` (a new output array).
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from . import kernels
from .activations import Activation
from .layers import BatchNormalization, Flatten, GaussianNoise, LayerNormalization, Normalization

LINEAR = Activation("linear", None)


def _weights_by_name(layer, weights=None) -> dict:
    """The layer's weights by attribute: live, or from ``weights`` (a snapshot in spec order)."""
    attributes = [attr for attr, _, _ in layer.weight_specs]
    if weights is None:
        return {attr: getattr(layer, attr) for attr in attributes}
    return dict(zip(attributes, weights))


class _NormOp:
    needs_preact = False
    activation = LINEAR
    inference_weights = True  # predict passes the layer's weights (a snapshot) to infer

    def __init__(self, layer, width: int):
        self.layer, self.width = layer, width

    def scratch(self, shape, dtype) -> dict:
        return {}

    def scratch_rows(self, scratch: dict, n: int) -> dict:
        return scratch

    def updates(self, scratch: dict) -> list:
        return []

    def _gradient_options(self, dx, weight_grads) -> dict:
        """The need_*/..._out keywords of a normalization backward kernel: dx when asked for,
        dgamma and dbeta where the weight has a gradient view (absent, or its layer frozen,
        it is skipped)."""
        options = {"need_dx": dx is not None}
        if dx is not None:
            options["dx_out"] = dx
        for name, attribute in (("dgamma", "gamma"), ("dbeta", "beta")):
            view = None
            if self.has_weights and getattr(self.layer, attribute) is not None:
                view = weight_grads[self._grad_index(attribute)]
            options[f"need_{name}"] = view is not None
            if view is not None:
                options[f"{name}_out"] = view
        return options

    def _grad_index(self, attribute: str) -> int:
        return [attr for attr, _, _ in self.layer.weight_specs].index(attribute)


class BatchNormOp(_NormOp):
    """Batch normalization: batch statistics in training (saved in scratch for backward and
    for the moving update), moving statistics in inference or when the layer is frozen."""

    def __init__(self, layer: BatchNormalization, width: int, training: bool):
        super().__init__(layer, width)
        self.training = training and getattr(layer, "trainable", True)
        self.has_weights = self.training and (layer.scale or layer.center)

    def scratch(self, shape, dtype) -> dict:
        if not self.training:
            return {}
        return {"mean": np.zeros(shape[1], dtype), "variance": np.zeros(shape[1], dtype)}

    def forward(self, x, y, preact, scratch):
        layer = self.layer
        if self.training:
            return functools.partial(
                kernels.batch_norm_forward,
                x,
                layer.gamma,
                layer.beta,
                training=True,
                epsilon=layer.epsilon,
                out=y,
                mean_out=scratch["mean"],
                variance_out=scratch["variance"],
            )
        return functools.partial(
            kernels.batch_norm_forward,
            x,
            layer.gamma,
            layer.beta,
            layer.moving_mean,
            layer.moving_variance,
            training=False,
            epsilon=layer.epsilon,
            out=y,
        )

    def backward(self, dy, x, y, preact, dx, weight_grads, scratch):
        layer = self.layer
        if self.training:
            mean, variance = scratch["mean"], scratch["variance"]
        else:
            mean, variance = layer.moving_mean, layer.moving_variance
        options = self._gradient_options(dx, weight_grads)
        return functools.partial(
            kernels.batch_norm_backward,
            dy,
            x,
            layer.gamma,
            mean,
            variance,
            training=self.training,
            epsilon=layer.epsilon,
            **options,
        )

    def updates(self, scratch: dict) -> list:
        if not self.training:
            return []
        layer = self.layer
        return [
            functools.partial(
                kernels.batch_norm_update_moving,
                layer.moving_mean,
                layer.moving_variance,
                scratch["mean"],
                scratch["variance"],
                momentum=layer.momentum,
            )
        ]

    def infer(self, x, weights=None):
        w = _weights_by_name(self.layer, weights)
        return kernels.batch_norm_forward(
            x,
            w.get("gamma"),
            w.get("beta"),
            w["moving_mean"],
            w["moving_variance"],
            training=False,
            epsilon=self.layer.epsilon,
        )


class LayerNormOp(_NormOp):
    """Layer normalization; the rows' mean and 1/std go to scratch for backward."""

    def __init__(self, layer: LayerNormalization, width: int, training: bool):
        super().__init__(layer, width)
        self.has_weights = training and (layer.scale or layer.center)

    def scratch(self, shape, dtype) -> dict:
        return {"mean": np.zeros(shape[0], dtype), "inv_std": np.zeros(shape[0], dtype)}

    def scratch_rows(self, scratch: dict, n: int) -> dict:
        return {name: array[:n] for name, array in scratch.items()}

    def forward(self, x, y, preact, scratch):
        layer = self.layer
        return functools.partial(
            kernels.layer_norm_forward,
            x,
            layer.gamma,
            layer.beta,
            epsilon=layer.epsilon,
            out=y,
            mean_out=scratch["mean"],
            inv_std_out=scratch["inv_std"],
        )

    def backward(self, dy, x, y, preact, dx, weight_grads, scratch):
        layer = self.layer
        options = self._gradient_options(dx, weight_grads)
        return functools.partial(
            kernels.layer_norm_backward,
            dy,
            x,
            layer.gamma,
            scratch["mean"],
            scratch["inv_std"],
            **options,
        )

    def infer(self, x, weights=None):
        w = _weights_by_name(self.layer, weights)
        return kernels.layer_norm_forward(
            x, w.get("gamma"), w.get("beta"), epsilon=self.layer.epsilon
        )[0]


class NormalizationOp(_NormOp):
    """Keras's Normalization with its (adapted or constant) statistics; no trainable weights."""

    has_weights = False

    def _statistics(self, dtype, weights=None):
        layer = self.layer
        if weights:
            return weights[0], weights[1]
        return layer.statistics(np.dtype(dtype))

    def forward(self, x, y, preact, scratch):
        mean, variance = self._statistics(x.dtype)
        return functools.partial(
            kernels.normalization_forward, x, mean, variance, invert=self.layer.invert, out=y
        )

    def backward(self, dy, x, y, preact, dx, weight_grads, scratch):
        _, variance = self._statistics(dy.dtype)
        return functools.partial(
            kernels.normalization_backward, dy, variance, invert=self.layer.invert, out=dx
        )

    def infer(self, x, weights=None):
        mean, variance = self._statistics(x.dtype, weights)
        return kernels.normalization_forward(x, mean, variance, invert=self.layer.invert)


class GaussianNoiseOp(_NormOp):
    """y = x + stddev * N(0, 1) in training; the noise is drawn with NumPy from the layer's
    generator into a preallocated buffer, in the model's dtype (as DropoutOp draws its
    masks: a few whole-array calls per step). The gradient passes through unchanged."""

    has_weights = False
    inference_weights = False

    def scratch(self, shape, dtype) -> dict:
        return {"noise": np.zeros(shape, dtype)}

    def scratch_rows(self, scratch: dict, n: int) -> dict:
        return {"noise": scratch["noise"][:n]}

    def forward(self, x, y, preact, scratch):
        noise = scratch["noise"]
        dtype = noise.dtype
        standard_normal = self.layer.rng.standard_normal
        stddev = dtype.type(self.layer.stddev)
        add, multiply = np.add, np.multiply

        def forward():
            standard_normal(dtype=dtype, out=noise)
            multiply(noise, stddev, out=noise)
            add(x, noise, out=y)

        return forward

    def backward(self, dy, x, y, preact, dx, weight_grads, scratch):
        return functools.partial(np.copyto, dx, dy)


class FlattenOp(_NormOp):
    """A Flatten with ``data_format="channels_first"`` on samples of more axes: the first
    per-sample axis (the channels) moves last before flattening, as Keras does; a copy of
    whole samples (NumPy, one call each way). A Flatten of the data as it lies is no op (the
    next op reads a reshaped view)."""

    has_weights = False
    inference_weights = False
    whole_samples = True  # _place leaves rows_per_sample and input_width as set here

    def __init__(self, layer: Flatten, width: int):
        super().__init__(layer, width)
        self.rows_per_sample, self.input_width = 1, width
        channels, *rest = layer.input_sample_shape
        self._first, self._last = (channels, *rest), (*rest, channels)

    def _views(self, first, last):
        n = first.shape[0]
        return first.reshape(n, *self._first), last.reshape(n, *self._last)

    def forward(self, x, y, preact, scratch):
        source, target = self._views(x, y)
        return functools.partial(np.copyto, target, np.moveaxis(source, 1, -1))

    def backward(self, dy, x, y, preact, dx, weight_grads, scratch):
        target, source = self._views(dx, dy)
        return functools.partial(np.copyto, target, np.moveaxis(source, -1, 1))

    def infer(self, x, weights=None):
        source = x.reshape(x.shape[0], *self._first)
        return np.ascontiguousarray(np.moveaxis(source, 1, -1)).reshape(x.shape[0], -1)


def op_for(layer, width: int, training: bool):
    """The op of a normalization, noise or Flatten layer (None: the layer is skipped in
    this mode), or NotImplemented for any other layer."""
    if isinstance(layer, BatchNormalization):
        return BatchNormOp(layer, width, training)
    if isinstance(layer, LayerNormalization):
        return LayerNormOp(layer, width, training)
    if isinstance(layer, Normalization):
        return NormalizationOp(layer, width)
    if isinstance(layer, GaussianNoise):
        return GaussianNoiseOp(layer, width) if training and layer.stddev > 0 else None
    if isinstance(layer, Flatten):
        return FlattenOp(layer, layer.output_sample_shape[0]) if layer.moves_channels else None
    return NotImplemented


def _aligned_empty(shape, dtype) -> np.ndarray:
    """An array starting on a 64-byte cache line, as the model's weights do."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buffer = np.empty(size + 64 // dtype.itemsize, dtype)
    start = (-buffer.ctypes.data % 64) // dtype.itemsize
    return buffer[start : start + size].reshape(shape)


class FoldedBatchNormOp:
    """Inference of a Dense layer without activation followed by batch normalization (and
    an elementwise activation after it) as one DenseChain step: with s = gamma /
    sqrt(moving_variance + epsilon), the kernel becomes kernel * s and the bias (bias -
    moving_mean) * s + beta, computed in float64 and rounded once. So predict makes one
    product where it made a product and a normalization pass (equal to within the rounding
    of the folded weights). The folded arrays are made again by ``refresh(version)`` when the
    model's weight version or a layer's ``weights_generation`` has moved; from a snapshot of
    the weights they are made once."""

    has_weights = True
    needs_preact = False
    rows_per_sample = 1

    def __init__(self, dense_op, norm_op, activation, weights=None):
        self.dense, self.norm, self.activation = dense_op, norm_op, activation
        self.layer, self.width = dense_op.layer, norm_op.width
        self.input_width = dense_op.input_width
        self._lock = threading.Lock()
        self._key = None
        self._kernel = self._bias = None
        if weights is not None:
            self._fold(*weights)

    @staticmethod
    def fits(dense_op, norm_op) -> bool:
        return (
            getattr(dense_op, "inference_step", None) is not None
            and dense_op.activation.name == "linear"
            and isinstance(norm_op, BatchNormOp)
            and not norm_op.training
            and dense_op.rows_per_sample == norm_op.rows_per_sample == 1
        )

    def _fold(self, dense_weights, norm_weights) -> None:
        dense = self.dense.layer
        kernel = dense_weights[0] if dense_weights else dense.kernel
        bias = (dense_weights[1] if dense_weights else dense.bias) if dense.use_bias else None
        w = _weights_by_name(self.norm.layer, norm_weights)
        norm = self.norm.layer
        scale = 1.0 / np.sqrt(w["moving_variance"].astype(np.float64) + norm.epsilon)
        if w.get("gamma") is not None:
            scale = scale * w["gamma"]
        shift = -w["moving_mean"].astype(np.float64)
        if bias is not None:
            shift = shift + bias
        shift = shift * scale
        if w.get("beta") is not None:
            shift = shift + w["beta"]
        if self._kernel is None:
            self._kernel = _aligned_empty(kernel.shape, kernel.dtype)
            self._bias = _aligned_empty(shift.shape, kernel.dtype)
        np.multiply(kernel, scale, out=self._kernel, casting="same_kind")
        np.copyto(self._bias, shift, casting="same_kind")

    def refresh(self, version) -> None:
        """Fold the live weights again if they may have changed since (``version``: the
        model's weight version)."""
        key = (version, self.dense.layer.weights_generation, self.norm.layer.weights_generation)
        with self._lock:
            if key != self._key:
                self._fold(None, None)
                self._key = key

    def inference_step(self, weights=None):
        return (self._kernel, self._bias, self.activation.name, self.activation.alpha)


class Pipeline:
    """A model's inference when not all of it is one DenseChain call: runs of chainable ops
    on the same rows as one DenseChain each, the other ops' kernels in between, each segment
    on its rows of the samples (a reshaped view: see ``_plan``). Called like a DenseChain on
    (n, features) inputs; returns (n, outputs)."""

    def __init__(self, segments):
        # (DenseChain or op, weights snapshot or None, rows per sample, input width)
        self._segments = segments

    def __call__(self, x, out=None):
        n, last = x.shape[0], len(self._segments) - 1
        for i, (segment, weights, per_sample, width) in enumerate(self._segments):
            x = x.reshape(n * per_sample, width)
            target = None if out is None or i != last else out.reshape(x.shape[0], -1)
            if isinstance(segment, kernels.DenseChain):
                x = segment(x) if target is None else segment(x, out=target)
            else:
                x = segment.infer(x, weights)
                if target is not None:
                    np.copyto(target, x.reshape(target.shape))
                    x = target
        return x.reshape(n, -1)


def inference_pipeline(ops, weights):
    """A ``Pipeline`` of the inference ops, each op's weights live (None) or a snapshot."""
    segments, run = [], []

    def end_run():
        if run:
            first = run[0][0]
            chain = kernels.DenseChain([step for _, step in run])
            segments.append((chain, None, first.rows_per_sample, first.input_width))
            run.clear()

    for op, own in zip(ops, weights):
        if getattr(op, "inference_step", None):
            if run and run[0][0].rows_per_sample != op.rows_per_sample:
                end_run()
            run.append((op, op.inference_step(own)))
            continue
        end_run()
        snapshot = own if getattr(op, "inference_weights", False) else None
        segments.append((op, snapshot, op.rows_per_sample, op.input_width))
    end_run()
    return Pipeline(segments)
