"""Lattices in projection: graphene, 2H-MX2 (WS2, MoS2) and an amorphous carbon support.

All lengths here are in ångström (Å), positions are ``(y, x)`` in the specimen frame. A lattice is
a set of *sites*; each site holds one atomic column (one atom in graphene, a metal atom or a pair
of chalcogen atoms stacked along the beam in 2H-MX2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from ..tables import LATTICES

__all__ = ["Lattice", "make_lattice", "graphene", "mx2", "amorphous", "lattice_constant"]


def lattice_constant(name: str) -> float:
    """Lattice constant of ``name`` in Å, from :data:`stemflow.tables.LATTICES` (which holds nm)."""
    return round(10.0 * LATTICES[name]["a"], 9)


@dataclass
class Lattice:
    """Sites of a lattice in projection.

    Attributes
    ----------
    name : str
        ``"graphene"``, ``"ws2"``, ``"mos2"`` or ``"amorphous"``.
    a : float
        Lattice constant (Å); for the amorphous support, the mean nearest-neighbour distance.
    positions : ndarray, shape (n, 2)
        Site positions ``(y, x)`` in Å.
    sublattice : ndarray of int8, shape (n,)
        0 for A / metal sites, 1 for B / chalcogen sites (all 0 for the amorphous support).
    element : ndarray of str, shape (n,)
        Element symbol of the column on each site.
    count : ndarray of int8, shape (n,)
        Number of atoms stacked in the column (2 for MX2 chalcogen columns, else 1).
    bond : float
        Nearest-neighbour distance between sites (Å): a/√3 for graphene and MX2.
    neighbours : ndarray of int64, shape (n, k)
        Nearest-neighbour sites of each site (any sublattice), padded with -1.
    hop_neighbours : ndarray of int64, shape (n, k)
        Sites a defect on this site can hop to: nearest neighbours in graphene (exchange with a
        C atom), nearest same-sublattice sites in MX2 (distance a). Padded with -1.
    """

    name: str
    a: float
    positions: np.ndarray
    sublattice: np.ndarray
    element: np.ndarray
    count: np.ndarray
    bond: float
    neighbours: np.ndarray = field(repr=False)
    hop_neighbours: np.ndarray = field(repr=False)

    @property
    def n_sites(self) -> int:
        return len(self.positions)

    @property
    def host_elements(self) -> tuple[str, ...]:
        return LATTICES[self.name]["host"]


def _neighbour_table(points: np.ndarray, radius: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Sites within ``radius`` of each site, as an (n, k) array padded with -1."""
    tree = cKDTree(points)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    if mask is not None and len(pairs):
        pairs = pairs[mask[pairs[:, 0]] == mask[pairs[:, 1]]]
    n = len(points)
    both = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else np.empty((0, 2), np.int64)
    order = np.lexsort((both[:, 1], both[:, 0]))
    both = both[order]
    counts = np.bincount(both[:, 0], minlength=n)
    k = int(counts.max()) if n and len(both) else 0
    table = np.full((n, max(k, 1)), -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(both)) - np.repeat(starts, counts)
    table[both[:, 0], col] = both[:, 1]
    return table


def _hexagonal_points(a: float, basis: np.ndarray, extent: tuple[float, float, float, float],
                      rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """Points of a hexagonal Bravais lattice with ``basis`` covering ``extent`` after rotation.

    ``extent`` is ``(y0, y1, x0, x1)`` in Å; ``rotation`` in degrees (counter-clockwise). Returns
    positions ``(y, x)`` and the basis index of each point.
    """
    y0, y1, x0, x1 = extent
    centre = np.array([(y0 + y1) / 2, (x0 + x1) / 2])
    radius = 0.5 * np.hypot(y1 - y0, x1 - x0) + 2 * a
    # Lattice vectors in (x, y); unrotated: a1 along x, a2 at 60 degrees.
    a1 = np.array([a, 0.0])
    a2 = np.array([a / 2, a * np.sqrt(3) / 2])
    n = int(np.ceil(radius / (a * np.sqrt(3) / 2))) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    cells = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2  # (m, 2) in (x, y)
    pts = (cells[:, None, :] + basis[None, :, :]).reshape(-1, 2)
    which = np.tile(np.arange(len(basis)), len(cells))
    t = np.deg2rad(rotation)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    xy = pts @ rot.T
    yx = xy[:, ::-1] + centre
    keep = (yx[:, 0] >= y0) & (yx[:, 0] < y1) & (yx[:, 1] >= x0) & (yx[:, 1] < x1)
    return yx[keep], which[keep]


def graphene(extent: tuple[float, float, float, float], rotation: float = 0.0, a: float | None = None) -> Lattice:
    """Graphene sites covering ``extent`` = ``(y0, y1, x0, x1)`` (Å), rotated by ``rotation`` (deg).

    The C–C distance is a/√3 = 1.420 Å for a = 2.46 Å (the default, from :data:`stemflow.tables.LATTICES`).
    """
    a = lattice_constant("graphene") if a is None else a
    basis = np.array([[0.0, 0.0], [a / 2, a * np.sqrt(3) / 6]])
    pos, sub = _hexagonal_points(a, basis, extent, rotation)
    bond = a / np.sqrt(3)
    nb = _neighbour_table(pos, 1.1 * bond)
    return Lattice("graphene", a, pos, sub.astype(np.int8), np.full(len(pos), "C", dtype=object),
                   np.ones(len(pos), np.int8), bond, nb, nb)


def mx2(name: str, extent: tuple[float, float, float, float], rotation: float = 0.0,
        a: float | None = None) -> Lattice:
    """2H-MX2 (``"ws2"`` or ``"mos2"``) seen along c: metal columns and chalcogen-pair columns.

    Metal and chalcogen sites form two interpenetrating triangular lattices; the projected M–X
    distance is a/√3 and the X–X and M–M distances are a.
    """
    a = lattice_constant(name) if a is None else a
    metal, chalcogen = LATTICES[name]["host"]
    basis = np.array([[0.0, 0.0], [a / 2, a * np.sqrt(3) / 6]])
    pos, sub = _hexagonal_points(a, basis, extent, rotation)
    bond = a / np.sqrt(3)
    element = np.where(sub == 0, metal, chalcogen).astype(object)
    count = np.where(sub == 0, 1, 2).astype(np.int8)
    nb = _neighbour_table(pos, 1.1 * bond)
    hop = _neighbour_table(pos, 1.05 * a, mask=sub)
    return Lattice(name, a, pos, sub.astype(np.int8), element, count, bond, nb, hop)


def amorphous(extent: tuple[float, float, float, float], rng: np.random.Generator,
              density: float = 0.33, min_distance: float = 1.4) -> Lattice:
    """A random carbon network: ``density`` atoms/Å², no two atoms closer than ~``min_distance`` Å.

    Built from a jittered triangular point set relaxed by pairwise repulsion, which gives the
    ring-like short-range order of amorphous carbon without any long-range order.
    """
    y0, y1, x0, x1 = extent
    spacing = np.sqrt(2 / (np.sqrt(3) * density))  # triangular lattice of that density
    pos, _ = _hexagonal_points(spacing, np.zeros((1, 2)), extent, rng.uniform(0, 60))
    pos = pos + rng.uniform(-0.45, 0.45, pos.shape) * spacing
    for _ in range(30):
        tree = cKDTree(pos)
        pairs = tree.query_pairs(min_distance, output_type="ndarray")
        if not len(pairs):
            break
        d = pos[pairs[:, 1]] - pos[pairs[:, 0]]
        r = np.linalg.norm(d, axis=1, keepdims=True)
        push = 0.5 * (min_distance - r) * d / np.maximum(r, 1e-6) * 1.05
        np.add.at(pos, pairs[:, 0], -push)
        np.add.at(pos, pairs[:, 1], push)
    pos[:, 0] = np.clip(pos[:, 0], y0, y1)
    pos[:, 1] = np.clip(pos[:, 1], x0, x1)
    nb = _neighbour_table(pos, 1.3 * spacing)
    n = len(pos)
    return Lattice("amorphous", spacing, pos, np.zeros(n, np.int8), np.full(n, "C", dtype=object),
                   np.ones(n, np.int8), spacing, nb, nb)


def make_lattice(name: str, extent: tuple[float, float, float, float], rotation: float,
                 rng: np.random.Generator) -> Lattice:
    """The lattice called ``name`` covering ``extent`` (Å) at ``rotation`` (degrees)."""
    if name == "graphene":
        return graphene(extent, rotation)
    if name in ("ws2", "mos2"):
        return mx2(name, extent, rotation)
    if name == "amorphous":
        return amorphous(extent, rng)
    raise ValueError(f"unknown lattice {name!r}; known lattices: {', '.join(LATTICES)}")
