"""Atomic writes: a file or folder appears under its final name only once it is complete.

Every writer of stemflow (run parts, manifests, tracking tables, simulated stores, ``stemflow
find --out``) writes to a hidden temporary name in the same directory and renames it into place,
so an interrupted or failed write never leaves output that looks finished.

Examples
--------
>>> import json, tempfile
>>> from pathlib import Path
>>> from stemflow.atomic import atomic_path
>>> final = Path(tempfile.mkdtemp()) / "table.json"
>>> with atomic_path(final) as tmp:
...     _ = tmp.write_text(json.dumps({"rows": 3}))
>>> json.loads(final.read_text())
{'rows': 3}
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_json"]


@contextmanager
def atomic_path(final, *, replace: bool = False):
    """A hidden temporary path beside ``final``; renamed onto ``final`` when the block succeeds.

    Parameters
    ----------
    final : str or Path
        Where the output belongs. Its directory must exist.
    replace : bool
        An existing folder at ``final`` is replaced (moved aside, the new one renamed in, the old
        one deleted); without it only a file is replaced and a folder is an error.

    Yields
    ------
    Path
        ``.NAME.<random>.tmp`` in the same directory (so the rename is atomic). Write a file or a
        folder there. On an exception it is removed and ``final`` is left as it was.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from stemflow.atomic import atomic_path
    >>> final = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with atomic_path(final) as tmp:
    ...     _ = tmp.write_text("done")
    ...     print(tmp.name.startswith(".notes.txt."), final.exists())
    True False
    >>> final.read_text()
    'done'
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if replace and final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_json(path, obj, default=None) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; ``default`` as for :func:`json.dumps`.

    Parameters
    ----------
    path : str or Path
        The file to write (replaced if it exists). Its directory must exist.
    obj : object
        Anything :func:`json.dumps` can serialise (with ``default``).
    default : callable, optional
        Called for objects JSON cannot serialise, returning something it can.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import json, tempfile
    >>> import numpy as np
    >>> from stemflow.atomic import write_json
    >>> path = write_json(tempfile.mkdtemp() + "/run.json", {"frames": 8, "dose": np.float64(1e4)},
    ...                   default=float)
    >>> path.name, json.loads(path.read_text())
    ('run.json', {'frames': 8, 'dose': 10000.0})
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=default))
    return path
