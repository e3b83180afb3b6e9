"""Parquet datasets of parts as one lazy (dask) table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["read_parquet_parts"]


def read_parquet_parts(files, empty: pd.DataFrame):
    """A ``dask.dataframe.DataFrame`` with one partition per Parquet file, in the order given.

    Parameters
    ----------
    files : list of str or Path
        Part files (e.g. ``OUT/atoms.parquet/part-*.parquet``, sorted).
    empty : DataFrame
        The table with no rows, typed: what a dataset with no files reads as.
    """
    import dask.dataframe as dd

    files = [str(Path(f)) for f in files]
    return dd.read_parquet(files) if files else dd.from_pandas(empty, npartitions=1)
