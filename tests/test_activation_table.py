"""The activation table (csrc/activation_table.hpp) against what is written beside it: the
stubs, the Python registry and the float64 references. Adding a row without them fails here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from densekit import activations, kernels

from . import reference

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "python" / "densekit" / "_core.pyi"


def activation_names_in(text: str) -> set[str]:
    """The table's activation names that `text` mentions as whole words (gelu is not found
    in gelu_tanh)."""
    return {name for name in kernels.ACTIVATIONS if re.search(rf"\b{name}\b", text)}


def stub_activation_literal(text: str) -> list[str]:
    """The names listed by the stubs' ``ActivationName = Literal[...]``, in order."""
    match = re.search(r"ActivationName = Literal\[(.*?)\]", text, re.DOTALL)
    assert match, "_core.pyi declares no ActivationName Literal"
    return re.findall(r'"(\w+)"', match.group(1))


def test_table_and_info_agree():
    assert list(kernels.ACTIVATION_INFO) == list(kernels.ACTIVATIONS)
    assert len(set(kernels.ACTIVATIONS)) == len(kernels.ACTIVATIONS)
    for name, info in kernels.ACTIVATION_INFO.items():
        assert set(info) == {
            "alpha",
            "needs_preactivation",
            "derivative_from_output",
            "fused_in_tile",
            "vector_math",
            "elementwise",
        }, name
        assert info["needs_preactivation"] == (info["derivative_from_output"] == "never")
        assert not (info["fused_in_tile"] and info["vector_math"]), name


def test_stubs_name_every_activation():
    text = STUBS.read_text()
    assert stub_activation_literal(text) == list(kernels.ACTIVATIONS)
    assert "ACTIVATION_INFO:" in text
    assert activation_names_in(text) == set(kernels.ACTIVATIONS)


def test_python_registry_follows_the_table():
    assert activations.NEEDS_PREACTIVATION == frozenset(
        name for name, info in kernels.ACTIVATION_INFO.items() if info["needs_preactivation"]
    )
    for name, info in kernels.ACTIVATION_INFO.items():
        resolved = activations.get(name)
        assert resolved.name == name
        assert (resolved.alpha is None) == (info["alpha"] is None), name


@pytest.mark.parametrize("name", kernels.ACTIVATIONS)
def test_references_cover_every_activation(name):
    info = kernels.ACTIVATION_INFO[name]
    assert reference.DEFAULT_ALPHA.get(name) == info["alpha"]
    z = np.linspace(-3.0, 3.0, 12).reshape(3, 4)
    y = reference.activation(z, name)
    dz = reference.activation_grad(np.ones_like(z), z, name)
    assert y.shape == z.shape and dz.shape == z.shape
    assert np.isfinite(y).all() and np.isfinite(dz).all()
