"""Model files: one .npz archive holding a JSON header and the arrays, written atomically.

Header (entry ``header``, UTF-8 JSON as uint8 bytes, so loading never unpickles): format and
version, the model config, the compile settings, the optimizer's iteration count and the
dropout generators' states. Arrays: ``weight.<i>`` in Keras's order and ``optimizer.<name>``
(flat state arrays). A file is written to a temporary file in the same directory, flushed to
disk and renamed over the target (``os.replace``), so an interrupted save leaves the previous
file intact. Anything unreadable raises ``ModelFileError`` (a ValueError) naming the file.

This module works on a model through its public interface and does not import
``models.py``: ``densekit.load_model`` (in ``models.py``) reads a file with
``read_model_file`` and fills a new ``Sequential`` with ``restore_model``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import NamedTuple

import numpy as np

from . import kernels
from . import layers as layers_module

FORMAT_VERSION = 1
MODEL_FORMAT = "densekit.model"
WEIGHTS_FORMAT = "densekit.weights"


class ModelFileError(ValueError):
    """A model or weights file is corrupt, of another format, or does not fit the model."""


def _write_atomically(path, header: dict, arrays: dict) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    entries = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)}
    entries.update(arrays)
    descriptor, temporary = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            np.savez(file, **entries)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _read(path, expected_format: str) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"filepath: no such file: {path!r}")
    try:
        with open(path, "rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an archive")
            with archive:
                arrays = {name: archive[name] for name in archive.files}
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (
        OSError,
        EOFError,
        zipfile.BadZipFile,
        KeyError,
        ValueError,
        UnicodeDecodeError,
    ) as error:
        raise ModelFileError(
            f"{path}: not a readable densekit file ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(header, dict) or header.get("format") not in (MODEL_FORMAT, WEIGHTS_FORMAT):
        raise ModelFileError(f"{path}: not a densekit model or weights file")
    if header.get("version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: written by a newer densekit (format version {header.get('version')})"
        )
    if expected_format == MODEL_FORMAT and header["format"] != MODEL_FORMAT:
        raise ModelFileError(f"{path}: holds weights only; use model.load_weights")
    return header, arrays


def _weight_arrays(model) -> dict:
    return {f"weight.{i}": w for i, w in enumerate(model.weights)}


def _check_and_set_weights(model, header: dict, arrays: dict, path) -> None:
    own = model.weights
    count = header.get("weight_count")
    if count != len(own):
        raise ModelFileError(f"{path}: holds {count} weight arrays, the model has {len(own)}")
    weights = []
    for i, target in enumerate(own):
        array = arrays.get(f"weight.{i}")
        if array is None:
            raise ModelFileError(f"{path}: weight {i} is missing")
        if array.shape != target.shape:
            raise ModelFileError(
                f"{path}: weight {i} ({_weight_name(model, i)}) has shape {array.shape}, "
                f"the model expects {target.shape}"
            )
        weights.append(array)
    model.set_weights(weights)


def _weight_name(model, index: int) -> str:
    names = [
        f"{layer.name}/{_attribute_of(layer, weight)}"
        for layer in model.layers
        for weight in layer.weights
    ]
    return names[index] if index < len(names) else "?"


def _attribute_of(layer, weight) -> str:
    """The attribute of ``layer`` that holds ``weight`` ("kernel", "bias")."""
    for attr in ("kernel", "bias"):
        if getattr(layer, attr, None) is weight:
            return attr
    return "?"


def _rng_states(model) -> dict:
    return {
        layer.name: layer.rng.bit_generator.state
        for layer in model.layers
        if isinstance(layer, layers_module.Dropout)
    }


def save_model(model, filepath, include_optimizer=True) -> None:
    """Save ``model`` (built) to ``filepath``; see the module docstring for the format."""
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
    """Read a file written by ``save_model``.

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
    header, arrays = _read(filepath, MODEL_FORMAT)
    config = header.get("model")
    if not isinstance(config, dict):
        raise ModelFileError(f"{filepath}: invalid model configuration (no model config)")
    return ModelFile(os.fspath(filepath), config, header, arrays)


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
    _check_and_set_weights(model, header, arrays, path)
    for layer in model.layers:
        state = header.get("rng_states", {}).get(layer.name)
        if state is not None and isinstance(layer, layers_module.Dropout):
            layer.rng.bit_generator.state = state
    settings = header.get("compile")
    if not (compile and settings):
        return
    model.compile_from_config(settings)
    saved = header.get("optimizer_state")
    if not saved:
        return
    training_state = model.training_state
    _, own = training_state.optimizer_state()
    if sorted(own) != saved["variables"]:
        raise ModelFileError(f"{path}: optimizer state does not match the optimizer")
    variables = {}
    for name, target in own.items():
        array = arrays.get(f"optimizer.{name}")
        if array is None or array.shape != target.shape:
            raise ModelFileError(f"{path}: optimizer state {name!r} is missing or misshapen")
        variables[name] = array
    training_state.set_optimizer_state(int(saved["iterations"]), variables)


def save_weights(model, filepath) -> None:
    """Save only the weights (Keras's order), atomically."""
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
    """Load weights saved by ``save_weights`` or ``save`` into a model of the same shapes."""
    header, arrays = _read(filepath, WEIGHTS_FORMAT)
    if not model.built:
        config = header.get("model")
        if config and config.get("input_dim"):
            model.build((None, config["input_dim"]))
        elif header.get("shapes"):
            model.build((None, header["shapes"][0][0]))
        else:
            raise ValueError("model: build the model before loading weights into it")
    _check_and_set_weights(model, header, arrays, filepath)
