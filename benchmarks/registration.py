"""Registration of low-dose movies from the images: stemflow.registration against chained steps.

    python benchmarks/registration.py      # writes benchmarks/results/registration.md (+ .json)

``register_frames`` cross-correlates each frame with the sum of all the frames before it (each moved
by its own shift), then registers every frame again on the mean of the whole registered movie. The
baseline, run on the same frames in the same run, is what it did before: steps chained from each
frame to the one before, then the same passes on the mean. Movies: the development movies of
``lowdose_movies.py`` (graphene, 8 Si1C3 + 2 Si1C4 hopping and switching, 40 frames of 320² px at
10 pm/px, random-walk drift of 0.7 px RMS per frame and axis) at 1000 e⁻/Å² per frame, taken with a
probe of 0.8, 1.1 and 1.4 Å FWHM. Error: the RMS distance between the shifts and the true drift,
px, after removing their mean difference (the reference frame's own offset); a slip by one bond is
14.2 px.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lowdose_movies import DEFECTS, DEV_SEEDS, FRAMES, JITTER, PX, RATES, SIZE, fmt  # noqa: E402

from stemflow.registration import _peak, register_frames  # noqa: E402
from stemflow.simulate import simulate_movie  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROBES = (0.8, 1.1, 1.4)          # Å FWHM
DOSE = 1000.0
SIGMA = 0.64 * 0.11 / PX / 2.3548  # the smoothing find_atoms_movie uses, px
MAX_STEP = 0.4 * 0.142 / PX        # … and its search radius, px


def chained(frames, sigma_px, max_step, iterations=2):
    """The former registration: frame-to-frame steps summed, then passes on the registered mean."""
    sm = np.stack([ndimage.gaussian_filter(f.astype(np.float64), sigma_px) for f in frames])
    sm -= sm.mean(axis=(1, 2), keepdims=True)
    spec = np.fft.rfft2(sm)
    shape = sm.shape[1:]
    shifts = np.zeros((len(sm), 2))
    for t in range(1, len(sm)):
        shifts[t] = shifts[t - 1] + _peak(spec[t], spec[t - 1], shape, (0.0, 0.0), max_step)
    for _ in range(iterations):
        ref = np.mean([ndimage.shift(sm[t], -shifts[t], order=1, mode="nearest") for t in range(len(sm))], axis=0)
        ref_f = np.fft.rfft2(ref)
        shifts = np.stack([_peak(spec[t], ref_f, shape, shifts[t], max_step) for t in range(len(sm))])
        shifts -= shifts[0]
    return shifts


def rms_error(shifts, truth):
    d = shifts - truth
    d -= d.mean(axis=0)
    return float(np.sqrt((d ** 2).sum(axis=1).mean()))


def main():
    t_all = time.perf_counter()
    rows = []
    for probe in PROBES:
        for seed in DEV_SEEDS:
            mov = simulate_movie("graphene", FRAMES, SIZE, drift=(0.0, 0.0), drift_jitter=JITTER, seed=seed,
                                 pixel_size=PX, dose=DOSE, defects=DEFECTS, rates=RATES, probe_fwhm=probe)
            images = mov.images()
            truth = mov.drift.sort_values("frame")[["dy", "dx"]].to_numpy()
            rows.append(dict(probe_A=probe, seed=seed,
                             summed_px=rms_error(register_frames(images, sigma_px=SIGMA, max_step=MAX_STEP), truth),
                             chained_px=rms_error(chained(images, SIGMA, MAX_STEP), truth)))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    g = df.groupby("probe_A")
    summary = pd.DataFrame({
        "movies": g.size(),
        "summed median px": g.summed_px.median(), "summed max px": g.summed_px.max(),
        "chained median px": g.chained_px.median(), "chained max px": g.chained_px.max(),
        "chained > 3 px": g.chained_px.apply(lambda v: int((v > 3).sum())),
        "summed > 3 px": g.summed_px.apply(lambda v: int((v > 3).sum())),
    }).reset_index()
    seconds = time.perf_counter() - t_all
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "registration.json").write_text(json.dumps(
        {"movies": rows, "summary": summary.to_dict("records"), "seconds": seconds}, indent=1, default=float))
    md = ["# Registering low-dose movies from the images", "",
          f"Written by `python benchmarks/registration.py` on the 2-core CPU machine ({seconds:.0f} s). "
          f"{len(DEV_SEEDS)} development movies of `lowdose_movies.py` per probe ({FRAMES} frames of {SIZE}² px at "
          f"{PX * 1000:.0f} pm/px, {DOSE:.0f} e⁻/Å² per frame, random-walk drift {JITTER} px RMS per frame and "
          "axis). *summed*: `stemflow.registration.register_frames` (each frame on the sum of the frames before "
          "it, then on the mean of the registered movie); *chained*: the former first pass (frame-to-frame "
          "steps summed) with the same passes on the mean, run on the same frames. RMS error of the shifts "
          "against the true drift, px, after removing their mean difference; one bond is 14.2 px, and a "
          "registration more than 3 px off has slipped.", "",
          fmt(summary), "",
          "## Every movie", "", fmt(df), ""]
    (RESULTS / "registration.md").write_text("\n".join(md))
    print("wrote", RESULTS / "registration.md")


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    main()
