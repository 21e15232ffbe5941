"""Keras 3 ``.keras`` files, both ways, for Sequential models of the layers in ``LAYERS``.

A ``.keras`` file is a zip of ``config.json`` (the model's config in Keras's serialization),
``metadata.json`` and ``model.weights.h5`` (HDF5: ``layers/<snake_case class>[_<k>]/vars/<i>``
per layer that holds variables, in Keras's variable order; h5py, imported only here and only
when a ``.keras`` file is read or written). Reading translates the file into densekit's own
model file contents (config, header, arrays), so ``load_model`` builds and restores the model
as for its own files; ``saving.py`` turns ``KerasFileError`` into its ``ModelFileError``.

Translation is driven by ``LAYERS`` (one entry per Keras layer class: the densekit class, the
densekit attributes of Keras's variables, value converters) and by the densekit classes'
constructor signatures: a Keras key the densekit class accepts is passed on; one it does not
accept must hold a value that means "off" (None, False, the inactive defaults in
``_INACTIVE``), else the file is refused naming the layer, the key and the value. A densekit
class that this build lacks is a ``ModelFileError`` listing the layers that are supported.

Reading is bounded as densekit's own files are: entry sizes are checked against the archive's
size (compressed entries may expand at most ``MAX_EXPANSION`` times), the config's size and
nesting are bounded, the weight shapes the config implies are checked against the weights
file's size before anything is built, and every HDF5 dataset must be a contiguous, stored,
uncompressed float array (no external files, links or virtual datasets) of the expected shape.
"""

from __future__ import annotations

import copy
import datetime
import importlib
import inspect
import io
import json
import os
import re
import stat
import warnings
import zipfile
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from . import _archive, activations, kernels
from . import layers as layers_module

KERAS_FORMAT_VERSION = "3.0.0"  # the Keras version whose file layout the writer follows
MAX_CONFIG_BYTES = _archive.MAX_HEADER_BYTES
MAX_EXPANSION = 20  # how many times its stored size a compressed entry may expand
MAX_ITERATIONS = 2**53  # the largest optimizer step count read (as densekit's own files)
MAX_INPUT_AXES = 32  # per-sample axes of an input read (densekit's own files allow as many)
# What building a layer from a translated config may raise when the config is wrong.
_CONFIG_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)
_CONFIG_ENTRY, _METADATA_ENTRY, _WEIGHTS_ENTRY = "config.json", "metadata.json", "model.weights.h5"


class Variable(NamedTuple):
    """A Keras variable of a layer: the densekit attribute holding it, or, for a variable
    densekit does not keep (``keras_only``), the dtype and value written for Keras;
    ``trainable``: whether Keras trains it (has optimizer slots for it)."""

    attribute: str
    keras_only: bool = False
    dtype: str = "float32"
    value: float = 0
    trainable: bool = True


class LayerMapping(NamedTuple):
    """How one Keras layer class maps to a densekit class of ``densekit.layers``."""

    densekit_class: str
    variables: tuple = ()  # Keras's variable order; a variable absent from the layer is skipped
    keras_keys: tuple = ()  # the config keys Keras's class takes (besides name/trainable/dtype)
    # key -> "activation" | "initializer" | "regularizer" | "constraint"
    converters: Mapping[str, str] = MappingProxyType({})


_INITIALIZER, _REGULARIZER, _CONSTRAINT = "initializer", "regularizer", "constraint"

# One entry per supported Keras layer class; a densekit class missing from this build makes
# the entry unusable (a clear error), not a crash.
LAYERS: dict[str, LayerMapping] = {
    "InputLayer": LayerMapping("InputLayer"),
    "Dense": LayerMapping(
        "Dense",
        (Variable("kernel"), Variable("bias")),
        (
            "units",
            "activation",
            "use_bias",
            "kernel_initializer",
            "bias_initializer",
            "kernel_regularizer",
            "bias_regularizer",
            "activity_regularizer",
            "kernel_constraint",
            "bias_constraint",
            "quantization_config",
            "lora_rank",
            "lora_alpha",
        ),
        {
            "activation": "activation",
            "kernel_initializer": _INITIALIZER,
            "bias_initializer": _INITIALIZER,
            "kernel_regularizer": _REGULARIZER,
            "bias_regularizer": _REGULARIZER,
            "activity_regularizer": _REGULARIZER,
            "kernel_constraint": _CONSTRAINT,
            "bias_constraint": _CONSTRAINT,
        },
    ),
    "Dropout": LayerMapping("Dropout", (), ("rate", "seed", "noise_shape")),
    "Activation": LayerMapping("Activation", (), ("activation",), {"activation": "activation"}),
    "BatchNormalization": LayerMapping(
        "BatchNormalization",
        (
            Variable("gamma"),
            Variable("beta"),
            Variable("moving_mean", trainable=False),
            Variable("moving_variance", trainable=False),
        ),
        (
            "axis",
            "momentum",
            "epsilon",
            "center",
            "scale",
            "beta_initializer",
            "gamma_initializer",
            "moving_mean_initializer",
            "moving_variance_initializer",
            "beta_regularizer",
            "gamma_regularizer",
            "beta_constraint",
            "gamma_constraint",
            "synchronized",
            "renorm",
            "renorm_clipping",
            "renorm_momentum",
        ),
        {
            "beta_initializer": _INITIALIZER,
            "gamma_initializer": _INITIALIZER,
            "moving_mean_initializer": _INITIALIZER,
            "moving_variance_initializer": _INITIALIZER,
            "beta_regularizer": _REGULARIZER,
            "gamma_regularizer": _REGULARIZER,
            "beta_constraint": _CONSTRAINT,
            "gamma_constraint": _CONSTRAINT,
        },
    ),
    "LayerNormalization": LayerMapping(
        "LayerNormalization",
        (Variable("gamma"), Variable("beta")),
        (
            "axis",
            "epsilon",
            "center",
            "scale",
            "rms_scaling",
            "beta_initializer",
            "gamma_initializer",
            "beta_regularizer",
            "gamma_regularizer",
            "beta_constraint",
            "gamma_constraint",
        ),
        {
            "beta_initializer": _INITIALIZER,
            "gamma_initializer": _INITIALIZER,
            "beta_regularizer": _REGULARIZER,
            "gamma_regularizer": _REGULARIZER,
            "beta_constraint": _CONSTRAINT,
            "gamma_constraint": _CONSTRAINT,
        },
    ),
    # Keras keeps the number of samples adapt has seen as a third (int32) variable
    "Normalization": LayerMapping(
        "Normalization",
        (
            Variable("mean", trainable=False),
            Variable("variance", trainable=False),
            Variable("count", True, "int32", 0, False),
        ),
        ("axis", "invert", "mean", "variance"),
    ),
    "Flatten": LayerMapping("Flatten", (), ("data_format",)),
    "GaussianNoise": LayerMapping("GaussianNoise", (), ("stddev", "seed")),
    "ReLU": LayerMapping("ReLU", (), ("max_value", "negative_slope", "threshold")),
    "Softmax": LayerMapping("Softmax", (), ("axis",)),
    "LeakyReLU": LayerMapping("LeakyReLU", (), ("negative_slope",)),
}

# Values of Keras keys that a densekit class without the key behaves as (beyond None and
# False): a flat (n, features) input's feature axis, the trainable default, ...
_INACTIVE = {
    "trainable": (True,),
    "axis": (-1, 1, [-1], [1]),
    "data_format": ("channels_last", "channels_first"),
}
# Keys that mean nothing while another key is off.
_ONLY_WITH = {
    "renorm_momentum": "renorm",
    "renorm_clipping": "renorm",
    "ema_momentum": "use_ema",
    "ema_overwrite_frequency": "use_ema",
}
# Keras's compile settings that densekit's compile does not take, with their "off" values.
_COMPILE_DEFAULTS = {
    "loss_weights": None,
    "weighted_metrics": None,
    "run_eagerly": False,
    "steps_per_execution": 1,
    "jit_compile": False,
    "auto_scale_loss": True,
}
# Keras's optimizer config keys per class (its constructors' arguments).
_OPTIMIZER_COMMON = (
    "name",
    "learning_rate",
    "weight_decay",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)
KERAS_OPTIMIZERS = {
    "SGD": ("momentum", "nesterov"),
    "Adam": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "AdamW": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "RMSprop": ("rho", "momentum", "epsilon", "centered"),
    "Nadam": ("beta_1", "beta_2", "epsilon"),
    "Adamax": ("beta_1", "beta_2", "epsilon"),
    "Adagrad": ("initial_accumulator_value", "epsilon"),
    "Lion": ("beta_1", "beta_2"),
}
# Keras's optimizer slot variables: per Keras class, per set of densekit state names (the
# optimizer's ``state_names()``, sorted), the groups of densekit states in Keras's order.
# Within a group the slots alternate per trained variable; the groups follow one another
# (Adam: m, v of each variable, then v_max of each; RMSprop: its velocity (densekit's
# square_avg) of each, then its momentum (velocity), then its average_gradient (grad_avg)).
# densekit's model layer keeps Keras's states (its rules are Keras's), so the numbers mean the
# same in both. Any other state (use_ema's average, gradient accumulation) is not carried
# across: the optimizer starts from a fresh state.
OPTIMIZER_SLOTS = {
    "SGD": {(): (), ("velocity",): (("velocity",),)},
    "Adam": {("m", "v"): (("m", "v"),), ("m", "v", "v_max"): (("m", "v"), ("v_max",))},
    "AdamW": {("m", "v"): (("m", "v"),), ("m", "v", "v_max"): (("m", "v"), ("v_max",))},
    "RMSprop": {
        ("square_avg",): (("square_avg",),),
        ("square_avg", "velocity"): (("square_avg",), ("velocity",)),
        ("grad_avg", "square_avg"): (("square_avg",), ("grad_avg",)),
        ("grad_avg", "square_avg", "velocity"): (("square_avg",), ("velocity",), ("grad_avg",)),
    },
    "Nadam": {("m", "v"): (("m", "v"),)},
    "Adamax": {("m", "u"): (("m", "u"),)},
    "Adagrad": {("accumulator",): (("accumulator",),)},
    "Lion": {("m",): (("m",),)},
}
# Keras's Nadam keeps one more variable after its slots: u_product, the product of its
# momentum schedule mu_1 ... mu_t. densekit's kernel computes that product from the step
# count in Keras's arithmetic, so reading only checks it; writing takes it from the optimizer.
_TRAILING_SCALARS = {"Nadam": 1}
# densekit activations Keras has no name for (its gelu is the exact form only).
_NO_KERAS_ACTIVATION = frozenset({"gelu_tanh"})


class KerasFileError(ValueError):
    """A .keras file is malformed or holds what densekit does not support (the message
    starts with the file's name)."""


def _error(path, message: str) -> KerasFileError:
    return KerasFileError(f"{path}: {message}")


def supported_layers() -> list[str]:
    """The Keras layer classes that this build of densekit reads and writes."""
    return sorted(name for name, m in LAYERS.items() if _densekit_layer(m) is not None)


def _densekit_layer(mapping: LayerMapping):
    cls = getattr(layers_module, mapping.densekit_class, None)
    return cls if isinstance(cls, type) and issubclass(cls, layers_module.Layer) else None


def _accepted_keys(cls) -> set[str]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up the classes."""
    keys: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        keys.update(p.name for p in parameters if p.kind is not p.VAR_KEYWORD and p.name != "self")
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return keys


def _is_inactive(key: str, value, config: dict) -> bool:
    if value is None or value is False or value in _INACTIVE.get(key, ()):
        return True
    return key in _ONLY_WITH and not config.get(_ONLY_WITH[key])


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + "..."


# -- Keras objects (initializers, regularizers, constraints, optimizers, losses, metrics) --
def _densekit_class(kind: str, class_name):
    """The class ``class_name`` of ``densekit.<kind>`` (None when there is none)."""
    try:
        module = importlib.import_module(f"densekit.{kind}")
    except ImportError:
        return None
    cls = getattr(module, class_name, None) if isinstance(class_name, str) else None
    return cls if isinstance(cls, type) else None


def _object_to_densekit(value, kind: str, path, where: str):
    """A Keras ``{"module", "class_name", "config", ...}`` object as densekit's
    ``{"class_name", "config"}``, keeping the keys densekit's class takes."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("config", {}), dict):
        raise _error(path, f"{where}: expected a Keras object config, got {_short(value)}")
    class_name = value.get("class_name")
    cls = _densekit_class(kind, class_name)
    if cls is None:
        raise _error(
            path, f"{where}: densekit has no {kind} class {class_name!r} (densekit.{kind})"
        )
    accepted = _accepted_keys(cls)
    config = dict(value.get("config") or {})
    kept = {}
    for key, item in config.items():
        if key in accepted:
            if isinstance(item, dict) and "class_name" in item:
                item = _object_to_densekit(item, "schedules", path, f"{where}.{key}")
            kept[key] = item
        elif not _is_inactive(key, item, config):
            raise _error(
                path,
                f"{where}: densekit's {kind} {class_name} does not support {key}={_short(item)}",
            )
    return {"class_name": class_name, "config": kept}


def _object_to_keras(value, kind: str):
    if not isinstance(value, dict):
        return value
    config = {
        key: _object_to_keras(item, "optimizers.schedules")
        if isinstance(item, dict) and "class_name" in item
        else item
        for key, item in value.get("config", {}).items()
        if not (key == "name" and item is None)  # Keras names its objects itself
    }
    return {
        "module": f"keras.{kind}",
        "class_name": value["class_name"],
        "config": config,
        "registered_name": None,
    }


# -- reading -----------------------------------------------------------------------------
def _open_zip(path: str):
    # O_NONBLOCK: a FIFO planted at the path must not block the open
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise _error(path, "not a regular file")
        file = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    try:
        return file, status.st_size, zipfile.ZipFile(file)
    except BaseException:
        file.close()
        raise


def _read_entry(archive: zipfile.ZipFile, size: int, name: str, limit: int, path) -> bytes:
    """Entry ``name``, refused when it claims more than ``limit`` bytes or expands more
    than ``MAX_EXPANSION`` times; never more than its declared size is read."""
    try:
        member = archive.getinfo(name)
    except KeyError:
        raise _error(path, f"not a Keras .keras file (no {name})") from None
    if member.file_size > limit or member.compress_size > size:
        raise _error(path, f"{name} claims {member.file_size} bytes (at most {limit})")
    if member.compress_type != zipfile.ZIP_STORED and member.file_size > MAX_EXPANSION * max(
        member.compress_size, 1
    ):
        raise _error(path, f"{name} expands {member.file_size} / {member.compress_size} times")
    with archive.open(member) as stream:
        data = stream.read(member.file_size + 1)
    if len(data) != member.file_size:
        raise _error(path, f"{name} is truncated")
    return data


def _parse_json(data: bytes, path, name: str):
    def refuse(text):
        raise _error(path, f"{name}: non-finite number {text}")

    def finite(text):
        value = float(text)
        if not np.isfinite(value):
            refuse(text[:40])
        return value

    text = data.decode("utf-8")
    depth = _archive.json_depth(text)
    if depth > _archive.MAX_JSON_DEPTH:
        raise _error(path, f"{name}: JSON nested {depth} deep (at most {_archive.MAX_JSON_DEPTH})")
    return json.loads(text, parse_float=finite, parse_constant=refuse)


def _model_dtype(policy, path, where: str) -> str | None:
    """The float dtype a Keras dtype (a name or a DTypePolicy config) stands for."""
    if policy is None:
        return None
    name = _policy_name(policy)
    if name == "mixed_bfloat16":
        return "float32"  # its variables
    if name not in ("float32", "float64"):
        raise _error(
            path,
            f"{where}: dtype {_short(name)} (densekit reads float32, float64 and "
            "mixed_bfloat16 layers; int8-quantized Keras layers are not read)",
        )
    return name


def _policy_name(policy):
    """The name of a Keras dtype (a name or a DTypePolicy config)."""
    if isinstance(policy, dict):
        config = policy.get("config") or {}
        if policy.get("class_name") == "QuantizedDTypePolicy":
            return f"{config.get('mode')}_from_{config.get('source_name')}"
        return config.get("name")
    return policy


def _layers_dtype(keras_layers: list, path) -> str | None:
    """The dtype of the first layer that names one (Keras computes in each layer's dtype;
    densekit in the model's, so every layer must agree with it)."""
    for index, layer in enumerate(keras_layers):
        config = layer.get("config") if isinstance(layer, dict) else None
        if isinstance(config, dict) and config.get("dtype") is not None:
            return _model_dtype(config["dtype"], path, f"layer {index}")
    return None


def _layer_to_densekit(layer_config, path, index: int, model_dtype):
    """A Keras layer config as a densekit one (checked against the table and the densekit
    class's constructor)."""
    where = f"layer {index}"
    if not isinstance(layer_config, dict) or not isinstance(layer_config.get("config"), dict):
        raise _error(path, f"{where}: expected a Keras layer config, got {_short(layer_config)}")
    class_name = layer_config.get("class_name")
    where = f"layer {index} ({class_name})"
    mapping = LAYERS.get(class_name) if isinstance(class_name, str) else None
    cls = None if mapping is None else _densekit_layer(mapping)
    if cls is None:
        raise _error(
            path,
            f"{where}: layer class {class_name!r} is not supported by this densekit "
            f"(supported: {', '.join(supported_layers())})",
        )
    config = layer_config["config"]
    dtype = _model_dtype(config.get("dtype"), path, where)
    if model_dtype is not None and dtype is not None and dtype != model_dtype:
        raise _error(path, f"{where}: dtype {dtype} differs from the model's {model_dtype}")
    name = config.get("name")
    if name is not None and not isinstance(name, str):
        raise _error(path, f"{where}: name {_short(name)} is not a string")
    if class_name == "InputLayer":
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        return {
            "class_name": "InputLayer",
            "config": {"name": name, "shape": _features(shape, path, where)},
        }
    accepted = _accepted_keys(cls)
    kept = {"name": name}
    if _policy_name(config.get("dtype")) == "mixed_bfloat16":
        kept["dtype"] = "mixed_bfloat16"
    for key, value in config.items():
        if key in ("name", "dtype"):
            continue
        converter = mapping.converters.get(key)
        if key in accepted:
            if converter == "activation":
                value = _activation_to_densekit(value, path, where)
            elif converter is not None:
                value = _object_to_densekit(value, f"{converter}s", path, f"{where}.{key}")
            kept[key] = value
        elif not _is_inactive(key, value, config):
            raise _error(
                path,
                f"{where}: densekit's {mapping.densekit_class} does not support "
                f"{key}={_short(value)}",
            )
    return {"class_name": mapping.densekit_class, "config": kept}


def _features(shape, path, where: str) -> list:
    """The per-sample shape of a Keras batch shape ``[None, a, b, ...]`` (extents known)."""
    if (
        not isinstance(shape, list)
        or not 2 <= len(shape) <= MAX_INPUT_AXES + 1
        or any(type(extent) is not int or extent < 1 for extent in shape[1:])
    ):
        raise _error(
            path,
            f"{where}: input shape {_short(shape)}; densekit models take (batch, features) or "
            f"(batch, a, b, ...) inputs of known extents (at most {MAX_INPUT_AXES} axes)",
        )
    return list(shape[1:])


def _activation_to_densekit(value, path, where: str):
    if isinstance(value, dict):  # a registered function: {"class_name": "function", ...}
        value = value.get("config")
    if value is not None and not isinstance(value, str):
        raise _error(path, f"{where}: activation {_short(value)}")
    try:
        return activations.serialize(activations.get(value))
    except ValueError as error:
        raise _error(path, f"{where}: {error}") from None


def compile_settings(header: dict, path) -> dict | None:
    """The compile settings of a Keras file (from the header ``read`` returned) as
    densekit's, or None when it has none; translated only when asked, so that
    ``compile=False`` loads a model whose settings densekit cannot take."""
    return _translate_compile(header.get("keras_compile"), path)


def _named(kind: str, name: str, path) -> dict:
    """The config of densekit's ``kind`` (optimizers, losses) called ``name``."""
    module = importlib.import_module(f"densekit.{kind}")
    try:
        return module.serialize(module.get(name))
    except ValueError as error:
        raise _error(path, f"{error} (load with compile=False)") from None


def _translate_compile(settings, path):
    """Keras's compile settings as densekit's (None when there are none)."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise _error(path, f"invalid compile_config {_short(settings)}")
    for key, value in settings.items():
        if key not in ("optimizer", "loss", "metrics", "weighted_metrics") and not (
            key in _COMPILE_DEFAULTS and value == _COMPILE_DEFAULTS[key]
        ):
            raise _error(
                path,
                f"compile_config: densekit's compile does not support {key}={_short(value)}"
                " (load with compile=False)",
            )
    optimizer = settings.get("optimizer")
    loss = settings.get("loss")
    if optimizer is None or loss is None:
        return None
    if isinstance(optimizer, dict):
        optimizer = _object_to_densekit(optimizer, "optimizers", path, "optimizer")
    elif isinstance(optimizer, str):
        optimizer = _named("optimizers", optimizer, path)
    else:
        raise _error(path, f"optimizer {_short(optimizer)}")
    if isinstance(loss, dict):
        loss = _object_to_densekit(loss, "losses", path, "loss")
    elif isinstance(loss, str):
        loss = _named("losses", loss, path)
    else:
        raise _error(path, f"loss {_short(loss)} (densekit models have one output)")
    translated = {"optimizer": optimizer, "loss": loss}
    for key in ("metrics", "weighted_metrics"):
        metrics = settings.get(key) or []
        if not isinstance(metrics, list):
            raise _error(path, f"{key} {_short(metrics)}")
        translated[key] = []
        for metric in metrics:
            if isinstance(metric, dict):
                metric = _object_to_densekit(metric, "metrics", path, "metric")
            elif not isinstance(metric, str):
                raise _error(path, f"metric {_short(metric)} (densekit models have one output)")
            translated[key].append(metric)
    if not translated["weighted_metrics"]:
        del translated["weighted_metrics"]  # as densekit's compile config leaves it out
    return translated


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "h5py: .keras files hold their weights in HDF5, read and written with h5py; "
            "install it with pip install 'densekit[keras]'"
        ) from None
    return h5py


def _snake_case(name: str) -> str:
    """Keras's ``to_snake_case`` of a class name (``LeakyReLU`` -> ``leaky_re_lu``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _variable_paths(class_names: list[str]) -> list[str]:
    """The weights file's group of each layer of a Sequential (InputLayer excluded)."""
    used: dict[str, int] = {}
    paths = []
    for class_name in class_names:
        name = _snake_case(class_name)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        paths.append(f"layers/{name}")
    return paths


def _hard_member(group, name: str, path, where: str):
    """``group[name]`` when it is a hard link (no soft or external links)."""
    h5py = _h5py()

    link = group.get(name, getlink=True)
    if link is None:
        raise _error(path, f"{where} is missing from {_WEIGHTS_ENTRY}")
    if not isinstance(link, h5py.HardLink):
        raise _error(path, f"{where}: {type(link).__name__} refused in {_WEIGHTS_ENTRY}")
    return group[name]


def _read_dataset(group, index: int, shape, path, where: str, kinds="f") -> np.ndarray:
    h5py = _h5py()

    dataset = _hard_member(group, str(index), path, where)
    if not isinstance(dataset, h5py.Dataset):
        raise _error(path, f"{where} is not a dataset")
    if dataset.shape != tuple(shape):
        raise _error(path, f"{where} has shape {dataset.shape}, the model expects {tuple(shape)}")
    dtype = dataset.dtype
    if dtype.kind not in kinds or dtype.itemsize not in (4, 8):
        raise _error(path, f"{where}: unexpected dtype {dtype}")
    if (
        dataset.compression is not None
        or dataset.chunks is not None
        or dataset.external
        or dataset.is_virtual
        or dataset.id.get_storage_size() != dataset.nbytes
    ):
        raise _error(path, f"{where}: only contiguous, uncompressed, stored data is read")
    return np.asarray(dataset[()])


def read(filepath) -> tuple[str, dict, dict, dict]:
    """Read a Keras 3 ``.keras`` file of a Sequential model into densekit's ``ModelFile``.

    Parameters
    ----------
    filepath : str or os.PathLike
        The file.

    Returns
    -------
    tuple
        ``(path, config, header, arrays)`` as densekit's model files hold them: the model's
        densekit config, the header (the Keras compile settings under ``keras_compile``,
        translated by ``compile_settings``) and the weights and optimizer state by entry
        name.

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    KerasFileError
        When the file is not a readable Keras file of a model densekit supports.
    """
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"filepath: no such file: {path!r}")
    try:
        file, size, archive = _open_zip(path)
    except KerasFileError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as error:
        raise _error(
            path, f"not a readable .keras file ({type(error).__name__}: {error})"
        ) from None
    with file, archive:
        try:
            return _read(archive, size, path)
        except KerasFileError:
            raise
        except (OSError, zipfile.BadZipFile, EOFError, UnicodeDecodeError, ValueError) as error:
            raise _error(
                path, f"not a readable .keras file ({type(error).__name__}: {error})"
            ) from None


def _read(archive, size, path) -> tuple[str, dict, dict, dict]:
    config = _parse_json(
        _read_entry(archive, size, _CONFIG_ENTRY, MAX_CONFIG_BYTES, path), path, _CONFIG_ENTRY
    )
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise _error(path, f"{_CONFIG_ENTRY} is not a Keras model config")
    if config.get("class_name") != "Sequential":
        raise _error(
            path,
            f"a {config.get('class_name')!r} model; densekit reads Keras Sequential models only",
        )
    inner = config["config"]
    keras_layers = inner.get("layers")
    if not isinstance(keras_layers, list) or not keras_layers:
        raise _error(path, "the model has no layers")
    dtype = _layers_dtype(keras_layers, path) or _model_dtype(inner.get("dtype"), path, "model")
    dtype = dtype or "float32"
    layer_configs = [_layer_to_densekit(c, path, i, dtype) for i, c in enumerate(keras_layers)]
    if any(c["class_name"] == "InputLayer" for c in layer_configs[1:]):
        raise _error(path, "an InputLayer can only be the first layer")
    if layer_configs[0]["class_name"] == "InputLayer":
        input_shape = tuple(layer_configs[0]["config"]["shape"])
    else:
        shape = inner.get("build_input_shape") or (config.get("build_config") or {}).get(
            "input_shape"
        )
        input_shape = tuple(_features(shape, path, "the model (not built in Keras?)"))
    made = []
    for i, layer_config in enumerate(layer_configs):
        try:
            made.append(layers_module.deserialize(layer_config))
        except _CONFIG_ERRORS as error:
            raise _error(path, f"layer {i} ({keras_layers[i]['class_name']}): {error}") from None
    body = [
        (i, layer) for i, layer in enumerate(made) if layer_configs[i]["class_name"] != "InputLayer"
    ]
    try:
        shapes = layers_module.weight_shapes([layer for _, layer in body], input_shape)
    except ValueError as error:
        raise _error(path, f"the layers do not fit the input shape ({error})") from None
    names = archive.namelist()
    weights_entry_size = archive.getinfo(_WEIGHTS_ENTRY).file_size if _WEIGHTS_ENTRY in names else 0
    needed = 4 * sum(_archive.product(shape) for shape in shapes)  # at 4 bytes a value, or more
    if needed > weights_entry_size:
        raise _error(
            path,
            f"the config implies {needed} bytes of weights, {_WEIGHTS_ENTRY} has "
            f"{weights_entry_size}",
        )
    weights_bytes = _read_entry(archive, size, _WEIGHTS_ENTRY, max(MAX_EXPANSION * size, 1), path)
    arrays, optimizer_state = _read_weights(
        weights_bytes, body, keras_layers, input_shape, config.get("compile_config"), path
    )
    model_config = {
        "name": inner.get("name") if isinstance(inner.get("name"), str) else "sequential",
        "dtype": dtype,
        "layers": layer_configs,
        "input_dim": _archive.product(input_shape),
    }
    if len(input_shape) > 1:
        model_config["input_shape"] = list(input_shape)
    if inner.get("trainable") is False:  # Keras's model-wide flag (the layers' came with them)
        model_config["trainable"] = False
    header = {
        "format": "keras",
        "weight_count": len(arrays),
        "compile": None,
        "keras_compile": config.get("compile_config"),
        "optimizer_state": None,
        "rng_states": {},
    }
    entries = {f"weight.{i}": a for i, a in enumerate(arrays)}
    if optimizer_state is not None:
        iterations, variables = optimizer_state
        header["optimizer_state"] = {"iterations": iterations, "variables": sorted(variables)}
        entries.update({f"optimizer.{name}": array for name, array in variables.items()})
    return path, model_config, header, entries


def _read_weights(data: bytes, body, keras_layers, input_shape: tuple, compile_config, path):
    """The densekit weights (model order) from the HDF5 weights file's bytes, and the
    optimizer state (``(iterations, {name: flat array})`` or None)."""
    h5py = _h5py()

    class_names = [keras_layers[i]["class_name"] for i, _ in body]
    arrays = []
    trained_shapes = []  # of the weights Keras trains, in its order (its optimizer's slots)
    same_split = True  # whether densekit trains exactly those
    with h5py.File(io.BytesIO(data), "r") as store:
        sample = input_shape  # each layer's per-sample input shape
        for (index, layer), group_path, class_name in zip(
            body, _variable_paths(class_names), class_names
        ):
            probe = copy.copy(layer)
            sample = probe.build_for(sample)
            specs = probe.weight_specs
            where = f"layer {index} ({class_name} {layer.name!r})"
            present = [
                v
                for v in LAYERS[class_name].variables
                if v.keras_only or any(attr == v.attribute for attr, _, _ in specs)
            ]
            unmapped = [attr for attr, _, _ in specs if attr not in {v.attribute for v in present}]
            if unmapped:
                raise _error(path, f"{where}: densekit weights {unmapped} have no Keras variable")
            layer_trained = keras_layers[index]["config"].get("trainable", True) is not False
            for variable in present:
                if variable.keras_only:
                    continue
                trained = layer_trained and variable.trainable
                same_split &= trained == probe.weight_is_trainable(variable.attribute)
                if trained:
                    trained_shapes.extend(s for a, s, _ in specs if a == variable.attribute)
            if not present:
                continue
            group = store
            for part in (*group_path.split("/"), "vars"):
                group = _hard_member(group, part, path, f"{group_path}/vars")
            if len(group) != len(present):
                raise _error(
                    path,
                    f"{where}: {len(group)} variables in {group_path}/vars, "
                    f"expected {len(present)}",
                )
            by_attribute = {}
            for k, variable in enumerate(present):
                variable_where = f"{group_path}/vars/{k} ({variable.attribute})"
                if variable.keras_only:
                    _read_dataset(group, k, (), path, variable_where, kinds="iuf")
                    continue
                shape = next(s for attr, s, _ in specs if attr == variable.attribute)
                by_attribute[variable.attribute] = _read_dataset(
                    group, k, shape, path, variable_where
                )
            arrays.extend(by_attribute[attr] for attr, _, _ in specs)
        optimizer = None
        if same_split and "optimizer" in store:
            optimizer = _read_optimizer(store, compile_config, trained_shapes, path)
    return arrays, optimizer


def _read_optimizer(store, compile_config, shapes: list, path):
    """The optimizer state in ``optimizer/vars`` when ``OPTIMIZER_SLOTS`` maps it (else
    None: the model is compiled with a fresh state)."""
    optimizer = (
        (compile_config or {}).get("optimizer") if isinstance(compile_config, dict) else None
    )
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("config"), dict):
        return None
    groups = OPTIMIZER_SLOTS.get(optimizer.get("class_name"), {}).get(
        _densekit_state_names(optimizer, path)
    )
    if groups is None:
        return None
    group = store
    for part in ("optimizer", "vars"):
        group = _hard_member(group, part, path, "optimizer/vars")
    first = 1 if isinstance(optimizer["config"].get("learning_rate"), dict) else 2
    names = [name for slots in groups for name in slots]
    trailing = _TRAILING_SCALARS.get(optimizer.get("class_name"), 0)
    # an optimizer Keras never built has no slots yet: densekit starts it fresh too
    if len(group) == first + len(names) * len(shapes) + trailing:
        iterations = _read_dataset(group, 0, (), path, "optimizer/vars/0", kinds="iu")
        if not 0 <= int(iterations) <= MAX_ITERATIONS:
            raise _error(path, f"optimizer iterations {int(iterations)}")
        index, pieces = first, {name: [] for name in names}
        for slots in groups:
            for shape in shapes:
                for name in slots:
                    where = f"optimizer/vars/{index} ({name})"
                    pieces[name].append(_read_dataset(group, index, shape, path, where).ravel())
                    index += 1
        for _ in range(trailing):
            value = _read_dataset(group, index, (), path, f"optimizer/vars/{index} (u_product)")
            if not 0 < float(value) <= 1:
                raise _error(path, f"optimizer/vars/{index}: u_product {float(value)}")
            index += 1
        flat = {
            name: np.concatenate(parts) if parts else np.zeros(0, np.float32)
            for name, parts in pieces.items()
        }
        return int(iterations), flat
    return None


def _densekit_state_names(optimizer: dict, path) -> tuple | None:
    """The sorted state names of the densekit optimizer a Keras optimizer config makes
    (None when densekit cannot make it: compiling will say why)."""
    try:
        translated = _object_to_densekit(optimizer, "optimizers", path, "optimizer")
        cls = _densekit_class("optimizers", translated["class_name"])
        return tuple(sorted(cls.from_config(translated["config"]).state_names()))
    except (KerasFileError, *_CONFIG_ERRORS):
        return None


# -- writing -----------------------------------------------------------------------------
def _dtype_policy(dtype: str) -> dict:
    return {
        "module": "keras",
        "class_name": "DTypePolicy",
        "config": {"name": dtype},
        "registered_name": None,
    }


def _activation_to_keras(value, where: str) -> str:
    name = activations.serialize(activations.get(value))
    if name in _NO_KERAS_ACTIVATION:
        raise ValueError(f"{where}: activation {name!r} has no Keras equivalent")
    return name


def _layer_to_keras(layer, dtype: str):
    """A densekit layer's Keras config and the mapping used."""
    class_name = type(layer).__name__
    mapping = LAYERS.get(class_name)
    where = f"layer {layer.name!r} ({class_name})"
    if mapping is None or mapping.densekit_class != class_name:
        raise ValueError(f"{where}: no Keras form (supported: {', '.join(supported_layers())})")
    config = layer.get_config()
    policy = layer.dtype_policy
    if policy.quantization_mode is not None:
        raise ValueError(
            f"{where}: int8-quantized; Keras's int8 layers quantize with another scale "
            "convention, so a .keras file would not predict the same: save the float model "
            "as .keras (and quantize after loading), or this one as .npz"
        )
    keras_config = {
        "name": layer.name,
        "trainable": bool(getattr(layer, "trainable", True)),
        "dtype": _dtype_policy(policy.name if policy.is_mixed else dtype),
    }
    for key, value in config.items():
        if key in ("name", "dtype", "input_shape", "input_dim", "trainable"):
            continue
        converter = mapping.converters.get(key)
        if key not in mapping.keras_keys:
            if _is_inactive(key, value, config):
                continue
            raise ValueError(f"{where}: {key}={_short(value)} has no Keras form")
        if converter == "activation":
            value = _activation_to_keras(value, where)
        elif converter is not None:
            value = _object_to_keras(value, f"{converter}s")
        keras_config[key] = value
    entry = {
        "module": "keras.layers",
        "class_name": class_name,
        "config": keras_config,
        "registered_name": None,
    }
    if mapping.variables:
        entry["build_config"] = {"input_shape": [None, *layer.input_sample_shape]}
    return entry


def _compile_to_keras(settings, filepath):
    """densekit's compile settings as Keras's; None (with a warning naming what) when Keras
    has no form for the optimizer. ``check_finite`` (densekit's own) is left out, with a
    warning."""
    if settings is None:
        return None
    if settings.get("check_finite"):
        warnings.warn(
            f"{filepath}: Keras has no check_finite; the .keras file leaves it out",
            UserWarning,
            stacklevel=4,
        )
    optimizer = settings["optimizer"]
    keys = KERAS_OPTIMIZERS.get(optimizer["class_name"])
    unknown = [] if keys is not None else [optimizer["class_name"]]
    config = {}
    for key, value in optimizer["config"].items():
        if keys is None or key in keys or key in _OPTIMIZER_COMMON:
            config[key] = value
        elif not _is_inactive(key, value, optimizer["config"]):
            unknown.append(f"{key}={_short(value)}")
    if unknown:
        warnings.warn(
            f"{filepath}: Keras's {optimizer['class_name']} has no form for "
            f"{', '.join(unknown)}; the .keras file is saved without compile settings",
            UserWarning,
            stacklevel=4,
        )
        return None
    return {
        "optimizer": _object_to_keras({**optimizer, "config": config}, "optimizers"),
        "loss": _object_to_keras(settings["loss"], "losses"),
        "metrics": [_object_to_keras(m, "metrics") for m in settings["metrics"]],
        "loss_weights": None,
        "weighted_metrics": [
            _object_to_keras(m, "metrics") for m in settings.get("weighted_metrics", [])
        ]
        or None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }


def _write_optimizer(store, model, body) -> None:
    """``optimizer/vars`` as Keras keeps them: the step count, the learning rate (unless
    it is a schedule), the slots ``OPTIMIZER_SLOTS`` maps, one per trainable weight (zeros
    before any training). A state it does not map gets no slots (Keras warns that it skips
    them and starts from a fresh state)."""
    optimizer = model.optimizer
    group = store.create_group("optimizer").create_group("vars")
    group.attrs["name"] = optimizer.name
    state = model.optimizer_state()
    iterations, variables = state if state is not None else (0, None)
    group.create_dataset("0", data=np.asarray(iterations, np.int64))
    index = 1
    if not isinstance(optimizer.get_config()["learning_rate"], dict):  # not a schedule
        group.create_dataset("1", data=np.asarray(optimizer.learning_rate, np.float32))
        index = 2
    names = tuple(sorted(optimizer.state_names()))
    groups = OPTIMIZER_SLOTS.get(type(optimizer).__name__, {}).get(names)
    # Keras's slots follow its trainable variables: densekit must train exactly those
    same_split = all(
        (layer.trainable and v.trainable) == layer.weight_is_trainable(v.attribute)
        for layer in body
        for v in LAYERS[type(layer).__name__].variables
        if not v.keras_only and getattr(layer, v.attribute, None) is not None
    )
    weights = model.trainable_weights
    offsets = np.cumsum([0] + [w.size for w in weights])
    if groups is None or not same_split:
        return
    if variables is not None and any(v.size != offsets[-1] for v in variables.values()):
        return  # trainable flags changed since the state was laid out (the next compile)
    for slots in groups:
        for i, weight in enumerate(weights):
            for name in slots:
                if variables is None:
                    value = np.zeros(weight.shape, weight.dtype)
                else:
                    value = variables[name][offsets[i] : offsets[i + 1]].reshape(weight.shape)
                group.create_dataset(str(index), data=value)
                index += 1
    if _TRAILING_SCALARS.get(type(optimizer).__name__):  # Nadam's u_product
        product = optimizer.momentum_product() if variables is not None else 1.0
        group.create_dataset(str(index), data=np.asarray(product, model.dtype))


def save(model, filepath) -> None:
    """Write ``model`` (built) as a Keras 3 ``.keras`` file, atomically.

    Raises
    ------
    ValueError
        When a layer, activation or setting of the model has no Keras form.
    """
    if not model.built:
        raise ValueError("model: build or fit the model before saving it")
    h5py = _h5py()
    dtype = model.dtype
    batch_shape = [None, *model.input_sample_shape]
    layers = list(model.layers)
    first_input = layers[0] if layers and isinstance(layers[0], layers_module.InputLayer) else None
    body = [layer for layer in layers if not isinstance(layer, layers_module.InputLayer)]
    input_entry = {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {
            "batch_shape": batch_shape,
            "dtype": dtype,
            "sparse": False,
            "ragged": False,
            "name": first_input.name if first_input is not None else "input_layer",
            "optional": False,
        },
        "registered_name": None,
    }
    entries = [input_entry] + [_layer_to_keras(layer, dtype) for layer in body]
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": model.name,
            "trainable": bool(model.trainable),
            "dtype": _dtype_policy(dtype),
            "layers": entries,
            "build_input_shape": batch_shape,
        },
        "registered_name": None,
        "build_config": {"input_shape": batch_shape},
        "compile_config": _compile_to_keras(model.get_compile_config(), filepath),
    }
    metadata = {
        "keras_version": KERAS_FORMAT_VERSION,
        "densekit_version": kernels.build_info()["version"],
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as store:
        store.create_group("vars").attrs["name"] = model.name
        layers_group = store.create_group("layers")
        for layer, group_path in zip(
            body, _variable_paths([type(layer).__name__ for layer in body])
        ):
            group = layers_group.create_group(group_path.split("/", 1)[1]).create_group("vars")
            group.attrs["name"] = layer.name
            index = 0
            for variable in LAYERS[type(layer).__name__].variables:
                if variable.keras_only:
                    value = np.asarray(variable.value, variable.dtype)
                else:
                    value = getattr(layer, variable.attribute, None)
                    if value is None:
                        continue
                group.create_dataset(str(index), data=np.asarray(value))
                index += 1
        if config["compile_config"] is not None:
            _write_optimizer(store, model, body)
    weights = buffer.getvalue()

    def write(file):
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(_METADATA_ENTRY, json.dumps(metadata))
            archive.writestr(_CONFIG_ENTRY, json.dumps(config))
            archive.writestr(_WEIGHTS_ENTRY, weights)

    _archive.write_file_atomically(filepath, write)
