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

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy: one partition per file (nothing is read until computed), or one empty partition
        shaped like ``empty`` when ``files`` is empty.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> from stemflow.io import read_parquet_parts
    >>> folder = tempfile.mkdtemp()
    >>> files = [f"{folder}/part-{i:06d}.parquet" for i in range(2)]
    >>> for i, f in enumerate(files):
    ...     pd.DataFrame({"frame": [i, i], "y": [1.0, 2.0]}).to_parquet(f, index=False)
    >>> empty = pd.DataFrame({"frame": pd.Series(dtype="int64"), "y": pd.Series(dtype="float64")})
    >>> table = read_parquet_parts(files, empty)
    >>> table.npartitions, len(table.compute())
    (2, 4)
    >>> len(read_parquet_parts([], empty).compute())
    0
    """
    import dask.dataframe as dd

    files = [str(Path(f)) for f in files]
    return dd.read_parquet(files) if files else dd.from_pandas(empty, npartitions=1)
