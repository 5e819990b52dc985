"""A small name → class registry, so models are built from config by name (the Pointcept pattern)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gs3.errors import ConfigError


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            key = name or builder.__name__
            if key in self._builders:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._builders[key] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, config: Mapping[str, Any] | str, **overrides: Any) -> Any:
        """Build from {"type": NAME, **kwargs} (or just NAME); overrides win over the config's kwargs."""
        if isinstance(config, str):
            config = {"type": config}
        kwargs = {k: v for k, v in config.items() if k != "type"}
        if "type" not in config:
            raise ConfigError(f"{self.kind} config needs a 'type' (one of {', '.join(self.names())})")
        return self.get(config["type"])(**{**kwargs, **overrides})
