"""Holes in the sheet: what the finder reports over vacuum, with and without the vacuum check.

    python benchmarks/vacuum_holes.py      # writes benchmarks/results/vacuum_holes.md (+ .json)

Simulated frames (256² px at 12 pm/px; graphene with 2 Si1C3, 2 V1, 1 V2; WS2 with 3 V_S, 2 V_S2,
3 V_W) at 3000, 10⁴ and 10⁵ e⁻/Å², seeds 3–5, with a square hole of 100² px (1.2 nm) cut in the
middle: Poisson vacuum at 5 % of the frame's median. ``stemflow.find_atoms`` with its defaults
(chemistry on), as it is (``stemflow.chem.vacuum_rows`` labels rows on vacuum ``unknown``) and
with that check turned off. Reported: the ``lattice`` / ``vacancy`` rows left inside the hole,
defect complexes whose rows lie in or at the hole (within 2 bonds of it: the rim's cut columns
and the network's rows over vacuum), and rows labelled ``unknown`` outside that reach (by the
vacuum or the dopant check).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

import stemflow
import stemflow.chem.vacuum as vacuum
from stemflow.simulate import simulate_image
from stemflow.tables import LATTICES

ROOT = Path(__file__).resolve().parents[1]
PX = 0.012
HOLE = (80, 180)
SETS = {"graphene": {"Si1C3": 2, "V1": 2, "V2": 1}, "ws2": {"V_S": 3, "V_S2": 2, "V_W": 3}}
DOSES = (3e3, 1e4, 1e5)
SEEDS = (3, 4, 5)


def _one(lattice: str, dose: float, seed: int, check: bool) -> dict:
    sim = simulate_image(lattice, 256, pixel_size=PX, seed=seed, dose=dose, defects=SETS[lattice])
    img = sim.image.astype(np.float64).copy()
    lo, hi = HOLE
    img[lo:hi, lo:hi] = np.random.default_rng(seed).poisson(0.05 * np.median(img), (hi - lo, hi - lo))
    saved = vacuum.VACUUM_SHARE
    vacuum.VACUUM_SHARE = saved if check else -np.inf
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms = stemflow.find_atoms(img, pixel_size=PX, lattice=lattice)
    finally:
        vacuum.VACUUM_SHARE = saved
    reach = 2 * LATTICES[lattice]["bond"] / PX
    lab = atoms["label"].astype(str)
    inside = atoms.y.between(lo, hi) & atoms.x.between(lo, hi)
    near = atoms.y.between(lo - reach, hi + reach) & atoms.x.between(lo - reach, hi + reach)
    d = atoms[(atoms["defect"].astype(str) != "") & near]
    # the sheet's columns outside the hole (centre at least half a bond beyond its edge): found as atoms?
    half = 0.5 * LATTICES[lattice]["bond"] / PX
    t = sim.atoms[sim.atoms["label"].isin(["lattice", "dopant"])]
    out_of_hole = ~(t.y.between(lo - half, hi + half) & t.x.between(lo - half, hi + half))
    rim = out_of_hole & t.y.between(lo - reach, hi + reach) & t.x.between(lo - reach, hi + reach)
    atom_rows = atoms[lab.isin(["lattice", "dopant"])][["y", "x"]].to_numpy()
    dist = cKDTree(atom_rows).query(t[["y", "x"]].to_numpy())[0] if len(atom_rows) else np.full(len(t), np.inf)
    lost = dist > half
    return dict(lattice=lattice, dose=dose, seed=seed, check=check,
                lattice_in_hole=int((inside & (lab == "lattice")).sum()),
                vacancy_in_hole=int((inside & (lab == "vacancy")).sum()),
                unknown_in_hole=int((inside & (lab == "unknown")).sum()),
                complexes_at_hole=int(d["defect_id"].nunique()),
                unknown_on_sheet=int((~near & (lab == "unknown")).sum()),
                rim_columns=int(rim.sum()), rim_columns_lost=int((lost & rim.to_numpy()).sum()),
                sheet_columns_lost=int((lost & (out_of_hole & ~rim).to_numpy()).sum()),
                vacuum_rows=int(atoms.attrs.get("vacuum_rows", 0)))


def main() -> int:
    t0 = time.perf_counter()
    rows = [_one(lat, dose, seed, check) for lat in SETS for dose in DOSES for seed in SEEDS for check in (False, True)]
    df = pd.DataFrame(rows)
    seconds = time.perf_counter() - t0
    g = df.groupby(["lattice", "dose", "check"], sort=False)[
        ["lattice_in_hole", "vacancy_in_hole", "unknown_in_hole", "complexes_at_hole", "unknown_on_sheet",
         "rim_columns", "rim_columns_lost", "sheet_columns_lost"]].sum()
    lines = ["# Holes in the sheet", "",
             f"Written by `python benchmarks/vacuum_holes.py` ({seconds:.0f} s, 2-core CPU). Simulated frames of 256² px "
             f"at {PX * 1000:g} pm/px with a 1.2 nm square hole of vacuum (5 % of the frame's median) in the middle, "
             f"{len(SEEDS)} seeds per lattice and dose, `find_atoms` with its defaults: with the vacuum check "
             "(`stemflow.chem.vacuum_rows`, the default) and without it. Sums over the seeds: rows inside the hole "
             "by label, defect complexes in or within 2 bonds of the hole (the rim's cut columns and the network's "
             "rows over vacuum; no simulated defect), and rows labelled `unknown` elsewhere on the sheet (by either check of the "
             "chemistry: the dopant check labels some `unknown` too). *Rim columns lost*: the simulated sheet's columns "
             "(atoms and dopants) whose centre lies from half a bond to 2 bonds outside the hole and that no `lattice` or "
             "`dopant` row finds within half a bond (e.g. labelled `unknown` by the check); *other columns lost*: the "
             "same for the rest of the sheet.", "",
             "| lattice | dose (e⁻/Å²) | vacuum check | lattice rows in the hole | vacancy rows in the hole | "
             "unknown rows in the hole | complexes at the hole | unknown rows on the sheet | rim columns lost | "
             "other columns lost |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (lat, dose, check), r in g.iterrows():
        lines.append(f"| {lat} | {dose:.0e} | {'on' if check else 'off'} | {r.lattice_in_hole} | {r.vacancy_in_hole} | "
                     f"{r.unknown_in_hole} | {r.complexes_at_hole} | {r.unknown_on_sheet} | "
                     f"{r.rim_columns_lost} of {r.rim_columns} | {r.sheet_columns_lost} |")
    lines.append("")
    out = ROOT / "benchmarks" / "results"
    (out / "vacuum_holes.md").write_text("\n".join(lines))
    (out / "vacuum_holes.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    raise SystemExit(main())
