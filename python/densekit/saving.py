"""Model files: one .npz archive holding a JSON header and the arrays, written atomically.

Header (entry ``header``, UTF-8 JSON as uint8 bytes, so loading never unpickles): format and
version, the model config, the compile settings, the optimizer's iteration count and the
dropout and noise generators' states. Arrays: ``weight.<i>`` in Keras's order and
``optimizer.<name>`` (flat state arrays, as long as the trainable weights together). A file is
written atomically (``_archive.py``: temporary file, flush, ``os.replace``; modes kept,
symbolic links followed), so an interrupted save leaves the previous file intact. A read checks
every header value (each config is rebuilt and must serialize back to exactly itself) and every
array's .npy header against the shapes the config implies before it reads data or builds
anything; anything wrong or unreadable raises ``ModelFileError`` (a ValueError) naming the
file.

This module works on a model through its public interface and does not import
``models.py``: ``densekit.load_model`` (in ``models.py``) reads a file with
``read_model_file`` and fills a new ``Sequential`` with ``restore_model``.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from typing import NamedTuple

import numpy as np

from . import _archive, kernels, losses, optimizers
from . import layers as layers_module
from . import metrics as metrics_module

FORMAT_VERSION = 1
MODEL_FORMAT = "densekit.model"
WEIGHTS_FORMAT = "densekit.weights"


class ModelFileError(ValueError):
    """A model or weights file is corrupt, of another format, or does not fit the model."""


def _is_keras_file(filepath, action: str) -> bool:
    """Whether ``filepath`` names a Keras ``.keras`` file. A legacy Keras HDF5 name (.h5,
    .hdf5) is refused, and a save (``action`` "save") takes only .npz and .keras names."""
    path = os.fspath(filepath)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".keras":
        return True
    if suffix in (".h5", ".hdf5"):
        message = (
            f"{path}: legacy Keras HDF5 (.h5) model files are not supported; "
            "use a .keras name (Keras 3's format) or .npz (densekit's)"
        )
        raise ModelFileError(message) if action == "load" else ValueError(f"filepath: {message}")
    if action == "save" and suffix != ".npz":
        raise ValueError(
            f"filepath: expected a name ending in .npz (densekit's format) or .keras "
            f"(Keras 3's), got {path!r}"
        )
    return False


def _keras(function: str, *args):
    """``function`` of the .keras reader and writer (imported on first use: it needs h5py,
    an extra), its KerasFileError raised as a ModelFileError."""
    from . import _keras_format

    try:
        return getattr(_keras_format, function)(*args)
    except _keras_format.KerasFileError as error:
        raise ModelFileError(str(error)) from None


MAX_ITERATIONS = 2**53  # the largest optimizer step count a file may hold
_MODEL_KEYS = {
    "format",
    "version",
    "densekit_version",
    "model",
    "weight_count",
    "compile",
    "optimizer_state",
    "rng_states",
}
_WEIGHTS_KEYS = {"format", "version", "weight_count", "shapes"}
# What building an object from a file's config may raise when the config is wrong.
_CONFIG_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError)


def _write_atomically(path, header: dict, arrays: dict) -> None:
    entries = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)}
    entries.update(arrays)
    _archive.write_atomically(path, entries)


def _existing(filepath) -> str:
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"filepath: no such file: {path!r}")
    return path


@contextlib.contextmanager
def _reading(path: str):
    """The archive at ``path``; any failure to read it becomes a ModelFileError."""
    try:
        with _archive.Archive(path) as archive:
            yield archive
    except ModelFileError:
        raise
    except _archive.ArchiveError as error:
        raise ModelFileError(f"{path}: {error}") from None
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise ModelFileError(
            f"{path}: not a readable densekit file ({type(error).__name__}: {error})"
        ) from None


def _expect(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise ModelFileError(f"{path}: {message}")


def _is_int(value, low: int, high: int | None = None) -> bool:
    return type(value) is int and value >= low and (high is None or value <= high)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _read_header(archive, path: str, expected_format: str) -> dict:
    """The JSON header, checked for format, version and keys (not yet their values)."""
    header = archive.json_header()
    _expect(
        isinstance(header, dict) and header.get("format") in (MODEL_FORMAT, WEIGHTS_FORMAT),
        path,
        "not a densekit model or weights file",
    )
    version = header.get("version")
    _expect(_is_int(version, 1), path, f"invalid format version {_short(version)}")
    _expect(
        version <= FORMAT_VERSION,
        path,
        f"written by a newer densekit (format version {version})",
    )
    if expected_format == MODEL_FORMAT:
        _expect(
            header["format"] == MODEL_FORMAT, path, "holds weights only; use model.load_weights"
        )
    keys = _MODEL_KEYS if header["format"] == MODEL_FORMAT else _WEIGHTS_KEYS
    _expect(
        set(header) == keys,
        path,
        f"invalid header: keys {sorted(header)}, expected {sorted(keys)}",
    )
    return header


def _plain(value):
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _same(a, b) -> bool:
    """JSON values equal in type and value (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def _from_config(config, deserialize, serialize, path: str, what: str):
    """The object ``deserialize(config)``, provided that it serializes back to exactly
    ``config``: the constructors check every value, the comparison every type and key."""
    try:
        made = deserialize(config)
        again = _plain(serialize(made))
    except _CONFIG_ERRORS as error:
        raise ModelFileError(
            f"{path}: invalid {what} {_short(config)} ({type(error).__name__}: {error})"
        ) from None
    _expect(_same(again, config), path, f"invalid {what} {_short(config)}")
    _expect(_names_are_strings(config), path, f"invalid {what}: a name that is not a string")
    return made


def _names_are_strings(config) -> bool:
    """Whether every ``name`` in a config (and the configs it holds) is a str or None."""
    if isinstance(config, list):
        return all(_names_are_strings(item) for item in config)
    if not isinstance(config, dict):
        return True
    name = config.get("name")
    return (name is None or isinstance(name, str)) and all(
        _names_are_strings(item) for item in config.values()
    )


_SEEDED_LAYERS = ("Dropout", "GaussianNoise")  # layers with a generator (``rng``)


def _layer_from_config(config, path: str, index: int):
    probe = config
    if isinstance(config, dict) and config.get("class_name") in _SEEDED_LAYERS:
        # an unseeded Dropout would draw its seed from the global generator: probe with 0
        inner = config.get("config")
        if isinstance(inner, dict) and inner.get("seed") is None and "seed" in inner:
            probe = {**config, "config": {**inner, "seed": 0}}
    layer = _from_config(
        probe, layers_module.deserialize, layers_module.serialize, path, f"layer {index}"
    )
    _expect(
        layer.dtype in (None, "float32", "float64"),
        path,
        f"invalid layer {index}: dtype {layer.dtype!r}",
    )
    return layer


class _Contents(NamedTuple):
    """What a checked header says the archive holds: weight shapes, optimizer state names."""

    shapes: list
    optimizer_names: list
    optimizer_size: int = 0  # elements of each optimizer state array (the trained weights)


def _check_model_header(header: dict, path: str) -> _Contents:
    """Check every value of a model file's header (types, ranges, consistency) without
    building anything large; return the weight and optimizer state shapes it implies."""
    _expect(isinstance(header["densekit_version"], str), path, "invalid densekit_version")
    config = header["model"]
    keys = {"name", "dtype", "layers", "input_dim"}
    _expect(
        isinstance(config, dict) and set(config) - {"trainable", "input_shape"} == keys,
        path,
        f"invalid model configuration (expected a dict with keys {sorted(keys)})",
    )
    _expect(isinstance(config["name"], str), path, "invalid model name")
    _expect(
        config["dtype"] in ("float32", "float64") and isinstance(config["dtype"], str),
        path,
        f"invalid model dtype {_short(config['dtype'])}",
    )
    input_dim = config["input_dim"]
    _expect(_is_int(input_dim, 1), path, f"invalid model input_dim {_short(input_dim)}")
    input_shape = _input_shape(config, path)
    configs = config["layers"]
    _expect(isinstance(configs, list) and configs, path, "invalid model layers")
    made = [_layer_from_config(c, path, i) for i, c in enumerate(configs)]
    for i, layer in enumerate(made):
        if isinstance(layer, layers_module.InputLayer):
            _expect(i == 0, path, f"invalid layer {i}: an Input can only be the first layer")
            _expect(
                layer.shape == input_shape,
                path,
                f"invalid model: the Input's shape {layer.shape} and the input shape {input_shape}",
            )
    body = [layer for layer in made if not isinstance(layer, layers_module.InputLayer)]
    _expect(bool(body), path, "invalid model: no layers")
    try:
        shapes = layers_module.weight_shapes(body, input_shape)
    except ValueError as error:
        raise ModelFileError(f"{path}: invalid model ({error})") from None
    count = header["weight_count"]
    _expect(_is_int(count, 0), path, f"invalid weight_count {_short(count)}")
    _expect(
        count == len(shapes),
        path,
        f"holds {count} weight arrays, the model has {len(shapes)}",
    )
    _check_rng_states(header["rng_states"], body, path)
    optimizer = _check_compile(header["compile"], path)
    saved = header["optimizer_state"]
    if saved is None:
        return _Contents(shapes, [])
    _expect(optimizer is not None, path, "optimizer state but no compile settings")
    _expect(
        isinstance(saved, dict) and set(saved) == {"iterations", "variables"},
        path,
        "invalid optimizer_state (expected a dict with keys iterations and variables)",
    )
    _expect(
        _is_int(saved["iterations"], 0, MAX_ITERATIONS),
        path,
        f"invalid optimizer iterations {_short(saved['iterations'])} "
        f"(expected an int in [0, {MAX_ITERATIONS}])",
    )
    names = sorted(optimizer.state_names())
    _expect(
        _same(saved["variables"], names),
        path,
        f"optimizer state {_short(saved['variables'])} does not match the optimizer's {names}",
    )
    trained = layers_module.weight_shapes(body, input_shape, trainable_only=True)
    return _Contents(shapes, names, sum(_archive.product(shape) for shape in trained))


def _input_shape(config: dict, path: str) -> tuple:
    """The per-sample input shape of a checked model config: ``input_shape`` (written for
    samples of more than one axis; its extents multiply to ``input_dim``), else
    ``(input_dim,)``."""
    input_dim = config["input_dim"]
    if "input_shape" not in config:
        return (input_dim,)
    shape = config["input_shape"]
    _expect(
        isinstance(shape, list)
        and 1 < len(shape) <= 32
        and all(_is_int(extent, 1) for extent in shape)
        and _archive.product(shape) == input_dim,
        path,
        f"invalid model input_shape {_short(shape)} (expected extents >= 1 multiplying to "
        f"input_dim {input_dim})",
    )
    return tuple(shape)


def _check_rng_states(states, body: list, path: str) -> None:
    dropouts = {layer.name: layer for layer in body if _is_seeded(layer)}
    _expect(
        isinstance(states, dict) and set(states) == set(dropouts),
        path,
        f"invalid rng_states (expected the states of the Dropout layers {sorted(dropouts)})",
    )
    for name, state in states.items():
        _expect(_is_pcg64_state(state), path, f"invalid rng state of {name!r}")
        generator = dropouts[name].rng.bit_generator
        try:
            generator.state = state
            again = _plain(generator.state)
        except _CONFIG_ERRORS as error:
            raise ModelFileError(
                f"{path}: invalid rng state of {name!r} ({type(error).__name__}: {error})"
            ) from None
        _expect(_same(again, state), path, f"invalid rng state of {name!r}")


def _is_pcg64_state(state) -> bool:
    """Whether ``state`` is a PCG64 state as ``bit_generator.state`` gives it."""
    return (
        isinstance(state, dict)
        and set(state) == {"bit_generator", "state", "has_uint32", "uinteger"}
        and state["bit_generator"] == "PCG64"
        and isinstance(state["state"], dict)
        and set(state["state"]) == {"state", "inc"}
        and all(_is_int(state["state"][key], 0, 2**128 - 1) for key in ("state", "inc"))
        and _is_int(state["has_uint32"], 0, 1)
        and _is_int(state["uinteger"], 0, 2**32 - 1)
    )


def _check_compile(settings, path: str):
    """The optimizer of valid compile settings (None when there are none)."""
    if settings is None:
        return None
    keys = {"optimizer", "loss", "metrics"}
    _expect(
        isinstance(settings, dict)
        and keys <= set(settings) <= keys | {"weighted_metrics", "check_finite"},
        path,
        f"invalid compile settings (expected a dict with keys {sorted(keys)}"
        " and, optionally, weighted_metrics and check_finite)",
    )
    _expect(
        settings.get("check_finite", True) is True,
        path,
        f"invalid check_finite {_short(settings.get('check_finite'))} (only true is written)",
    )
    optimizer = _from_config(
        optimizers.with_current_options(settings["optimizer"]),
        optimizers.deserialize,
        optimizers.serialize,
        path,
        "optimizer",
    )
    loss = _from_config(settings["loss"], losses.deserialize, losses.serialize, path, "loss")
    _expect(loss.reduction != "none", path, "invalid loss: reduction 'none'")
    for key in ("metrics", "weighted_metrics"):
        listed = settings.get(key, [])
        _expect(isinstance(listed, list), path, f"invalid {key}")
        for metric in listed:
            if isinstance(metric, str):
                try:
                    metrics_module.get(metric, loss)
                except _CONFIG_ERRORS as error:
                    raise ModelFileError(f"{path}: invalid metric ({error})") from None
            else:
                _from_config(
                    metric, metrics_module.deserialize, metrics_module.serialize, path, "metric"
                )
    return optimizer


def _check_weights_header(header: dict, path: str) -> list:
    """The weight shapes a weights file's header lists, checked."""
    count, shapes = header["weight_count"], header["shapes"]
    _expect(_is_int(count, 0), path, f"invalid weight_count {_short(count)}")
    _expect(
        isinstance(shapes, list)
        and len(shapes) == count
        and all(
            isinstance(shape, list) and all(_is_int(extent, 0) for extent in shape)
            for shape in shapes
        ),
        path,
        "invalid shapes (expected a list of weight_count lists of ints >= 0)",
    )
    return [tuple(shape) for shape in shapes]


def _array_infos(archive, path: str, shapes: list, describe) -> list:
    """The .npy headers of ``weight.<i>``, each checked against ``shapes[i]``."""
    infos = []
    for i, shape in enumerate(shapes):
        info = archive.info(f"weight.{i}")
        _expect(
            info.shape == tuple(shape),
            path,
            f"weight {i} ({describe(i)}) has shape {info.shape}, the model expects {tuple(shape)}",
        )
        infos.append(info)
    return infos


def _weight_arrays(model) -> dict:
    return {f"weight.{i}": w for i, w in enumerate(model.weights)}


def _weight_name(model, index: int) -> str:
    names = [
        f"{layer.name}/{_attribute_of(layer, weight)}"
        for layer in model.layers
        for weight in layer.weights
    ]
    return names[index] if index < len(names) else "?"


def _attribute_of(layer, weight) -> str:
    """The attribute of ``layer`` that holds ``weight`` ("kernel", "bias")."""
    for attr, _, _ in layer.weight_specs:
        if getattr(layer, attr, None) is weight:
            return attr
    return "?"


def _rng_states(model) -> dict:
    return {
        layer.name: layer.rng.bit_generator.state for layer in model.layers if _is_seeded(layer)
    }


def _is_seeded(layer) -> bool:
    return type(layer).__name__ in _SEEDED_LAYERS and hasattr(layer, "rng")


def save_model(model, filepath, include_optimizer=True) -> None:
    """Save ``model`` (built) to ``filepath``; see the module docstring for the format."""
    if _is_keras_file(filepath, "save"):
        _keras("save", model, filepath)
        return
    if not model.built:
        raise ValueError("model: build or fit the model before saving it")
    header = {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "densekit_version": kernels.build_info()["version"],
        "model": model.get_config(),
        "weight_count": len(model.weights),
        "compile": model.get_compile_config(),
        "optimizer_state": None,
        "rng_states": _rng_states(model),
    }
    arrays = _weight_arrays(model)
    optimizer_state = model.optimizer_state() if include_optimizer else None
    if optimizer_state is not None:
        iterations, variables = optimizer_state
        header["optimizer_state"] = {"iterations": iterations, "variables": sorted(variables)}
        for name, array in variables.items():
            arrays[f"optimizer.{name}"] = array
    _write_atomically(filepath, header, arrays)


class ModelFile(NamedTuple):
    """What a model file holds: ``config`` (the model's), ``header`` (everything else
    written, see the module docstring) and ``arrays`` (by entry name)."""

    path: str
    config: dict
    header: dict
    arrays: dict


def read_model_file(filepath) -> ModelFile:
    """Read a file written by ``save_model``, checking every header value and each array's
    shape (from its .npy header) before reading data or building anything.

    Parameters
    ----------
    filepath : str or os.PathLike
        The file.

    Returns
    -------
    ModelFile
        Its contents.

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    ModelFileError
        When it is not a readable densekit model file.
    """
    if _is_keras_file(filepath, "load"):
        return ModelFile(*_keras("read", filepath))
    path = _existing(filepath)
    with _reading(path) as archive:
        header = _read_header(archive, path, MODEL_FORMAT)
        contents = _check_model_header(header, path)
        infos = _array_infos(archive, path, contents.shapes, lambda i: "model config")
        total = contents.optimizer_size
        for name in contents.optimizer_names:
            info = archive.info(f"optimizer.{name}")
            _expect(
                info.shape == (total,),
                path,
                f"optimizer state {name!r} has shape {info.shape}, expected {(total,)}",
            )
            infos.append(info)
        names = [f"weight.{i}" for i in range(len(contents.shapes))]
        names += [f"optimizer.{name}" for name in contents.optimizer_names]
        arrays = {name: archive.read(info) for name, info in zip(names, infos)}
    return ModelFile(path, header["model"], header, arrays)


def restore_model(model, contents: ModelFile, compile=True) -> None:
    """Give ``model`` (made from ``contents.config``) the saved weights, dropout generator
    states and, with ``compile``, the compile settings and optimizer state.

    Parameters
    ----------
    model : densekit.Sequential
        A model made from the file's config.
    contents : ModelFile
        What ``read_model_file`` returned.
    compile : bool
        Whether to compile the model as saved.

    Raises
    ------
    ModelFileError
        When the file's weights or optimizer state do not fit the model.
    """
    path, header, arrays = contents.path, contents.header, contents.arrays
    own = model.weights
    _expect(
        header["weight_count"] == len(own),
        path,
        f"holds {header['weight_count']} weight arrays, the model has {len(own)}",
    )
    for i, target in enumerate(own):
        array = arrays.get(f"weight.{i}")
        _expect(
            array is not None and array.shape == target.shape,
            path,
            f"weight {i} ({_weight_name(model, i)}) is missing or misshapen",
        )
    model.set_weights([arrays[f"weight.{i}"] for i in range(len(own))])
    for layer in model.layers:
        state = header["rng_states"].get(layer.name)
        if state is not None and _is_seeded(layer):
            layer.rng.bit_generator.state = state
    settings = header["compile"]
    if compile and "keras_compile" in header:  # a Keras file's, translated only when asked
        settings = _keras("compile_settings", header, path)
    if not (compile and settings):
        return
    try:
        model.compile_from_config(settings)
    except _CONFIG_ERRORS as error:
        raise ModelFileError(f"{path}: invalid compile settings ({error})") from None
    saved = header["optimizer_state"]
    if not saved or len(model.output_sample_shape) > 1:
        return  # (outputs of more axes: the model predicts but has no loss to train with)
    training_state = model.training_state
    _, own_state = training_state.optimizer_state()
    _expect(
        sorted(own_state) == saved["variables"],
        path,
        "optimizer state does not match the optimizer",
    )
    variables = {}
    for name, target in own_state.items():
        array = arrays.get(f"optimizer.{name}")
        _expect(
            array is not None and array.shape == target.shape,
            path,
            f"optimizer state {name!r} is missing or misshapen",
        )
        variables[name] = array
    training_state.set_optimizer_state(saved["iterations"], variables)
    # a file written under torch's update rules: its momentum buffers in Keras's meaning
    for name, factor in optimizers.legacy_state_factors(
        settings["optimizer"], model.optimizer
    ).items():
        own_state[name] *= factor


def save_weights(model, filepath) -> None:
    """Save only the weights (Keras's order), atomically."""
    if os.path.splitext(os.fspath(filepath))[1].lower() in (".keras", ".h5", ".hdf5"):
        raise ValueError(
            f"filepath: save_weights writes densekit's .npz weights, not Keras's; got {filepath!r}"
        )
    if not model.built:
        raise ValueError("model: build or fit the model before saving its weights")
    header = {
        "format": WEIGHTS_FORMAT,
        "version": FORMAT_VERSION,
        "weight_count": len(model.weights),
        "shapes": [list(w.shape) for w in model.weights],
    }
    _write_atomically(filepath, header, _weight_arrays(model))


def load_weights(model, filepath) -> None:
    """Load weights saved by ``save_weights`` or ``save`` into a model of the same shapes
    (an unbuilt model is built for the file's input width); the file is checked as
    ``read_model_file`` checks it."""
    path = _existing(filepath)
    with _reading(path) as archive:
        header = _read_header(archive, path, WEIGHTS_FORMAT)
        if header["format"] == MODEL_FORMAT:
            stored = _check_model_header(header, path).shapes
            input_shape = _input_shape(header["model"], path)
        else:
            stored = _check_weights_header(header, path)
            input_shape = None
            if stored and not model.built:
                _expect(
                    len(stored[0]) == 2, path, f"weight 0 has shape {stored[0]}, not a kernel's"
                )
                input_shape = (stored[0][0],)
        if model.built:
            expected = [w.shape for w in model.weights]
        elif input_shape is None:
            expected = None
        else:
            expected = layers_module.weight_shapes(model.layers, input_shape)
        if expected is not None:
            _expect(
                len(stored) == len(expected),
                path,
                f"holds {len(stored)} weight arrays, the model has {len(expected)}",
            )
            infos = _array_infos(archive, path, expected, lambda i: _weight_name(model, i))
            for i, (info, shape) in enumerate(zip(infos, stored)):
                _expect(info.shape == shape, path, f"weight {i}: shape differs from the header's")
            arrays = [archive.read(info) for info in infos]
    if expected is None:
        raise ValueError("model: build the model before loading weights into it")
    if not model.built:
        model.build((None, *input_shape))
    model.set_weights(arrays)
