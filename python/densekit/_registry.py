"""The Keras-style config form shared by every registry (initializers, losses, metrics,
optimizers, schedules): ``{"class_name": ..., "config": ...}``."""

from __future__ import annotations


def serialize(obj) -> dict:
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(config: dict, by_class: dict, kind: str):
    """Rebuild an object from its config through the registry's ``by_class`` table."""
    cls = by_class.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"unknown {kind} {config.get('class_name')!r}")
    return cls.from_config(config.get("config", {}))
