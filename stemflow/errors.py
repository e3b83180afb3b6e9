"""Exceptions and warnings raised by stemflow.

Every error names the problem *and* the fix, so that a user reading a traceback on a cluster log
knows what to change without opening the source.
"""

from __future__ import annotations

import math

__all__ = ["StemflowError", "InputError", "InputNotFoundError", "FormatError", "MissingDependencyError",
           "StemflowWarning", "check_positive", "require_pixel_size"]


class StemflowError(Exception):
    """Base class of stemflow's own errors."""


class InputError(StemflowError, ValueError):
    """The data handed to stemflow cannot be used as it is (wrong dims, dtype, NaN, empty, ...)."""


class InputNotFoundError(InputError, FileNotFoundError):
    """The path handed to stemflow does not exist."""


class FormatError(StemflowError, ValueError):
    """A file or store is of an unknown or unreadable format."""


class MissingDependencyError(StemflowError, ImportError):
    """An optional dependency is needed; the message names the extra that brings it."""


class StemflowWarning(UserWarning):
    """Something was fixed up or guessed (rechunking, missing calibration); the message says what."""


def check_positive(value, what: str, unit: str) -> float:
    """``value`` as a positive, finite float, or an :class:`InputError` naming ``what`` and its
    ``unit`` (e.g. ``check_positive(px, "pixel_size", "nm/px")``)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number in {unit}; got {value!r}")
    return value


def require_pixel_size(pixel_size) -> float:
    """The pixel size as a positive float (nm/px), or an :class:`InputError` saying how to give it."""
    if pixel_size is None:
        raise InputError("the pixel size is unknown: pass pixel_size= in nm/px (e.g. 0.012 for 12 pm/px), "
                         "or use a table from find_atoms, which records it in df.attrs['pixel_size']")
    return check_positive(pixel_size, "pixel_size", "nm/px (e.g. 0.012 for 12 pm/px)")
