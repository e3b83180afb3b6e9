"""Simulated frames beside real ones: intensity histograms, power spectra and noise.

    python benchmarks/sim_vs_real.py     # writes benchmarks/results/sim_vs_real.md and
                                         # docs/images/sim_vs_real.png (about a minute, 2 cores)

Sets compared (a set that is not there is skipped with a message):

- **real Si** — the 61 labelled Si-doped graphene frames (60 kV HAADF, 7.8–15.6 pm/px) read with
  :func:`stemflow.labelled.read_dopant_complexes` from :func:`stemflow.labelled.dev_data_dir`;
- **real Pt** — the 11 Pt-on-carbon-nitride frames (:func:`stemflow.labelled.read_heavy_atoms`),
  another microscope and specimen, shown for the noise (its gain and offset are known:
  about 1e4 detector units per count on an offset of about 1.8e5);
- **abTEM** — the multislice graphene frames cached by ``benchmarks/abtem_set.py`` in
  ``benchmarks/_cache/abtem`` (60 kV, 30 mrad, 80–200 mrad, Poisson counts; read, never made here);
- **sim default** — :func:`stemflow.simulate.simulate_image` with the default ``Imaging`` (the
  Gaussian probe, dose 1e5 e⁻/Å²), Si-graphene at the real set's pixel sizes;
- **sim default, matched dose** — the same at the dose that gives the real Si frames' median
  counts per pixel (measured by the noise-level function below);
- **sim microscope** — the same specimens and dose with the microscope options of
  :class:`stemflow.simulate.Imaging` (:data:`MICROSCOPE`): the probe from a 60 kV, 31 mrad lens
  with a little C3, C5, defocus, focal spread and source size, a 60–200 mrad detector (Z exponent
  from the angles), a thermal-diffuse halo, slight line drift, flyback and afterglow.

Measures, per frame, then the median over a set's frames:

- **intensity histogram** of (I − median) / s, s = (p84 − p16) / 2 (robust spread); the table
  gives p1 and p99 of that and the Wasserstein-1 distance of the pooled values to real Si's.
- **radially averaged power spectrum** (mean removed, Hann window), against spatial frequency in
  1/nm, normalised to unit power over 1–16 nm⁻¹ (a band every set has); the table gives the
  graphene first-order peak (4.69 nm⁻¹, d = 2.13 Å) over the spectrum at 3.7 and 5.7 nm⁻¹, the
  share of the 1–16 nm⁻¹ power above 10 nm⁻¹ (the white-noise floor) and the mean |log10| ratio
  to real Si's median spectrum over 1–16 nm⁻¹.
- **noise-level function**: the variance of the second difference along y,
  e = I[r] − (I[r−1] + I[r+1]) / 2 (1.5 σ² for white noise), in 12 bins of the local 3 × 3 mean
  (6σ-trimmed), fitted by var = g·(mean − offset): a Poisson detector with g units per count on an
  offset. g and offset give the effective counts (I − offset) / g. The simulated frames are counts
  (g = 1, offset 0 by construction), which checks the estimator. The ratio of the same variance
  along x to along y is 1 for white noise and falls with afterglow along the fast scan.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stemflow.labelled import dev_data_dir, read_dopant_complexes, read_heavy_atoms  # noqa: E402
from stemflow.simulate import Imaging, probe_profile, simulate_image  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"
ABTEM = ROOT / "benchmarks" / "_cache" / "abtem"

#: Microscope options of the "sim microscope" set: 60 kV Nion-class HAADF on graphene.
MICROSCOPE = dict(probe="aberrated", voltage_kv=60.0, aperture_mrad=31.0, defocus=-10.0, c3=0.001, c5=1.0,
                  source_size=0.7, focal_spread=35.0, detector_inner_mrad=60.0, detector_outer_mrad=200.0,
                  tds_background=0.1, line_drift=0.02, flyback=1.0, flyback_length=8.0, afterglow=0.03)
#: Simulated frames: (pixel size nm/px, size px), as the real Si set (7.8 pm/px 256², 15.6 pm/px 128²).
SIM_FRAMES = [(0.0078125, 256)] * 12 + [(0.015625, 128)] * 4
SIM_DEFECTS = {"Si1C3": 2, "Si1C4": 1}
SEED0 = 900
HIST_BINS = np.linspace(-4.0, 8.0, 61)
FREQ = np.geomspace(0.5, 40.0, 90)         # 1/nm
BAND = (1.0, 16.0)                          # 1/nm, common to every set
LATTICE_F = 1.0 / (0.246 * np.sqrt(3) / 2)  # graphene {100}: 4.69 nm⁻¹


# ------------------------------------------------------------------------------------ measures

def robust_z(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(I − median) / ((p84 − p16) / 2); frames of whole counts are dithered by U(−½, ½) first, so
    their histograms are comparable with those of analogue frames."""
    a = np.asarray(img, np.float64)
    if np.array_equal(a, np.round(a)):
        a = a + rng.uniform(-0.5, 0.5, a.shape)
    p16, p50, p84 = np.percentile(a, [16, 50, 84])
    return (a - p50) / max((p84 - p16) / 2, 1e-12)


def power_spectrum(img: np.ndarray, pixel_nm: float) -> np.ndarray:
    """Radially averaged power spectrum on :data:`FREQ` (NaN above Nyquist), unit power over BAND."""
    a = np.asarray(img, np.float64)
    a = a - a.mean()
    h, w = a.shape
    a = a * np.outer(np.hanning(h), np.hanning(w))
    p = np.abs(np.fft.fft2(a)) ** 2
    fy, fx = np.fft.fftfreq(h, pixel_nm), np.fft.fftfreq(w, pixel_nm)
    f = np.hypot(fy[:, None], fx[None, :]).ravel()
    df = 1.0 / (min(h, w) * pixel_nm)
    k = np.rint(f / df).astype(np.int64)
    keep = k > 0
    n = np.bincount(k[keep])
    s = np.bincount(k[keep], p.ravel()[keep]) / np.maximum(n, 1)
    fk = np.arange(len(s)) * df
    ok = (n > 0) & (fk <= 0.5 / pixel_nm)
    fk, s = fk[ok], s[ok]
    band = (fk >= BAND[0]) & (fk <= BAND[1])
    s = s / np.trapezoid(s[band], fk[band])
    out = np.interp(FREQ, fk, s, left=np.nan, right=np.nan)
    out[FREQ > fk.max()] = np.nan
    return out


def noise_level(img: np.ndarray, nbins: int = 12) -> dict:
    """Noise-level function: gain, offset, the (mean, variance) curve and the x/y noise ratio."""
    a = np.asarray(img, np.float64)
    ey = (a[1:-1] - 0.5 * (a[:-2] + a[2:]))[:, 1:-1]
    ex = (a[:, 1:-1] - 0.5 * (a[:, :-2] + a[:, 2:]))[1:-1]
    m = ndimage.uniform_filter(a, 3)[1:-1, 1:-1]
    lo, hi = np.quantile(m, [0.01, 0.99])
    edges = np.quantile(m[(m >= lo) & (m <= hi)], np.linspace(0, 1, nbins + 1))
    mean, var, varx = [], [], []
    for a0, a1 in zip(edges[:-1], edges[1:]):
        sel = (m >= a0) & (m < a1)
        if sel.sum() < 50:
            continue
        vs = []
        for e in (ey[sel], ex[sel]):
            q1, q3 = np.percentile(e, [25, 75])
            sd = (q3 - q1) / 1.349 + 1e-12
            vs.append(e[np.abs(e - np.median(e)) < 6 * sd].var() / 1.5)
        if min(vs) <= 0:      # a bin of constant pixels (all zero counts) says nothing
            continue
        mean.append(m[sel].mean())
        var.append(vs[0])
        varx.append(vs[1])
    mean, var = np.array(mean), np.array(var)
    g, b = np.polyfit(mean, var, 1)
    offset = -b / g if g > 0 else float("nan")
    return dict(gain=float(g), offset=float(offset), mean=mean, var=var,
                xy_ratio=float(np.median(np.array(varx) / var)),
                counts_median=float((np.median(a) - offset) / g), counts_p99=float((np.percentile(a, 99) - offset) / g))


def measure(frames: list[tuple[np.ndarray, float]]) -> dict:
    """Every measure of a set of (image, pixel size nm/px) frames; medians over frames."""
    hists, specs, nlfs, pooled, p1, p99 = [], [], [], [], [], []
    rng = np.random.default_rng(0)
    for img, px in frames:
        z = robust_z(img, rng)
        hists.append(np.histogram(z, HIST_BINS, density=True)[0])
        pooled.append(rng.choice(z.ravel(), min(z.size, 20000), replace=False))
        p1.append(np.percentile(z, 1))
        p99.append(np.percentile(z, 99))
        specs.append(power_spectrum(img, px))
        nlfs.append(noise_level(img))
    specs = np.array(specs)
    with warnings.catch_warnings():   # above every frame's Nyquist frequency: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        spec = np.nanmedian(specs, axis=0)

    def at(f):
        return float(np.interp(np.log(f), np.log(FREQ), spec))

    band = (FREQ >= BAND[0]) & (FREQ <= BAND[1])
    high = band & (FREQ >= 10.0)
    floor = float(np.trapezoid(spec[high], FREQ[high]) / np.trapezoid(spec[band], FREQ[band]))
    return dict(n=len(frames), pixel_sizes=sorted({round(px * 1000, 1) for _, px in frames}),
                hist=np.median(hists, axis=0), pooled=np.concatenate(pooled), p1=float(np.median(p1)),
                p99=float(np.median(p99)), spectrum=spec, lattice_peak=at(LATTICE_F) / np.sqrt(at(3.7) * at(5.7)),
                floor_share=floor, nlf=nlfs,
                gain=float(np.median([d["gain"] for d in nlfs])), offset=float(np.median([d["offset"] for d in nlfs])),
                counts_median=float(np.median([d["counts_median"] for d in nlfs])),
                counts_p99=float(np.median([d["counts_p99"] for d in nlfs])),
                xy_ratio=float(np.median([d["xy_ratio"] for d in nlfs])))


# ------------------------------------------------------------------------------------ sets

def real_sets() -> tuple[dict, list[str]]:
    sets, notes = {}, []
    d = dev_data_dir()
    if d is None:
        notes.append("real Si and real Pt: skipped, the labelled development data (shared/data or "
                     "STEMFLOW_DEV_DATA) is not here")
        return sets, notes
    for key, name, reader in (("real Si", "si_graphene_dev.npz", read_dopant_complexes),
                              ("real Pt", "pt_single_atoms_dev.npz", read_heavy_atoms)):
        if (d / name).exists():
            sets[key] = [(f.image, f.pixel_size) for f in reader(d / name)]
        else:
            notes.append(f"{key}: skipped, {d / name} is not there")
    return sets, notes


def abtem_set() -> tuple[list, list[str]]:
    files = sorted(ABTEM.glob("graphene_[0-9][0-9].npz"))
    if not files:
        return [], [f"abTEM: skipped, no graphene frames cached in {ABTEM.relative_to(ROOT)} "
                    "(made by benchmarks/abtem_set.py --generate)"]
    out = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            out.append((np.asarray(z["image"], np.float32), float(z["pixel_size"])))
    return out, []


def sim_set(dose: float, options: dict) -> list:
    out = []
    for i, (px, n) in enumerate(SIM_FRAMES):
        sim = simulate_image("graphene", n, seed=SEED0 + i, defects=SIM_DEFECTS, pixel_size=px, dose=dose, **options)
        out.append((sim.image, px))
    return out


def matched_dose(real_si: dict | None, options: dict) -> float:
    """Dose that gives the real Si frames' median effective counts per pixel at 7.8 pm/px."""
    if real_si is None:
        return 1e5
    want = float(np.median([d["counts_median"] for d, (_, px) in zip(real_si["nlf"], real_si["frames"])
                            if abs(px - 0.0078125) < 1e-6]))
    pilot = [np.median(simulate_image("graphene", 256, seed=SEED0 + i, defects=SIM_DEFECTS, pixel_size=0.0078125,
                                      dose=1e5, noise=False, **options).expected) for i in range(3)]
    return 1e5 * want / float(np.median(pilot))


# ------------------------------------------------------------------------------------ output

def figure(res: dict, examples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"real Si": "k", "real Pt": "0.6", "abTEM": "tab:purple", "sim default": "tab:blue",
               "sim default, matched dose": "tab:cyan", "sim microscope": "tab:red"}
    fig = plt.figure(figsize=(16, 8.4))
    gs = fig.add_gridspec(2, 4, height_ratios=[1, 1.05], hspace=0.32, wspace=0.28)
    for j, (name, (img, px)) in enumerate(list(examples.items())[:4]):
        ax = fig.add_subplot(gs[0, j])
        n = int(round(2.0 / px))   # 2 nm × 2 nm
        crop = np.asarray(img, np.float64)[:n, :n]
        lo, hi = np.percentile(crop, [0.5, 99.5])
        ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi, extent=(0, crop.shape[1] * px, crop.shape[0] * px, 0))
        ax.set_title(f"{name} ({px * 1000:.1f} pm/px)", fontsize=10)
        ax.set_xlabel("nm")
    ax = fig.add_subplot(gs[1, 0])
    centres = 0.5 * (HIST_BINS[1:] + HIST_BINS[:-1])
    for name, r in res.items():
        ax.plot(centres, r["hist"], color=colours[name], lw=1.6 if "real Si" in name else 1.2, label=name,
                ls="--" if name == "real Pt" else "-")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel("(I − median) / robust spread")
    ax.set_ylabel("density (median over frames)")
    ax.set_title("intensity histograms", fontsize=10)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(gs[1, 1])
    for name, r in res.items():
        ax.loglog(FREQ, r["spectrum"], color=colours[name], lw=1.2, ls="--" if name == "real Pt" else "-")
    ax.axvline(LATTICE_F, color="0.8", lw=0.8, zorder=0)
    ax.axvline(2 * LATTICE_F / np.sqrt(3), color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("spatial frequency (1/nm)")
    ax.set_ylabel("power (unit power over 1–16 nm⁻¹)")
    ax.set_title("radially averaged power spectra", fontsize=10)
    ax = fig.add_subplot(gs[1, 2])
    for name, r in res.items():
        xs, ys = [], []
        for d in r["nlf"]:
            xs.append((d["mean"] - d["offset"]) / d["gain"])
            ys.append(d["var"] / d["gain"] ** 2)
        x, y = np.concatenate(xs), np.concatenate(ys)
        ok = (x > 0) & (y > 0)
        ax.scatter(x[ok], y[ok], s=3, color=colours[name], alpha=0.35,
                   label=f"{name}: gain {r['gain']:.3g}, offset {r['offset']:.3g}")
    ax.plot([0.1, 200], [0.1, 200], "k:", lw=0.8, label="Poisson: variance = mean")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.1, 200)
    ax.set_ylim(0.1, 300)
    ax.set_xlabel("local mean (effective counts)")
    ax.set_ylabel("noise variance (counts²)")
    ax.set_title("noise-level functions (gain, offset per frame)", fontsize=10)
    ax.legend(fontsize=6, loc="upper left", markerscale=3)
    ax = fig.add_subplot(gs[1, 3])
    px = 0.005
    r = (np.arange(121) - 60) * px * 10
    for name, im in (("Gaussian core + tail (default)", Imaging(pixel_size=px)),
                     ("aberrated (sim microscope)", Imaging(pixel_size=px, **MICROSCOPE)),
                     ("aberration-free, 60 kV 31 mrad", Imaging(pixel_size=px, probe="aberrated", aperture_mrad=31))):
        p = probe_profile(im, 121)
        ax.semilogy(r, p[60] / p.max(), label=name)
    ax.set_ylim(1e-4, 1.5)
    ax.set_xlabel("Å")
    ax.set_ylabel("probe intensity / peak")
    ax.set_title("probes (simulate.probe_profile)", fontsize=10)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def write_md(res: dict, notes: list[str], doses: dict, seconds: float, path: Path) -> None:
    ref = res.get("real Si")
    L = ["# Simulated frames beside real ones", "",
         f"Written by `python benchmarks/sim_vs_real.py` on {time.strftime('%Y-%m-%d')} ({seconds:.0f} s); every "
         "number here is measured by it, medians over each set's frames. Figure: "
         "`docs/images/sim_vs_real.png`. Measures and sets: see the script's docstring.", ""]
    L += [f"- {n}" for n in notes]
    if notes:
        L.append("")
    L += ["Simulated sets: Si-graphene (" + ", ".join(f"{k} {v}" for k, v in SIM_DEFECTS.items())
          + f"), {len(SIM_FRAMES)} frames each, seeds {SEED0}–{SEED0 + len(SIM_FRAMES) - 1}, "
          "12 × 256² at 7.8 pm/px and 4 × 128² at 15.6 pm/px as in the real Si set. Doses: "
          + ", ".join(f"{k} {v:.3g} e⁻/Å²" for k, v in doses.items()) + " (matched: the real Si frames' median "
          "effective counts per pixel at 7.8 pm/px). Microscope options: `"
          + ", ".join(f"{k}={v!r}" for k, v in MICROSCOPE.items()) + "`.", ""]
    cols = list(res)
    band = (FREQ >= BAND[0]) & (FREQ <= BAND[1])
    if ref is not None:
        for r in res.values():
            r["w1"] = float(stats.wasserstein_distance(r["pooled"], ref["pooled"]))
            r["logr"] = float(np.nanmean(np.abs(np.log10(r["spectrum"][band] / ref["spectrum"][band]))))
    L.append("| | " + " | ".join(cols) + " |")
    L.append("|---|" + "---|" * len(cols))

    def row(label, fn):
        L.append(f"| {label} | " + " | ".join(fn(res[c]) for c in cols) + " |")

    row("frames", lambda r: str(r["n"]))
    row("pixel sizes (pm/px)", lambda r: ", ".join(f"{p:g}" for p in r["pixel_sizes"]))
    row("NLF gain (units per count)", lambda r: f"{r['gain']:.3g}")
    row("NLF offset (units)", lambda r: f"{r['offset']:.3g}")
    row("effective counts per px, median", lambda r: f"{r['counts_median']:.2f}")
    row("effective counts per px, p99", lambda r: f"{r['counts_p99']:.1f}")
    row("noise variance x / y (1 = white)", lambda r: f"{r['xy_ratio']:.3f}")
    row("histogram p1 (robust z)", lambda r: f"{r['p1']:.2f}")
    row("histogram p99 (robust z)", lambda r: f"{r['p99']:.2f}")
    if ref is not None:
        row("histogram W1 distance to real Si", lambda r: f"{r['w1']:.3f}")
    row("lattice peak 4.69 nm⁻¹ / neighbours", lambda r: f"{r['lattice_peak']:.2f}")
    row("spectrum: power share above 10 nm⁻¹", lambda r: f"{r['floor_share']:.3f}")
    if ref is not None:
        row("spectrum: mean abs log10 ratio to real Si (1–16 nm⁻¹)", lambda r: f"{r['logr']:.3f}")
    L.append("")
    if ref is not None:
        d, m = res["sim default, matched dose"], res["sim microscope"]
        L += [f"Against real Si, at the same dose the microscope options move the histogram distance from "
              f"{d['w1']:.3f} to {m['w1']:.3f}, the spectral distance from {d['logr']:.3f} to {m['logr']:.3f}, "
              f"the lattice peak from {d['lattice_peak']:.2f} to {m['lattice_peak']:.2f} "
              f"(real {ref['lattice_peak']:.2f}) "
              f"and the noise floor share from {d['floor_share']:.3f} to {m['floor_share']:.3f} (real "
              f"{ref['floor_share']:.3f}). What is left: the real frames have weaker lattice fringes against "
              "their noise and more power below 2 nm⁻¹ (contamination, thickness and background that the "
              "simulator's `background`, `contamination` and `support` options, off in these sets, "
              "stand for).", ""]
    L += ["Reading it: the simulated sets are counts, so their fitted gain near 1 and offset near 0 check "
          "the noise-level estimator (the Pt frames' 1e4 per count on 1.8e5 is the other check). The real "
          "frames are analogue (their values are continuous, not multiples of the fitted gain: each electron "
          "gives a pulse of random height), so their 'effective counts' are fewer than the electrons that "
          "made them, and their histograms are continuous where the simulated counts are whole numbers "
          "(plus read noise). Real Pt is another specimen and microscope: compare its noise, not its "
          "histogram or spectrum, with the graphene sets.", ""]
    if "abTEM" in res:
        L += [f"The abTEM frames hold {res['abTEM']['mean_counts']:.2f} counts per pixel on average (the "
              "fraction of the probe that multislice sends to the 80–200 mrad detector × 1e5 e⁻/Å²), against "
              f"{res['sim default']['mean_counts_15']:.2f} for the sim default frames at 15.6 pm/px and the same "
              "dose: the simulator's `cross_section` is calibrated to the counts of real frames, not to the "
              "physical detector fraction, so compare abTEM's shapes (histogram, spectrum), not its level."]
    L.append("")
    path.write_text("\n".join(L))


def main() -> dict:
    t0 = time.perf_counter()
    real, notes = real_sets()
    abt, more = abtem_set()
    notes += more
    res = {}
    if "real Si" in real:
        res["real Si"] = measure(real["real Si"])
        res["real Si"]["frames"] = real["real Si"]
    if "real Pt" in real:
        res["real Pt"] = measure(real["real Pt"])
    if abt:
        res["abTEM"] = measure(abt)
    d_match = matched_dose(res.get("real Si"), {})
    d_micro = matched_dose(res.get("real Si"), MICROSCOPE)
    doses = {"sim default": 1e5, "sim default, matched dose": d_match, "sim microscope": d_micro}
    sims = {"sim default": sim_set(1e5, {}), "sim default, matched dose": sim_set(d_match, {}),
            "sim microscope": sim_set(d_micro, MICROSCOPE)}
    for k, v in sims.items():
        res[k] = measure(v)
        res[k]["mean_counts_15"] = float(np.mean([img.mean() for img, px in v if abs(px - 0.015625) < 1e-6]))
    if abt:
        res["abTEM"]["mean_counts"] = float(np.mean([img.mean() for img, _ in abt]))
    examples = {}
    if "real Si" in real:
        examples["real Si"] = real["real Si"][0]
    examples["sim default"] = sims["sim default"][0]
    examples["sim microscope"] = sims["sim microscope"][0]
    if abt:
        examples["abTEM"] = abt[0]
    else:
        examples["sim default, matched dose"] = sims["sim default, matched dose"][0]
    res.get("real Si", {}).pop("frames", None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    IMAGES.mkdir(parents=True, exist_ok=True)
    figure(res, examples, IMAGES / "sim_vs_real.png")
    seconds = time.perf_counter() - t0
    write_md(res, notes, doses, seconds, RESULTS / "sim_vs_real.md")
    summary = {k: {m: r[m] for m in ("gain", "offset", "counts_median", "counts_p99", "xy_ratio", "p1", "p99",
                                     "lattice_peak", "floor_share")} for k, r in res.items()}
    print(json.dumps(dict(doses=doses, sets=summary, seconds=round(seconds, 1)), indent=1))
    return summary


if __name__ == "__main__":
    from _cli import options

    options(__doc__)
    main()
