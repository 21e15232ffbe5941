"""The Keras-style config form shared by every registry (initializers, losses, metrics,
optimizers, schedules): ``{"class_name": ..., "config": ...}``."""

from __future__ import annotations


class Configurable:
    """What every configurable object has, as in Keras: ``get_config`` (each class's own),
    ``from_config`` (the class called with that config) and a repr showing the config."""

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def serialize(obj) -> dict:
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(config: dict, by_class: dict, kind: str):
    """Rebuild an object from its config through the registry's ``by_class`` table."""
    cls = by_class.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"unknown {kind} {config.get('class_name')!r}")
    return cls.from_config(config.get("config", {}))


def resolve_optional(identifier, base: type, registry: dict, by_class: dict, kind: str, name: str):
    """None, an instance of ``base``, or one built from a registered name, a class name or a
    config dict; anything else raises ValueError naming the argument ``name`` (the shared body
    of regularizers.get and constraints.get)."""
    if identifier is None or isinstance(identifier, base):
        return identifier
    if isinstance(identifier, str):
        cls = registry.get(identifier) or by_class.get(identifier)
        if cls is not None:
            return cls()
    if isinstance(identifier, dict) and identifier.get("class_name") in by_class:
        try:
            return deserialize(identifier, by_class, f"{kind} class")
        except TypeError as error:
            raise ValueError(f"{name}: invalid config {identifier!r} ({error})") from None
    raise ValueError(
        f"{name}: expected None, one of {sorted(registry)}, a class name of "
        f"{sorted(by_class)}, its config or an instance, got {identifier!r}"
    )
