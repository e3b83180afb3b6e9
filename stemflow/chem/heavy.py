"""Heavy single atoms on amorphous supports: point sources that rise significantly above the support.

On a thick amorphous support (carbon, carbon nitride, thin oxide) the support's own texture —
thickness and density varying at the scale of an atom — makes bright spots that look like heavy
atoms, and the shot noise grows with the support's brightness (real HAADF frames of Pt on carbon
nitride are Poisson-like: the variance of a pixel rises linearly with its mean). A heavy atom is a
point source: under a filter matched to the probe it rises above the local support level by more
than the local texture and noise do.

The significance map is that rise, the difference of two Gaussian filters (the probe, and the
local support level), divided by the *local* noise (the RMS of the image's finest-scale residual
over ``noise_scale_nm``) so that a bright, noisy region of the support does not pass for atoms
and a dim one does not hide them, and put in σ units by the frame's robust spread (1.4826 × MAD)
of that ratio. A heavy atom is a local maximum of the map at or above ``HEAVY_SIGNIFICANCE``.

Units: positions in px, pixel size in nm/px, widths in nm, significance in σ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import median_abs_deviation

from ..errors import InputError, check_positive
from ..tables import ATOMIC_NUMBER

__all__ = ["significance_map", "find_heavy_atoms", "heavy_atom_prob", "name_heavy_atoms", "integrated_excess", "HEAVY_SIGNIFICANCE",
           "HEAVY_MIN_SEPARATION_NM", "HEAVY_MIN_ROUNDNESS", "HEAVY_POPULATION_GAP", "HEAVY_DISK_NM", "HEAVY_PROB"]

#: Significance a heavy atom must reach, σ. A 512² frame at 30 pm/px holds about 10⁴ independent
#: probe-sized areas; a one-sided Gaussian tail beyond 4 σ (3·10⁻⁵) gives under one false atom
#: per frame from the support's fluctuations alone.
HEAVY_SIGNIFICANCE = 4.0
#: Two heavy-atom detections closer than this (nm) are one atom seen twice (a blob split in two);
#: heavy atoms bonded to each other sit 0.25–0.28 nm apart (Pt–Pt), at least ~0.2 nm in projection.
HEAVY_MIN_SEPARATION_NM = 0.15
#: Least roundness of a heavy atom (weaker / stronger curvature): ridges such as the bright side of
#: a support's edge are near 0, point sources near 1 (noisy real atoms reach 0.3–1).
HEAVY_MIN_ROUNDNESS = 0.2
#: Least ratio of significances between two populations of maxima in a frame for the lower to be
#: support (see :func:`find_heavy_atoms`); on real Pt frames no such gap occurs, on simulated thin
#: films heavy atoms stand 3–5× above the light-atom clusters.
HEAVY_POPULATION_GAP = 1.8
#: Radius (nm) over which a maximum's integrated excess is summed (:func:`find_heavy_atoms`): the
#: probe's core and most of what several nanometres of defocus spread it to (a 30 mrad probe 8 nm
#: out of focus is a disk of radius 0.24 nm).
HEAVY_DISK_NM = 0.2
#: (a, b) of the chance that a heavy atom found at significance s is one, 1 / (1 + exp(-(a + b · ln s))):
#: fitted on the labelled real Pt-on-carbon-nitride development frames by
#: ``benchmarks/heavy_atom_prob.py`` (there each frame scored by the fit to the other frames has an
#: expected calibration error of 0.021). Real supports make bright point-like spots that no
#: Gaussian null foresees, so a 4 σ call is right about one time in five there, an 8 σ call
#: nearly always.
HEAVY_PROB = (-12.150, 7.813)


def heavy_atom_prob(significance) -> np.ndarray:
    """Chance that a heavy atom found at this significance is one (:data:`HEAVY_PROB`).

    Parameters
    ----------
    significance : array_like
        σ, as :func:`find_heavy_atoms` gives it (positive).

    Returns
    -------
    ndarray of float
        Probability, 0–1.

    Examples
    --------
    >>> heavy_atom_prob([4.0, 6.0, 10.0]).round(2).tolist()
    [0.21, 0.86, 1.0]
    """
    s = np.maximum(np.asarray(significance, np.float64), 1e-9)
    a, b = HEAVY_PROB
    return 1.0 / (1.0 + np.exp(-(a + b * np.log(s))))


def significance_map(image, pixel_size: float, *, probe_sigma_nm: float = 0.05, background_scale: float = 3.0,
                     noise_scale_nm: float = 0.5) -> np.ndarray:
    """Matched-filter significance (σ) of a point source at every pixel of one frame.

    Parameters
    ----------
    image : ndarray (y, x)
        One frame (any intensity units; raw detector counts are fine).
    pixel_size : float
        nm/px.
    probe_sigma_nm : float
        Standard deviation of the probe's core, nm (0.05 nm: a 1.2 Å FWHM probe).
    background_scale : float
        The local support level is the image smoothed over this many probe widths.
    noise_scale_nm : float
        Width (nm, Gaussian σ) over which the local noise is measured.

    Returns
    -------
    ndarray (y, x) of float64
        The filtered excess over the local noise, in units of its robust spread over the frame.
        Flat or constant frames give zeros.
    """
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise InputError(f"the heavy-atom significance takes one 2-D frame; got shape {img.shape}")
    if not np.isfinite(img).all():
        raise InputError("the frame holds NaN or infinite pixels; fill or crop them before finding heavy atoms")
    pixel_size = check_positive(pixel_size, "pixel_size", "nm/px")
    s = max(check_positive(probe_sigma_nm, "probe_sigma_nm", "nm") / pixel_size, 0.5)
    excess = ndimage.gaussian_filter(img, s) - ndimage.gaussian_filter(img, background_scale * s)
    fine = img - ndimage.gaussian_filter(img, min(1.0, s))
    noise = np.sqrt(ndimage.gaussian_filter(fine * fine, max(noise_scale_nm / pixel_size, 2.0 * s)))
    floor = np.median(noise)
    if not floor > 0:
        return np.zeros_like(img)
    z = excess / np.maximum(noise, 1e-3 * floor)
    spread = median_abs_deviation(z, axis=None, scale="normal")
    return z / spread if spread > 0 else np.zeros_like(img)


def find_heavy_atoms(image, pixel_size: float, *, significance: float = HEAVY_SIGNIFICANCE,
                     min_separation_nm: float = HEAVY_MIN_SEPARATION_NM, min_roundness: float = HEAVY_MIN_ROUNDNESS,
                     border_px: int = 2, populations: bool = True, **options) -> pd.DataFrame:
    """Heavy single atoms of one frame: round local maxima of :func:`significance_map` ≥ ``significance``.

    Parameters
    ----------
    image : ndarray (y, x)
    pixel_size : float
        nm/px.
    significance : float
        Least significance, σ.
    min_separation_nm : float
        Of two maxima closer than this, the more significant is kept (nm).
    min_roundness : float
        Least ratio of the weaker to the stronger curvature of the image at the maximum (the
        Hessian's eigenvalues, smoothed over 1.5 probe widths): a point source is round (about 1),
        the bright side of a support's edge or a fibre is a ridge (about 0).
    border_px : int
        Maxima this close to the frame edge are dropped (px): the filters are biased there.
    populations : bool
        Z-contrast makes heavy atoms a population of their own: when the significant maxima fall
        into two groups whose significances differ by at least ``HEAVY_POPULATION_GAP`` (the
        largest gap of the sorted values, at least 3 maxima above it), the lower group is support
        clusters (on a thin, sparse film a few light atoms together pass any fixed threshold) and
        is dropped — except its maxima whose integrated excess (counts over a disk of
        ``HEAVY_DISK_NM`` above the ring around it) is a heavy atom's: within that gap of the upper
        group's median, or above the split of all the maxima's integrated excesses into two
        populations (the same gap) where that split lies lower. Heavy atoms out of focus (on the
        exit side of a thick support) are spread and less significant but add about as many
        counts; light clusters add a fraction. Turn it off for frames that hold both heavy-atom
        clusters and single atoms, whose single atoms would read as the lower group.
    **options
        Passed to :func:`significance_map` (``probe_sigma_nm``, ``background_scale``,
        ``noise_scale_nm``).

    Returns
    -------
    DataFrame
        ``y``, ``x`` (px, sub-pixel from a parabola through the map's peak), ``significance``
        (σ), most significant first; ``attrs["lower_population"]``: how many maxima of a lower
        population were dropped as support clusters (0 when none, or ``populations`` is off), and
        ``attrs["lower_population_excess"]``: their median integrated excess over the kept heavy
        atoms' (NaN when none were dropped).
    """
    from skimage.feature import peak_local_max

    zmap = significance_map(image, pixel_size, **options)
    sep = max(1, int(round(min_separation_nm / pixel_size)))
    pk = peak_local_max(zmap, min_distance=sep, threshold_abs=significance, exclude_border=max(1, border_px))
    h, w = zmap.shape
    y, x = pk[:, 0], pk[:, 1]
    dy = _parabola(zmap[np.clip(y - 1, 0, h - 1), x], zmap[y, x], zmap[np.clip(y + 1, 0, h - 1), x])
    dx = _parabola(zmap[y, np.clip(x - 1, 0, w - 1)], zmap[y, x], zmap[y, np.clip(x + 1, 0, w - 1)])
    out = pd.DataFrame({"y": y + dy, "x": x + dx, "significance": zmap[y, x]})
    if min_roundness > 0 and len(out):
        out = out.loc[_roundness(image, y, x, 1.5 * _probe_px(pixel_size, options)) >= min_roundness]
    dropped, dropped_excess = 0, float("nan")
    if populations and len(out) > 3:
        split = _population_split(out["significance"].to_numpy())
        lower = (out["significance"] < split).to_numpy()
        if lower.any():
            # A heavy atom out of focus (on the exit side of a thick support) is spread, so its peak
            # significance falls into the lower group, but it adds about as many counts as one in
            # focus; light-atom clusters add a fraction of that. A lower maximum is kept when its
            # integrated excess is within the population gap of the upper group's median, or above
            # the split of the counts into their own two populations where that lies lower.
            counts = integrated_excess(image, out["y"].to_numpy(), out["x"].to_numpy(), pixel_size)
            upper = float(np.nanmedian(counts[~lower])) if np.isfinite(counts[~lower]).any() else np.nan
            pos = counts[np.isfinite(counts) & (counts > 0)]
            cut = upper / HEAVY_POPULATION_GAP
            if len(pos) > 3 and upper > 0:
                split_counts = _population_split(pos)
                if 0 < split_counts < cut:
                    cut = split_counts
            heavy_like = (counts >= cut if upper > 0 else np.zeros(len(out), bool))   # NaN: not rescued
            gone = lower & ~heavy_like
            dropped = int(gone.sum())
            if dropped and upper > 0 and np.isfinite(counts[gone]).any():
                dropped_excess = float(np.nanmedian(counts[gone]) / upper)
            out = out.loc[~lower | heavy_like]
    out = out.reset_index(drop=True)
    out.attrs.update(lower_population=dropped, lower_population_excess=dropped_excess)
    return out


def name_heavy_atoms(excess, candidates, gamma: float = 1.7) -> tuple[np.ndarray, np.ndarray]:
    """Name single heavy atoms of one frame by Z-contrast, with no reference column.

    A single atom adds counts ∝ Z**gamma (its HAADF cross-section), so in log counts the
    candidates' populations stand ``gamma · ln(Z_j / Z_k)`` apart whatever the dose, the detector
    gain or the support. The log counts are fitted by a mixture of one Gaussian per candidate at
    those fixed spacings, sharing one width, with a free offset and free weights (EM, started with
    each candidate on the median); every atom gets the candidate of highest posterior.

    Parameters
    ----------
    excess : array_like
        Counts each atom adds over its support (:func:`find_heavy_atoms` with the integrated
        excess: counts over a disk of ``HEAVY_DISK_NM`` above the ring around it), image units.
    candidates : sequence of str
        Element symbols that may be present (:data:`stemflow.tables.ATOMIC_NUMBER`).
    gamma : float
        Z-contrast exponent (1.6–2 for HAADF).

    Returns
    -------
    element : ndarray of str
        The candidate of each atom; ``""`` where ``excess`` is not a positive number.
    prob : ndarray of float
        Its posterior probability under the fitted mixture (1 with one candidate; NaN where no
        element is named).

    Raises
    ------
    InputError
        No candidates, or an unknown element symbol.

    Notes
    -----
    Without a reference (a column of known element), only the populations' ratios are measured:
    a frame whose atoms form one population is as consistent with every candidate, and candidates
    whose Z-contrast steps are alike (Fe → Ru → Pt: ×4.5 then ×5.2 at gamma 1.7) leave two
    populations ambiguous by one step. Of equally likely namings the heaviest is taken, so a frame
    of one element is named after the heaviest candidate: give only the elements that are there.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([26.0] * 5 + [78.0] * 5) ** 1.7 * 3.0       # Fe and Pt, any common gain
    >>> el, p = name_heavy_atoms(z * np.exp(np.linspace(-0.1, 0.1, 10)), ["Pt", "Fe"])
    >>> el.tolist()
    ['Fe', 'Fe', 'Fe', 'Fe', 'Fe', 'Pt', 'Pt', 'Pt', 'Pt', 'Pt']
    """
    cands = [str(c) for c in ([candidates] if isinstance(candidates, str) else candidates)]
    if not cands:
        raise InputError("name at least one candidate element for the heavy atoms, e.g. ('Pt',)")
    unknown = [c for c in cands if c not in ATOMIC_NUMBER]
    if unknown:
        raise InputError(f"unknown element(s) {unknown}: give element symbols such as 'Pt', 'Fe', 'Ru'")
    cands = sorted(set(cands), key=ATOMIC_NUMBER.get)                       # light to heavy
    ex = np.asarray(excess, np.float64)
    ok = np.isfinite(ex) & (ex > 0)
    element = np.full(ex.shape, "", dtype=object)
    prob = np.full(ex.shape, np.nan)
    if len(cands) == 1 or not ok.any():
        element[ok], prob[ok] = cands[-1], 1.0
        return element, prob
    x = np.log(ex[ok])
    level = gamma * np.log([ATOMIC_NUMBER[c] for c in cands])           # log counts of each, less the offset
    floor = 0.02                                                        # least width (log counts)
    best = None
    for k in range(len(cands)):
        c, w = np.median(x) - level[k], np.full(len(cands), 1.0 / len(cands))
        sd = max(1.4826 * np.median(np.abs(x - np.median(x))), floor)
        for _ in range(200):
            d = x[:, None] - c - level[None, :]
            logp = np.log(np.maximum(w, 1e-300))[None, :] - 0.5 * (d / sd) ** 2
            top = logp.max(axis=1, keepdims=True)
            r = np.exp(logp - top)
            norm = r.sum(axis=1, keepdims=True)
            r /= norm
            w_new = r.mean(axis=0)
            c_new = float(np.sum(r * (x[:, None] - level[None, :])) / len(x))
            sd = max(float(np.sqrt(np.sum(r * (x[:, None] - c_new - level[None, :]) ** 2) / len(x))), floor)
            done = abs(c_new - c) < 1e-9 and np.allclose(w_new, w, atol=1e-9)
            c, w = c_new, w_new
            if done:
                break
        d = x[:, None] - c - level[None, :]
        logp = np.log(np.maximum(w, 1e-300))[None, :] - 0.5 * (d / sd) ** 2 - np.log(sd)
        top = logp.max(axis=1, keepdims=True)
        ll = float(np.sum(top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))))
        post = np.exp(logp - top)
        post /= post.sum(axis=1, keepdims=True)
        # of namings as likely (within 1 nat), the heaviest: the lowest offset
        if best is None or ll > best[0] + 1.0 or (ll > best[0] - 1.0 and c < best[1]):
            best = (max(ll, best[0]) if best is not None else ll, c, post)
    post = best[2]
    pick = np.argmax(post, axis=1)
    element[ok] = np.array(cands, dtype=object)[pick]
    prob[ok] = post[np.arange(len(pick)), pick]
    return element, prob


def _population_split(sig: np.ndarray) -> float:
    """Significance separating the upper population of ``sig`` (σ), or 0 when there is none: the
    largest ratio between consecutive sorted values, if ≥ ``HEAVY_POPULATION_GAP`` with at least
    3 values above it."""
    s = np.sort(sig)
    ratio = s[1:] / np.maximum(s[:-1], 1e-12)
    ratio[len(s) - 3:] = 0.0                                       # at least 3 above the split
    k = int(np.argmax(ratio))
    return float(np.sqrt(s[k] * s[k + 1])) if ratio[k] >= HEAVY_POPULATION_GAP else 0.0


def integrated_excess(image, y: np.ndarray, x: np.ndarray, pixel_size: float) -> np.ndarray:
    """Counts each maximum adds over its surroundings (image units summed over pixels): the sum over
    the disk of radius ``HEAVY_DISK_NM`` around it less its area times the mean level of the ring from
    1.25 to 1.75 times that radius (of the ring's pixels inside the frame); NaN where the disk leaves
    the frame (what it would hold there is unknown). A single heavy atom adds about the same
    wherever it sits, in focus or not (its HAADF cross-section); a light-atom cluster adds a
    fraction of it.

    Parameters
    ----------
    image : ndarray (y, x)
    y, x : ndarray
        Positions of the maxima, px.
    pixel_size : float
        nm/px.

    Returns
    -------
    ndarray
        The counts each adds (image units), NaN where its disk leaves the frame.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((40, 40), 10.0)
    >>> img[20, 20] += 500.0
    >>> integrated_excess(img, np.array([20.0, 2.0]), np.array([20.0, 2.0]), 0.03).round(1)
    array([500.,  nan])
    """
    img = np.asarray(image, np.float64)
    n = len(y)
    if n == 0:
        return np.zeros(0)
    r_disk = max(HEAVY_DISK_NM / pixel_size, 1.5)
    h = int(np.ceil(1.75 * r_disk))
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    r = np.hypot(yy, xx).ravel()
    disk, ring = r <= r_disk, (r >= 1.25 * r_disk) & (r <= 1.75 * r_disk)
    padded = np.pad(img, h, mode="constant", constant_values=np.nan)
    yi = np.clip(np.rint(y).astype(int), 0, img.shape[0] - 1)
    xi = np.clip(np.rint(x).astype(int), 0, img.shape[1] - 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * h + 1, 2 * h + 1))    # a view: no copy
    out = np.empty(n)
    step = max(1, 2 ** 22 // (2 * h + 1) ** 2)          # windows in chunks of at most 4 M pixels
    for k in range(0, n, step):
        win = windows[yi[k:k + step], xi[k:k + step]].reshape(-1, (2 * h + 1) ** 2)
        out[k:k + step] = win[:, disk].sum(axis=1) - disk.sum() * _support_level(win[:, ring])
    return out


def _probe_px(pixel_size: float, options: dict) -> float:
    return max(options.get("probe_sigma_nm", 0.05) / pixel_size, 0.5)


def _roundness(image, y: np.ndarray, x: np.ndarray, sigma: float) -> np.ndarray:
    """Weaker over stronger downward curvature at (y, x) px of the image smoothed by ``sigma`` px;
    negative where the point is not a maximum in both directions."""
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    img = np.asarray(image, np.float64)
    h = hessian_matrix(img, sigma=sigma, order="rc", use_gaussian_derivatives=True)
    at = np.stack([c[y, x] for c in h])[:, None, :]              # (3, 1, n): one "pixel" per point
    big, small = hessian_matrix_eigvals(at)[:, 0]                 # big ≥ small
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(small < 0, -big / np.abs(small), -1.0)


def _support_level(ring: np.ndarray) -> np.ndarray:
    """The support's mean level under each row of ring pixels (NaN outside the frame): the mean
    after dropping pixels more than 3 SD above it (a neighbouring atom's peak). A mean, not a
    median: at a few counts per pixel the median moves in whole counts, and the disk multiplies
    that by its hundreds of pixels (on multislice frames at 3·10⁴ e⁻/Å² and 15 pm/px it put Fe
    atoms' excess near zero)."""
    inside = np.isfinite(ring)
    n = inside.sum(axis=1, keepdims=True)
    vals = np.where(inside, ring, 0.0)
    m = vals.sum(axis=1, keepdims=True) / np.maximum(n, 1)
    s = np.sqrt((np.where(inside, ring - m, 0.0) ** 2).sum(axis=1, keepdims=True) / np.maximum(n, 1))
    keep = inside & (vals <= m + 3 * s)
    level = np.where(keep, ring, 0.0).sum(axis=1) / np.maximum(keep.sum(axis=1), 1)
    return np.where(n[:, 0] > 0, level, np.nan)          # a ring wholly outside the frame: NaN, as its disk


def _parabola(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Offset (px, within ±0.5) of the vertex of the parabola through (-1, a), (0, b), (1, c)."""
    den = a - 2 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
    return np.clip(off, -0.5, 0.5)
