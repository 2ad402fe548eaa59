"""Names of a package loaded on first use (PEP 562), so that importing it stays cheap."""

from __future__ import annotations

import importlib


def lazy_names(package: str, where: dict[str, str], eager: dict):
    """``(__getattr__, __dir__)`` for ``package``: ``where`` maps each lazy name to the submodule
    that defines it (``""``: the name is the submodule itself); ``eager`` is the package's
    ``globals()``, where a loaded name is kept so that it loads once."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{where[name] or name}")
        value = module if not where[name] else getattr(module, name)
        eager[name] = value
        return value

    def __dir__():
        return sorted(set(eager) | set(where))

    return __getattr__, __dir__
