"""How a movie's atoms become trajectories: one object for the API, the command line, a run and
the tables' metadata (:class:`TrackOptions`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ..errors import InputError, check_positive
from .linking import DEFAULT_LABELS
from .sites import NEW_SITE, SAME_SITE, check_persist

__all__ = ["TrackOptions"]


def _positive_or_none(name: str, value, unit: str):
    return None if value is None else check_positive(value, name, unit)


@dataclass(frozen=True)
class TrackOptions:
    """How :func:`stemflow.track` links a movie's atoms and judges their events.

    Attributes
    ----------
    labels : tuple of str or None
        Rows to track (default dopants and vacancies); None tracks every row.
    search_range : float or None
        Largest move between observations, nm. None: twice the host lattice's nearest-neighbour
        distance (0.28 nm in graphene, 0.37 nm in WS2), a hop plus slack.
    memory : int
        Frames a tracked atom may go undetected and keep its id (≥ 0).
    spacing : float or None
        Host nearest-neighbour distance, nm; None measures it on the first frame with lattice atoms.
    max_step : float or None
        Largest change of the drift step between frames, px (see :func:`stemflow.tracking.drift`).
    adaptive_stop : float or None
        Smallest search range trackpy's adaptive search may shrink to, nm (None: 0.2 ×
        ``search_range``).
    same_site, new_site : float
        Site thresholds in units of the spacing, ``0 < same_site < new_site``
        (:func:`stemflow.tracking.trajectory_sites`).
    given_sites : bool
        Use the table's own ``site`` column instead of assigning sites.
    persist : "auto", int or None
        Observations a place must be held for to count (temporal evidence); ``"auto"`` chooses it
        from the movie's own one-frame error rate, None judges every frame on its own.

    Raises
    ------
    InputError
        A value out of range; the message names it and what is allowed.

    Examples
    --------
    >>> from stemflow.tracking import TrackOptions
    >>> TrackOptions(search_range=0.3, labels=["dopant"]).labels
    ('dopant',)
    >>> TrackOptions().manifest()["persist"]
    'auto'
    """

    labels: tuple[str, ...] | None = DEFAULT_LABELS
    search_range: float | None = None
    memory: int = 3
    spacing: float | None = None
    max_step: float | None = None
    adaptive_stop: float | None = None
    same_site: float = SAME_SITE
    new_site: float = NEW_SITE
    given_sites: bool = False
    persist: int | str | None = "auto"

    def __post_init__(self):
        labels = self.labels
        if labels is not None:
            if isinstance(labels, str):
                labels = (labels,)
            labels = tuple(str(v) for v in labels)
            if not labels:
                raise InputError("labels is empty: name the labels to track (e.g. dopant,vacancy) or pass None "
                                 "to track every row")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "search_range", _positive_or_none("search_range", self.search_range, "nm"))
        object.__setattr__(self, "spacing", _positive_or_none("spacing", self.spacing, "nm"))
        object.__setattr__(self, "max_step", _positive_or_none("max_step", self.max_step, "px"))
        object.__setattr__(self, "adaptive_stop", _positive_or_none("adaptive_stop", self.adaptive_stop, "nm"))
        m = self.memory
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            raise InputError(f"memory must be a whole number of frames ≥ 0; got {m!r}")
        object.__setattr__(self, "memory", int(m))
        try:
            same, new = float(self.same_site), float(self.new_site)
        except (TypeError, ValueError):
            same = new = float("nan")
        if not 0 < same < new:
            raise InputError(f"site thresholds must satisfy 0 < same_site < new_site (units of the spacing); "
                             f"got same_site={self.same_site!r}, new_site={self.new_site!r}")
        object.__setattr__(self, "same_site", same)
        object.__setattr__(self, "new_site", new)
        object.__setattr__(self, "given_sites", bool(self.given_sites))
        object.__setattr__(self, "persist", check_persist(self.persist))

    @classmethod
    def from_keywords(cls, options: TrackOptions | dict | None = None, **keywords) -> TrackOptions:
        """Options from an instance or a dict, with ``keywords`` replacing single fields.

        Raises
        ------
        InputError
            A keyword that is not a field (the message lists the fields).
        """
        if options is None:
            base = {}
        elif isinstance(options, cls):
            base = {f.name: getattr(options, f.name) for f in fields(cls)}
        elif isinstance(options, dict):
            base = dict(options)
        else:
            raise InputError(f"track options must be a TrackOptions or a dict; got {type(options).__name__}")
        base.update(keywords)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(base) - known)
        if unknown:
            raise InputError(f"unknown tracking option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**base)

    def manifest(self) -> dict:
        """The options as JSON-ready values (labels as a list), as tables and manifests record them."""
        out = asdict(self)
        if out["labels"] is not None:
            out["labels"] = list(out["labels"])
        return out
