"""Atomic structure on a lattice: defects placed on sites, and the moves that defects make.

A :class:`Structure` holds, for every site of a :class:`~stemflow.simulate.lattice.Lattice`, what
sits there now (element, number of atoms in the column, label, defect, identity). Defects are
placed by name (``"Si1C3"``, ``"V1"``, ``"Mo_W"``, ...) and move by the rules a movie applies
frame by frame (a hop is an exchange with a neighbouring host atom, a vacancy migrates when a
neighbour fills it, Si switches between 3- and 4-fold coordination). Lengths in Å.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..tables import LATTICES
from .lattice import Lattice

__all__ = ["Structure", "Defect", "DEFECT_KINDS", "SINGLE_ATOMS", "defect_kinds"]

#: Elements the simulator places as single atoms on an amorphous support (``{element}1``), Pt first:
#: the metals of single-atom catalysts, heavy to light.
SINGLE_ATOMS = ("Pt", "Au", "Ir", "W", "Pd", "Ru", "Mo", "Cu", "Ni", "Co", "Fe")


def defect_kinds(lattice: str) -> tuple[str, ...]:
    """Names of the defects the simulator can place in ``lattice``.

    graphene: ``V1`` (single vacancy), ``V2`` (divacancy), ``Si1C3`` (3-fold substitutional Si),
    ``Si1C4`` (4-fold Si in a divacancy), ``Si2C4`` (Si dimer), ``Si3C6`` (three Si around a
    vacancy), ``SW`` (Stone–Wales 55-77). MX2: ``V_X`` (one chalcogen missing from a column),
    ``V_X2`` (both missing), ``V_M`` (metal vacancy), ``D_M`` (substitutional metal dopant), with
    the element symbols filled in (``V_S``, ``V_S2``, ``V_W``, ``Mo_W`` for WS2). amorphous:
    ``Pt1`` (heavy single atoms on the support) and the other single atoms of
    :data:`SINGLE_ATOMS` (``Fe1``, ``Ru1``, ``Au1`` …), for supports that carry several elements.

    Parameters
    ----------
    lattice : str
        ``"graphene"``, ``"ws2"``, ``"mos2"`` or ``"amorphous"``.

    Returns
    -------
    tuple of str
        The defect names, as accepted by the ``defects`` option of
        :func:`~stemflow.simulate.simulate_image` (``{"Si1C3": 1}``).

    Raises
    ------
    ValueError
        Unknown lattice.

    Examples
    --------
    >>> from stemflow.simulate import defect_kinds
    >>> defect_kinds("ws2")
    ('V_S', 'V_S2', 'V_W', 'Mo_W')
    >>> "SW" in defect_kinds("graphene"), defect_kinds("amorphous")[:3]
    (True, ('Pt1', 'Au1', 'Ir1'))
    """
    if lattice == "graphene":
        return ("V1", "V2", "Si1C3", "Si1C4", "Si2C4", "Si3C6", "SW")
    if lattice in ("ws2", "mos2"):
        m, x = LATTICES[lattice]["host"]
        d = LATTICES[lattice]["dopant"]
        return (f"V_{x}", f"V_{x}2", f"V_{m}", f"{d}_{m}")
    if lattice == "amorphous":
        return tuple(f"{el}1" for el in SINGLE_ATOMS)
    raise ValueError(f"unknown lattice {lattice!r}; known lattices: {', '.join(LATTICES)}")


DEFECT_KINDS = {name: defect_kinds(name) for name in LATTICES}


@dataclass
class Defect:
    """One defect: its kind, the sites it occupies and, for the mobile ones, its moving entity."""

    id: int
    kind: str
    sites: list[int]
    particle: int = -1  # the entity that moves (a dopant atom or a vacancy); -1 if static


@dataclass
class Structure:
    """What occupies each site of a lattice.

    Per-site arrays (length ``lattice.n_sites`` plus any off-lattice columns appended): ``element``
    ('' where empty), ``count`` (atoms in the column), ``label`` (``lattice``, ``dopant``,
    ``vacancy``, or '' for a site absorbed by a neighbouring defect, which emits no row),
    ``defect`` ('' for pristine), ``defect_id`` (-1), ``particle`` (identity of the occupant, kept
    as atoms move), ``disp`` (displacement from the ideal site, Å).

    Two optional departures from the ideal lattice, off by default: ``static`` (per-site static
    displacement, Å, e.g. ripples or frozen disorder; fixed as the movie runs) and ``relax`` (Å:
    the host columns bonded to a dopant sit this much farther from it, as the longer Si–C bond
    pushes them out).
    """

    lattice: Lattice
    pos: np.ndarray = field(init=False, repr=False)
    element: np.ndarray = field(init=False, repr=False)
    count: np.ndarray = field(init=False, repr=False)
    label: np.ndarray = field(init=False, repr=False)
    defect: np.ndarray = field(init=False, repr=False)
    defect_id: np.ndarray = field(init=False, repr=False)
    particle: np.ndarray = field(init=False, repr=False)
    disp: np.ndarray = field(init=False, repr=False)
    defects: list[Defect] = field(default_factory=list, repr=False)
    separation: float = 5.0  # Å, closest approach of two defects' sites
    static: np.ndarray | None = field(default=None, repr=False)
    relax: float = 0.0
    _next_particle: int = field(init=False, default=0, repr=False)

    def __post_init__(self):
        lat = self.lattice
        n = lat.n_sites
        self.pos = lat.positions.copy()
        self.element = lat.element.copy()
        self.count = lat.count.copy()
        self.label = np.full(n, "lattice", dtype=object)
        self.defect = np.full(n, "", dtype=object)
        self.defect_id = np.full(n, -1, dtype=np.int64)
        self.particle = np.arange(n, dtype=np.int64)
        self.disp = np.zeros((n, 2))
        self._next_particle = n

    # ------------------------------------------------------------------ helpers
    def _new_particle(self) -> int:
        self._next_particle += 1
        return self._next_particle - 1

    def _neigh(self, site: int, hop: bool = False) -> np.ndarray:
        table = self.lattice.hop_neighbours if hop else self.lattice.neighbours
        if site >= len(table):
            return np.empty(0, np.int64)
        row = table[site]
        return row[row >= 0]

    def _plain(self, sites) -> bool:
        sites = np.atleast_1d(sites)
        if (sites >= self.lattice.n_sites).any():
            return False
        return bool(np.all((self.label[sites] == "lattice") & (self.defect[sites] == "")))

    def _clear_of_others(self, sites, ignore: int = -1) -> bool:
        """True when no site of another defect lies within ``separation`` of ``sites``."""
        own = np.atleast_1d(sites)
        others = [s for d in self.defects if d.id != ignore for s in d.sites]
        if not others:
            return True
        a = self.pos[own][:, None, :]
        b = self.pos[np.asarray(others)][None, :, :]
        return bool(np.min(np.linalg.norm(a - b, axis=-1)) >= self.separation)

    def _footprint_ok(self, sites, ignore: int = -1, within=None) -> bool:
        sites = np.atleast_1d(sites)
        if within is not None and not within(self.pos[sites]).all():
            return False
        shell = np.unique(np.concatenate([self._neigh(s) for s in sites] + [sites]))
        return self._plain(shell) and self._clear_of_others(sites, ignore)

    def _mark(self, sites, kind: str, did: int):
        self.defect[sites] = kind
        self.defect_id[sites] = did

    # ------------------------------------------------------------------ placing
    def place(self, kind: str, site: int, rng: np.random.Generator, within=None) -> Defect | None:
        """Place a defect of ``kind`` centred on ``site``; return it, or None if it does not fit.

        A defect fits when all sites it touches and their first neighbours are pristine host
        sites, none lies within ``separation`` Å of another defect, and (if given) ``within``
        accepts their positions.
        """
        lat = self.lattice
        did = len(self.defects)
        nb = self._neigh(site)
        if kind not in DEFECT_KINDS[lat.name]:
            raise ValueError(f"unknown defect {kind!r} for {lat.name}; known: {', '.join(DEFECT_KINDS[lat.name])}")

        if lat.name == "amorphous":  # heavy single atom on top of the support, off-lattice
            if not self._clear_of_others([site]) or (within is not None and not within(self.pos[[site]]).all()):
                return None
            new = self._append_site(self.pos[site] + rng.normal(0, 0.3, 2), kind[:-1], 1, "dopant")
            self._mark([new], kind, did)
            d = Defect(did, kind, [new], particle=self.particle[new])
            self.defects.append(d)
            return d

        pair_kinds = ("V2", "Si1C4", "Si2C4", "SW")
        if kind in pair_kinds:
            if len(nb) == 0:
                return None
            partner = int(rng.choice(nb))
            sites = [site, partner]
        elif kind == "Si3C6":
            sites = [site, *nb.tolist()]
            if len(nb) != 3:
                return None
        else:
            sites = [site]
        sub = lat.sublattice[site]
        if lat.name in ("ws2", "mos2"):
            metal = kind.endswith("_" + lat.host_elements[0]) or kind == f"V_{lat.host_elements[0]}"
            if metal != (sub == 0):
                return None
        if not self._footprint_ok(sites, within=within):
            return None

        particle = -1
        if kind == "V1":
            particle = self._to_vacancy(site)
        elif kind == "V2":
            for s in sites:
                self._to_vacancy(s)
        elif kind == "Si1C3":
            particle = self._to_dopant(site, "Si")
        elif kind == "Si1C4":
            particle = self._to_dopant(site, "Si")
            self._absorb(sites[1])
            self.disp[site] = 0.5 * (self.pos[sites[1]] - self.pos[site])
        elif kind == "Si2C4":
            for s in sites:
                self._to_dopant(s, "Si")
        elif kind == "Si3C6":
            self._to_vacancy(site)
            for s in sites[1:]:
                self._to_dopant(s, "Si")
        elif kind == "SW":
            s, n = sites
            mid = 0.5 * (self.pos[s] + self.pos[n])
            e = self.pos[n] - self.pos[s]
            perp = np.array([-e[1], e[0]]) / np.linalg.norm(e)
            half = 0.5 * 1.32  # the rotated bond is shorter than 1.42 Å
            self.disp[s] = mid + half * perp - self.pos[s]
            self.disp[n] = mid - half * perp - self.pos[n]
        else:  # MX2
            m, x = lat.host_elements
            if kind == f"V_{x}":
                self.count[site] = 1
                self.label[site] = "vacancy"
                particle = self.particle[site] = self._new_particle()
            elif kind in (f"V_{x}2", f"V_{m}"):
                particle = self._to_vacancy(site)
            else:
                particle = self._to_dopant(site, kind.split("_")[0])
        self._mark(sites, kind, did)
        d = Defect(did, kind, list(map(int, sites)), particle=int(particle))
        self.defects.append(d)
        return d

    def _to_vacancy(self, s: int) -> int:
        self.element[s], self.count[s], self.label[s] = "", 0, "vacancy"
        self.particle[s] = self._new_particle()
        return int(self.particle[s])

    def _to_dopant(self, s: int, element: str) -> int:
        self.element[s], self.count[s], self.label[s] = element, 1, "dopant"
        self.particle[s] = self._new_particle()
        return int(self.particle[s])

    def _absorb(self, s: int):
        """The host atom on ``s`` leaves (sputtered); the site emits no row."""
        self.element[s], self.count[s], self.label[s] = "", 0, ""
        self.particle[s] = -1

    def _append_site(self, yx, element: str, count: int, label: str) -> int:
        self.pos = np.vstack([self.pos, yx])
        self.element = np.append(self.element, element).astype(object)
        self.count = np.append(self.count, np.int8(count))
        self.label = np.append(self.label, label).astype(object)
        self.defect = np.append(self.defect, "").astype(object)
        self.defect_id = np.append(self.defect_id, -1)
        self.particle = np.append(self.particle, self._new_particle())
        self.disp = np.vstack([self.disp, np.zeros(2)])
        return len(self.pos) - 1

    def populate(self, counts: dict[str, int], rng: np.random.Generator, within=None,
                 max_tries: int = 50) -> dict[str, int]:
        """Place ``counts[kind]`` defects of each kind at random sites; return how many fitted.

        Kinds are placed in random interleaved order so that no kind is favoured when space runs
        out. ``within`` (a function of an (n, 2) array of positions in Å returning booleans)
        restricts where defects may sit, e.g. inside the field of view.
        """
        todo = [k for k, n in counts.items() for _ in range(int(n))]
        rng.shuffle(todo)
        placed = {k: 0 for k in counts}
        n_sites = self.lattice.n_sites
        for kind in todo:
            for _ in range(max_tries):
                if self.place(kind, int(rng.integers(n_sites)), rng, within=within) is not None:
                    placed[kind] += 1
                    break
        return placed

    # ------------------------------------------------------------------ moving
    def step(self, rates: dict[str, float], rng: np.random.Generator) -> list[dict]:
        """Advance one frame: each mobile defect may hop, switch or migrate.

        ``rates`` gives per-frame probabilities: ``hop`` (dopant exchange with a neighbouring
        host atom), ``switch34`` (3-fold Si captures a neighbouring vacancy: Si1C3 → Si1C4),
        ``switch43`` (Si1C4 → Si1C3, the vacancy refilled), ``vacancy`` (a vacancy migrates to a
        neighbouring site). Returns the moves made as dicts (particle, kind, site0, site1,
        state0, state1, p0, p1 with positions in Å).
        """
        moves = []
        order = rng.permutation(len(self.defects))
        for i in order:
            d = self.defects[i]
            if d.particle < 0:
                continue
            move = self._try_move(d, rates, rng)
            if move is not None:
                moves.append(move)
        return moves

    def _try_move(self, d: Defect, rates, rng) -> dict | None:
        lat = self.lattice
        kind = d.kind
        site = d.sites[0]
        p0 = self.pos[site] + self.disp[site]
        u = rng.random()
        if lat.name == "amorphous":
            if u >= rates.get("hop", 0.0):
                return None
            ang = rng.uniform(0, 2 * np.pi)
            step = lat.bond * np.array([np.sin(ang), np.cos(ang)])
            old = self.disp[site].copy()
            self.disp[site] = old + step
            if not self._clear_of_others([site], ignore=d.id):
                self.disp[site] = old
                return None
            return self._move_record(d, "hop", site, site, kind, kind, p0)
        if kind == "Si1C4":
            if u >= rates.get("switch43", 0.0):
                return None
            partner = d.sites[1]
            self.element[partner], self.count[partner], self.label[partner] = "C", 1, "lattice"
            self.particle[partner] = self._new_particle()
            self._mark([partner], "", -1)
            self.disp[site] = 0.0
            self._mark([site], "Si1C3", d.id)
            d.kind, d.sites = "Si1C3", [site]
            return self._move_record(d, "coordination_change", site, site, "Si1C4", "Si1C3", p0)
        is_vacancy = self.label[site] == "vacancy"
        hop_rate = rates.get("vacancy" if is_vacancy else "hop", 0.0)
        switch_rate = rates.get("switch34", 0.0) if kind == "Si1C3" else 0.0
        if u < hop_rate:
            target = self._free_neighbour(d, site, hop=True, rng=rng)
            if target is None:
                return None
            self._swap(site, target)
            d.sites = [target]
            return self._move_record(d, "hop", site, target, kind, kind, p0)
        if u < hop_rate + switch_rate:
            partner = self._free_neighbour(d, site, hop=False, rng=rng)
            if partner is None:
                return None
            self._absorb(partner)
            self._mark([site, partner], "Si1C4", d.id)
            self.disp[site] = 0.5 * (self.pos[partner] - self.pos[site])
            d.kind, d.sites = "Si1C4", [site, partner]
            return self._move_record(d, "coordination_change", site, site, "Si1C3", "Si1C4", p0)
        return None

    def _free_neighbour(self, d: Defect, site: int, hop: bool, rng) -> int | None:
        cands = self._neigh(site, hop=hop)
        rng.shuffle(cands)
        for c in cands:
            shell = np.setdiff1d(np.concatenate([self._neigh(c), [c]]), d.sites)
            if self._plain(shell) and self._clear_of_others([c], ignore=d.id):
                return int(c)
        return None

    def _swap(self, a: int, b: int):
        for arr in (self.element, self.count, self.label, self.defect, self.defect_id, self.particle):
            arr[a], arr[b] = arr[b], arr[a]

    def _move_record(self, d, kind, site0, site1, state0, state1, p0) -> dict:
        p1 = self.pos[d.sites[0]] + self.disp[d.sites[0]]
        return dict(particle=int(d.particle), kind=kind, site0=int(site0), site1=int(site1),
                    state0=state0, state1=state1, p0=p0.copy(), p1=p1.copy())

    # ------------------------------------------------------------------ output
    def _relaxed(self, keep: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Positions ``p`` of the rows ``keep`` with the host neighbours of dopants pushed out."""
        row = np.full(len(self.pos), -1, np.int64)
        row[keep] = np.arange(len(keep))
        out = p.copy()
        for s in keep[self.label[keep] == "dopant"]:
            for n in self._neigh(int(s)):
                j = row[n]
                if j < 0 or self.label[n] != "lattice":
                    continue
                d = p[j] - p[row[s]]
                r = float(np.hypot(*d))
                if r > 0:
                    out[j] += self.relax * d / r
        return out

    def columns(self) -> pd.DataFrame:
        """The atomic columns (and vacancy sites) as a table, positions in Å.

        Columns: ``y_A``, ``x_A`` (Å), ``element``, ``count``, ``label``, ``site`` (-1 for
        off-lattice columns), ``defect`` ('' for pristine), ``defect_id``, ``particle``.
        """
        keep = np.flatnonzero(self.label != "")
        p = self.pos[keep] + self.disp[keep]
        if self.static is not None:
            n_st = min(len(self.static), len(self.pos))
            on = keep < n_st
            p[on] += self.static[keep[on]]
        if self.relax:
            p = self._relaxed(keep, p)
        site = np.where(keep < self.lattice.n_sites, keep, -1)
        return pd.DataFrame({
            "y_A": p[:, 0], "x_A": p[:, 1],
            "element": self.element[keep].astype(str), "count": self.count[keep].astype(np.int8),
            "label": self.label[keep].astype(str), "site": site.astype(np.int64),
            "defect": self.defect[keep].astype(str), "defect_id": self.defect_id[keep],
            "particle": self.particle[keep],
        })
