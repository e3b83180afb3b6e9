"""Frame ranges: the ``A:B`` selections of the API and the command line, and how they are shown.

Frames are counted from 0; a range ``A:B`` holds frames ``A`` to ``B - 1`` (Python's convention).

Examples
--------
>>> from stemflow.frames import frame_range, describe_ranges
>>> frame_range("10:", 100), frame_range(":50", 100), frame_range("7", 100), frame_range(None, 100)
((10, 100), (0, 50), (7, 8), (0, 100))
>>> describe_ranges([[0, 8], [16, 17]])
'0–7, 16'
"""

from __future__ import annotations

from .errors import InputError

__all__ = ["frame_range", "describe_ranges"]


def frame_range(frames, n: int) -> tuple[int, int]:
    """The frames ``[a, b)`` that ``frames`` selects out of ``n``.

    Parameters
    ----------
    frames : str, (int, int), slice or None
        ``"A:B"`` (either end may be left out: ``":50"``, ``"10:"``), ``"A"`` (one frame),
        ``(A, B)``, ``slice(A, B)`` (step 1), or None for all. Negative values count from the end.
    n : int
        Number of frames in the data.

    Returns
    -------
    (int, int)
        First frame and end frame (exclusive), ``0 <= a < b <= n``.

    Raises
    ------
    InputError
        Not one of the forms above, or a selection with no frame in it.

    Examples
    --------
    >>> from stemflow.frames import frame_range
    >>> frame_range("10:", 100), frame_range(":50", 100), frame_range("7", 100), frame_range(None, 100)
    ((10, 100), (0, 50), (7, 8), (0, 100))
    >>> frame_range((-10, None), 100), frame_range(slice(2, 5), 100)
    ((90, 100), (2, 5))
    """
    if frames is None:
        return 0, n
    if isinstance(frames, str):
        a, sep, b = frames.partition(":")
        try:
            if not sep:
                a = b = int(a)
                b = b + 1 if b != -1 else n
            a = int(a) if a != "" else 0
            b = int(b) if b != "" else n
        except ValueError:
            raise InputError(f"frames must look like A:B (e.g. 0:100, :50, 10:); got {frames!r}") from None
        frames = slice(a, b)
    if isinstance(frames, (tuple, list)) and len(frames) == 2:
        frames = slice(*frames)
    if not isinstance(frames, slice) or frames.step not in (None, 1):
        raise InputError(f"frames must be 'A:B', (A, B) or slice(A, B) with step 1; got {frames!r}")
    a, b, _ = frames.indices(n)
    if b <= a:
        raise InputError(f"frames {frames.start}:{frames.stop} select nothing of the {n} frames; give A < B <= {n}")
    return a, b


def describe_ranges(ranges, limit: int = 6) -> str:
    """``[[a, b), ...]`` as text for messages: ``"0–7, 16"`` (at most ``limit`` ranges named).

    Parameters
    ----------
    ranges : iterable of (int, int)
        Frame ranges ``[a, b)``: first frame and end frame (exclusive).
    limit : int
        Most ranges named; the rest are counted.

    Returns
    -------
    str
        The ranges with inclusive ends (``a–(b-1)``, or ``a`` for one frame), comma-separated.

    Examples
    --------
    >>> from stemflow.frames import describe_ranges
    >>> describe_ranges([[0, 8], [16, 17]])
    '0–7, 16'
    >>> describe_ranges([[i, i + 1] for i in range(0, 16, 2)], limit=3)
    '0, 2, 4 and 5 more parts'
    """
    ranges = list(ranges)
    txt = ", ".join(f"{a}–{b - 1}" if b - a > 1 else f"{a}" for a, b in ranges[:limit])
    return txt + (f" and {len(ranges) - limit} more parts" if len(ranges) > limit else "")
