"""Public names imported on first use, so that importing a package stays light (PEP 562).

Examples
--------
In a package's ``__init__.py``::

    from ..lazy import lazy_names
    __getattr__, __dir__ = lazy_names(__name__, {"open_stem": "._open"}, globals())
"""

from __future__ import annotations

import importlib

__all__ = ["lazy_names"]


def lazy_names(package: str, names: dict[str, str], namespace: dict):
    """Module-level ``__getattr__`` and ``__dir__`` for a package whose ``names`` load on first use.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : dict
        Public name → module that defines it (relative to ``package``, e.g. ``"._open"``).
    namespace : dict
        The package's ``globals()``: a name, once loaded, is kept there (later lookups are plain).

    Returns
    -------
    (callable, callable)
        ``__getattr__`` and ``__dir__`` for the package.
    """
    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
