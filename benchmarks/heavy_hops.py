"""Heavy single atoms hopping on an amorphous support: hops found by ``track`` against the truth.

    python benchmarks/heavy_hops.py      # writes benchmarks/results/heavy_hops.md (+ .json)

Movies of Pt on amorphous carbon from ``stemflow.simulate.simulate_movie("amorphous", ...)``
(16 frames of 256² px, 20 Pt, each hopping with chance 0.1 a frame by the support's mean atom
spacing, drift 0.3 / −0.2 px a frame), found with ``find_atoms(..., lattice="amorphous")`` and
tracked with ``stemflow.tracking.track``. There is no host lattice to measure a spacing on: the
tracker takes a stand-in (``AMORPHOUS_SPACING_NM``, the support's C–C bond), and a move of 0.75 of
it is a hop. Scored with ``stemflow.tracking.scoring.score_events`` (the frame exactly right), for
the default and for other stand-ins given as ``spacing=``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import options, save  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SEEDS = (7, 8, 9)
PIXEL_SIZES = (0.02, 0.03)
#: Stand-in spacings compared (nm); None is the tracker's default.
SPACINGS = (None, 0.2, 0.25)


def main(argv=None) -> int:
    options(__doc__, argv)
    import stemflow
    from stemflow.simulate import simulate_movie
    from stemflow.tracking import track
    from stemflow.tracking.pipeline import AMORPHOUS_SPACING_NM
    from stemflow.tracking.scoring import score_events

    t0 = time.perf_counter()
    acc = {str(s): dict(true=0, found=0, tp=0, movies=[]) for s in SPACINGS}
    for seed in SEEDS:
        for ps in PIXEL_SIZES:
            mov = simulate_movie("amorphous", 16, 256, seed=seed, pixel_size=ps, defects={"Pt1": 20},
                                 rates={"hop": 0.1}, drift=(0.3, -0.2))
            images = np.stack([mov.image(i) for i in range(16)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                atoms = stemflow.find_atoms(images, pixel_size=ps, lattice="amorphous")
            for sp in SPACINGS:
                traj, ev, _ = track(atoms, pixel_size=ps, spacing=sp)
                s = score_events(ev, mov.events, traj, mov.atoms, 0.1 / ps, kinds=("hop",)).loc["hop"]
                a = acc[str(sp)]
                a["true"] += int(s["true"])
                a["found"] += int(s["found"])
                a["tp"] += int(s["tp"])
                a["movies"].append(dict(seed=seed, pixel_size=ps, true=int(s["true"]), found=int(s["found"]),
                                        tp=int(s["tp"])))
            print(seed, ps, {k: (v["true"], v["found"], v["tp"]) for k, v in acc.items()}, flush=True)
    res = {"default_spacing_nm": AMORPHOUS_SPACING_NM, "seconds": time.perf_counter() - t0, "spacings": acc}

    def markdown(r):
        lines = ["# Heavy single atoms hopping on an amorphous support", "",
                 f"Written by `python benchmarks/heavy_hops.py` ({r['seconds']:.0f} s on the 2-core CPU machine). "
                 f"{len(SEEDS) * len(PIXEL_SIZES)} simulated movies (seeds {', '.join(map(str, SEEDS))} at "
                 f"{', '.join(f'{p * 1e3:g}' for p in PIXEL_SIZES)} pm/px; 16 frames of 256² px, 20 Pt hopping with "
                 "chance 0.1 a frame by the support's mean atom spacing, drift 0.3 / −0.2 px a frame); "
                 "`find_atoms(..., lattice='amorphous')`, then `track` with the stand-in spacing given (a move of "
                 "0.75 of it is a hop; default: the support's C–C bond, "
                 f"{r['default_spacing_nm']:g} nm). Hops scored with the frame exactly right.", "",
                 "| spacing (nm) | true hops | found | right | precision | recall |", "|---|---|---|---|---|---|"]
        for k, v in r["spacings"].items():
            name = f"{r['default_spacing_nm']:g} (default)" if k == "None" else k
            p = v["tp"] / v["found"] if v["found"] else float("nan")
            rc = v["tp"] / v["true"] if v["true"] else float("nan")
            lines.append(f"| {name} | {v['true']} | {v['found']} | {v['tp']} | {p:.3f} | {rc:.3f} |")
        return "\n".join(lines) + "\n"

    return save(RESULTS, "heavy_hops", res, lambda r: (RESULTS / "heavy_hops.md").write_text(markdown(r)))


if __name__ == "__main__":
    sys.exit(main())
