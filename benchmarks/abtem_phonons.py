"""How many frozen-phonon configurations the multislice set needs: column intensities against their number.

A HAADF image is the average over the atoms' thermal displacements during the dwell time of
each pixel, so a real image is the limit of infinitely many frozen-phonon configurations. With
few configurations, each column keeps the scattering of its few random snapshots: columns that
should be alike come out brighter or darker by chance. This matters most where stemflow compares
one column's intensity with its neighbours' — a chalcogen pair (S2) against a column with one S
left (``V_S``), 1.0 against about 0.5 of an intact pair's intensity.

Two steps, as ``abtem_set.py``:

``--generate`` (the abTEM environment) simulates the first frame of WS2, MoS2 and graphene of
``abtem_set.py`` again, with the set's physics and seeds, at several numbers of configurations,
into ``benchmarks/_cache/abtem_phonons/cNN/`` (git-ignored; about 20 min on 2 CPU cores).

``--score`` (stemflow's environment) measures every column's occupancy
(:func:`stemflow.chem.column_occupancy`, the measure that tells ``V_S`` from an intact pair) at
its true position, on the noise-free image and on the Poisson image at the set's dose, and
writes ``benchmarks/results/abtem_phonons.md`` and ``.json``: the spread (SD) of the intact
columns' occupancy per sublattice and the mean and SD of the ``V_S`` columns.

Commands::

    /tmp/abtemvenv/bin/python benchmarks/abtem_phonons.py --generate
    .venv/bin/python benchmarks/abtem_phonons.py --score
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abtem_set import FRAMES, RESULTS, ROOT, generate  # noqa: E402

CACHE = ROOT / "benchmarks" / "_cache" / "abtem_phonons"
#: Numbers of frozen-phonon configurations tried per lattice (frame 0 of each).
PLAN = {"ws2": (2, 8, 24), "mos2": (2, 8, 24), "graphene": (3, 12)}


def _generate(force=False):
    for lattice, counts in PLAN.items():
        for n in counts:
            generate([lattice], cache=CACHE / f"c{n:02d}", configs=n, frames=1, force=force)


def _stats(occ, label, sub):
    """Occupancy figures of one frame: intact columns per sublattice and V_S columns."""
    out = {}
    for s, name in ((0, "metal"), (1, "chalcogen")):
        v = occ[(label == "lattice") & (sub == s) & np.isfinite(occ)]
        if len(v):
            out[f"{name}_sd"] = float(np.std(v))
            out[f"{name}_min"] = float(np.min(v))
    half = occ[(label == "vacancy") & (sub == 1) & (occ > 0.25)]
    if len(half):
        out["v_s_mean"], out["v_s_sd"] = float(np.mean(half)), float(np.std(half))
    return out


def score() -> dict:
    import warnings

    import pandas as pd

    from stemflow.chem import column_occupancy

    rows = []
    for lattice, counts in PLAN.items():
        for n in counts:
            f = CACHE / f"c{n:02d}" / f"{lattice}_00.npz"
            if not f.exists():
                raise SystemExit(f"{f} is missing: run --generate first (with the abTEM environment)")
            z = np.load(f, allow_pickle=False)
            meta = json.loads(str(z["meta"]))
            truth = pd.DataFrame({"y": z["y"], "x": z["x"], "label": z["label"].astype(str)})
            row = dict(lattice=lattice, configs=int(meta["frozen_phonons"]), seconds=float(meta["seconds"]),
                       dose=float(meta["dose_e_per_A2"]))
            for kind in ("signal", "image"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = column_occupancy(truth, z[kind], float(z["pixel_size"]), lattice)
                sub = t["sublattice"].to_numpy(np.int64) if lattice != "graphene" else np.zeros(len(t), np.int64)
                st = _stats(t["occupancy"].to_numpy(np.float64), truth["label"].to_numpy(), sub)
                row.update({f"{'clean' if kind == 'signal' else 'noisy'}_{k}": v for k, v in st.items()})
            rows.append(row)
    table = pd.DataFrame(rows)
    set_configs = {lat: FRAMES[lat]["configs"] for lat in PLAN}
    out = dict(rows=rows, set_configs=set_configs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "abtem_phonons.json").write_text(json.dumps(out, indent=1))
    cols = ["lattice", "configs", "seconds", "clean_chalcogen_sd", "clean_chalcogen_min", "clean_v_s_mean",
            "clean_v_s_sd", "clean_metal_sd", "noisy_chalcogen_sd", "noisy_v_s_sd", "noisy_metal_sd"]
    cols = [c for c in cols if c in table.columns]
    lines = [
        "# Frozen-phonon configurations of the multislice set",
        "",
        f"Written by `python benchmarks/abtem_phonons.py` (frames from `--generate` with the abTEM "
        f"environment). Frame 0 of each lattice of `abtem_set.py` simulated again with the set's physics and "
        f"seeds and the number of frozen-phonon configurations in `configs`; `seconds`: its simulation time on "
        f"the 2-core CPU machine. Occupancy (`stemflow.chem.column_occupancy`, 1 for an intact column) measured "
        f"at every true column: `clean_`: on the noise-free image, `noisy_`: on its Poisson image at "
        f"{rows[0]['dose']:.0e} e⁻/Å²; `chalcogen_sd`, `metal_sd`: SD over the intact columns of that sublattice "
        f"(graphene: every C column, under `metal`), `chalcogen_min` the lowest; `v_s_*`: mean and SD over "
        f"the chalcogen columns with one S left. A real image averages over every configuration, so the spread "
        f"of `clean_` that falls with `configs` is the simulation's sampling error, not physics. "
        f"The set (`abtem_set.py`) uses {', '.join(f'{k} {v}' for k, v in set_configs.items())} configurations.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in table[cols].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    (RESULTS / "abtem_phonons.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generate", action="store_true", help="simulate the frames with abTEM into the cache")
    ap.add_argument("--score", action="store_true", help="measure the occupancies")
    ap.add_argument("--force", action="store_true", help="with --generate: remake cached frames too")
    args = ap.parse_args(argv)
    if args.generate:
        t0 = time.perf_counter()
        _generate(args.force)
        print(f"generation: {time.perf_counter() - t0:.0f} s")
    if args.score or not args.generate:
        score()


if __name__ == "__main__":
    main()
