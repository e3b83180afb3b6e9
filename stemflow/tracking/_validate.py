"""Checks shared by the tracking functions: columns, calibration, finite positions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, require_pixel_size

__all__ = ["require_frame", "require_columns", "pixel_size_of", "check_finite", "require_table"]


def require_table(df, name: str = "atoms") -> pd.DataFrame:
    """``df`` if it is a DataFrame, else an :class:`InputError` saying what to pass."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name} must be a pandas DataFrame (an atoms table with frame, y, x in px); "
                         f"got {type(df).__name__}")
    return df


def require_columns(df: pd.DataFrame, columns, name: str = "atoms", fix: str = "") -> None:
    """Raise :class:`InputError` naming the columns of ``columns`` that ``df`` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        hint = fix or "pass a table with these columns (positions y, x in px)"
        raise InputError(f"{name} lacks column(s) {missing}; {hint}")


def require_frame(df: pd.DataFrame, name: str = "atoms") -> None:
    """Raise :class:`InputError` when ``df`` has no ``frame`` column."""
    if "frame" not in df.columns:
        raise InputError(f"{name} has no 'frame' column, so there is nothing to track over time; pass the "
                         "atoms table of a movie (stemflow.find_atoms on a (frame, y, x) stack adds it), or "
                         "add one: df.assign(frame=0)")


def check_finite(df: pd.DataFrame, columns, name: str = "atoms") -> None:
    """Raise :class:`InputError` when any of ``columns`` holds NaN or inf."""
    for c in columns:
        try:
            v = df[c].to_numpy(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{name}.{c} must be numeric; got dtype {df[c].dtype}") from None
        bad = ~np.isfinite(v)
        if bad.any():
            raise InputError(f"{name} has {int(bad.sum())} row(s) with NaN/inf in {c!r}; drop them first, "
                             f"e.g. {name}.dropna(subset={list(columns)!r})")


def pixel_size_of(df: pd.DataFrame | None, pixel_size=None, name: str = "atoms") -> float:
    """The pixel size (nm/px): ``pixel_size`` if given, else ``df.attrs['pixel_size']``, else the ratio
    of ``y_nm`` to ``y``; an :class:`InputError` when none is known or it is not a positive number."""
    if pixel_size is None and df is not None:
        pixel_size = df.attrs.get("pixel_size")
        if pixel_size is None and {"y", "x", "y_nm", "x_nm"} <= set(df.columns) and len(df):
            y = df["y"].to_numpy(np.float64)
            ok = np.abs(y) > 1.0
            if ok.any():
                pixel_size = float(np.median(df["y_nm"].to_numpy(np.float64)[ok] / y[ok]))
    return require_pixel_size(pixel_size)
