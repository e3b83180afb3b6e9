"""Pictures of atoms tables, trajectories and events (matplotlib).

Every function draws on an ``ax`` it is given (or a new one) and returns that ``ax``, so pictures
compose into figures and notebooks::

    from stemflow import plot
    plot.plot_atoms(atoms, frame=0, image=images[0], by="label")
    plot.plot_trajectories(traj, image=plot.mean_frame(images, dr))
    plot.plot_events(ev)
    plot.plot_transitions(transition_matrix(traj))
    plot.plot_ripley(stemflow.chem.ripley_l(atoms))

Units: positions px (the image's pixels; x is the column), frames, drift px.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .errors import InputError

__all__ = ["plot_atoms", "plot_trajectories", "plot_events", "plot_transitions", "plot_drift", "plot_ripley", "mean_frame",
           "scale_bar",
           "LABEL_COLORS", "EVENT_STYLE"]

#: Colours of the atom labels.
LABEL_COLORS = {"lattice": "#9e9e9e", "dopant": "#d62728", "vacancy": "#1f77b4"}
#: Marker and colour of each event kind in :func:`plot_events`.
EVENT_STYLE = {"hop": ("o", "#d62728"), "coordination_change": ("s", "#2ca02c"),
               "transformation": ("D", "#9467bd"), "appear": ("^", "#1f77b4"), "vanish": ("v", "#7f7f7f")}


def _axes(ax, figsize=(5, 5)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _need(df, cols, name):
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name} must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{name} lacks column(s) {missing} needed for this plot")


def _show_image(ax, image):
    if image is None:
        return
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise InputError(f"image must be 2-D (y, x); got shape {img.shape}. Pass one frame or plot.mean_frame(...)")
    lo, hi = np.nanpercentile(img, [0.5, 99.5])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")


def scale_bar(ax, pixel_size: float | None, *, length_nm: float | None = None, color: str = "white",
              loc: str = "lower left"):
    """Draw a scale bar in nm on an image drawn in px.

    Parameters
    ----------
    ax : matplotlib Axes
        Axes whose data coordinates are px.
    pixel_size : float or None
        nm/px; None draws nothing.
    length_nm : float, optional
        Bar length, nm; default the largest 1, 2 or 5 × 10ⁿ nm within a fifth of the axes' width.
    color : str
        Bar and label colour (white over images; use black on white).
    loc : str
        Where, as for :class:`matplotlib.offsetbox.AnchoredOffsetbox`.

    Returns
    -------
    float or None
        The bar's length, nm (None when nothing was drawn).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> _ = ax.imshow(np.zeros((512, 512)))
    >>> scale_bar(ax, 0.01)          # 512 px at 10 pm/px: 5.12 nm wide
    1.0
    """
    if pixel_size is None or not np.isfinite(pixel_size) or pixel_size <= 0:
        return None
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    width_px = abs(float(np.diff(ax.get_xlim())[0]))
    if length_nm is None:
        target = 0.2 * width_px * pixel_size
        if target <= 0:
            return None
        decade = 10.0 ** np.floor(np.log10(target))
        length_nm = max(m * decade for m in (1, 2, 5) if m * decade <= target)
    label = f"{length_nm:g} nm"
    bar = AnchoredSizeBar(ax.transData, length_nm / pixel_size, label, loc, pad=0.4, color=color, frameon=False,
                          size_vertical=max(1.0, 0.012 * width_px), label_top=True, fontproperties={"size": 9})
    ax.add_artist(bar)
    return float(length_nm)


def _palette(values):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {v: LABEL_COLORS.get(v, cmap(i % 10)) for i, v in enumerate(values)}


def plot_atoms(atoms: pd.DataFrame, frame: int | None = None, *, image=None, by: str = "label", ax=None,
               size: float = 12.0, legend: bool = True, pixel_size: float | None = None):
    """Atoms of one frame as dots coloured by ``by`` (label, defect, state, ...), over the image.

    Parameters
    ----------
    atoms : DataFrame
        ``y``, ``x`` (px), the column ``by`` and, for movies, ``frame``.
    frame : int, optional
        Frame to draw (default the first; ignored without a ``frame`` column).
    image : 2-D array, optional
        Drawn underneath in grey (the same frame).
    by : str
        Column whose values colour the dots; empty values ('' or NaN) are drawn as ``lattice``.
    ax : matplotlib Axes, optional
    size : float
        Marker area, points²; dopants and vacancies are drawn three times larger.
    legend : bool
    pixel_size : float, optional
        nm/px, for a scale bar (:func:`scale_bar`); default ``atoms.attrs["pixel_size"]``, none
        when unknown.

    Returns
    -------
    matplotlib Axes
    """
    _need(atoms, ["y", "x", by], "atoms")
    ax = _axes(ax)
    t = atoms
    if "frame" in t.columns and len(t):
        f = int(t["frame"].min()) if frame is None else int(frame)
        t = t[t["frame"] == f]
        ax.set_title(f"frame {f}")
    _show_image(ax, image)
    v = t[by].astype(str).replace({"": "lattice", "nan": "lattice"})
    cats = list(dict.fromkeys(["lattice", *sorted(set(v) - {"lattice"})]))
    colors = _palette(cats)
    for c in cats:
        sel = (v == c).to_numpy()
        if not sel.any():
            continue
        ax.scatter(t["x"].to_numpy()[sel], t["y"].to_numpy()[sel], s=size if c == "lattice" else 3 * size,
                   c=[colors[c]], label=f"{c} ({int(sel.sum())})", edgecolors="none" if c == "lattice" else "k",
                   linewidths=0.5, alpha=0.8 if c == "lattice" else 1.0)
    if image is None:
        ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    if legend and len(t):
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    scale_bar(ax, pixel_size if pixel_size is not None else atoms.attrs.get("pixel_size"),
              color="white" if image is not None else "black")
    return ax


def mean_frame(images, drift: pd.DataFrame | None = None) -> np.ndarray:
    """Average of the frames after shifting each back by its drift: the drift-corrected mean frame.

    Parameters
    ----------
    images : array-like (frame, y, x)
        Frames in the order of ``drift``'s rows.
    drift : DataFrame, optional
        ``dy``, ``dx`` (px) per frame (:func:`stemflow.tracking.drift`); None averages as they are.

    Returns
    -------
    ndarray (y, x) float64
        In the coordinates of the first frame (those of ``y_corr``, ``x_corr``).
    """
    images = np.asarray(images)
    if images.ndim != 3 or len(images) == 0:
        raise InputError(f"images must be a (frame, y, x) stack with at least one frame; got shape {images.shape}")
    if drift is not None:
        _need(drift, ["dy", "dx"], "drift")
        if len(drift) != len(images):
            raise InputError(f"drift has {len(drift)} rows but there are {len(images)} images; pass the drift of "
                             "exactly these frames")
        shifts = drift[["dy", "dx"]].to_numpy(np.float64)
    else:
        shifts = np.zeros((len(images), 2))
    acc = np.zeros(images.shape[1:], np.float64)
    for img, (dy, dx) in zip(images, shifts):
        acc += ndimage.shift(np.asarray(img, np.float64), (-dy, -dx), order=1, mode="nearest")
    return acc / len(images)


def plot_trajectories(trajectories: pd.DataFrame, *, image=None, ax=None, by: str = "label",
                      corrected: bool = True, annotate: bool = False, pixel_size: float | None = None):
    """Trajectories as lines over the (drift-corrected mean) frame, sites as dots.

    Parameters
    ----------
    trajectories : DataFrame
        ``particle``, ``frame`` and ``y_corr``, ``x_corr`` (``y``, ``x`` if ``corrected`` is
        False or they are absent), px.
    image : 2-D array, optional
        Background, e.g. :func:`mean_frame` (drift-corrected positions are in its coordinates).
    ax : matplotlib Axes, optional
    by : str
        Column whose most common value per particle sets its colour (``label``, ``state``, ...).
    corrected : bool
        Draw drift-corrected positions.
    annotate : bool
        Write each particle id at its start.
    pixel_size : float, optional
        nm/px, for a scale bar; default ``trajectories.attrs["pixel_size"]``, none when unknown.

    Returns
    -------
    matplotlib Axes
    """
    pos = ["y_corr", "x_corr"] if corrected and {"y_corr", "x_corr"} <= set(trajectories.columns) else ["y", "x"]
    _need(trajectories, ["particle", "frame", *pos], "trajectories")
    ax = _axes(ax)
    _show_image(ax, image)
    t = trajectories.sort_values(["particle", "frame"])
    col = by if by in t.columns else None
    cats = sorted(t[col].astype(str).unique()) if col else ["trajectory"]
    colors = _palette(cats)
    seen = set()
    for p, g in t.groupby("particle", sort=True):
        c = g[col].astype(str).mode().iloc[0] if col else "trajectory"
        y, x = g[pos[0]].to_numpy(), g[pos[1]].to_numpy()
        ax.plot(x, y, "-", color=colors[c], lw=1.2, alpha=0.9, label=None if c in seen else c)
        ax.plot(x, y, ".", color=colors[c], ms=3)
        seen.add(c)
        if annotate:
            ax.annotate(str(p), (x[0], y[0]), fontsize=6, color=colors[c], xytext=(3, 3), textcoords="offset points")
    if image is None:
        ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xlabel("x (px, drift-corrected)" if pos[0] == "y_corr" else "x (px)")
    ax.set_ylabel("y (px, drift-corrected)" if pos[0] == "y_corr" else "y (px)")
    ax.set_title(f"{t['particle'].nunique()} trajectories")
    if seen:
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    scale_bar(ax, pixel_size if pixel_size is not None else trajectories.attrs.get("pixel_size"),
              color="white" if image is not None else "black")
    return ax


def plot_events(events: pd.DataFrame, *, trajectories: pd.DataFrame | None = None, ax=None,
                kinds=None):
    """Event timeline: one row per particle, events as markers at their frame.

    Parameters
    ----------
    events : DataFrame
        ``particle``, ``frame``, ``kind``.
    trajectories : DataFrame, optional
        ``particle``, ``frame``: each particle's observed span is drawn as a grey bar.
    ax : matplotlib Axes, optional
    kinds : sequence of str, optional
        Kinds to draw (default all present).

    Returns
    -------
    matplotlib Axes
    """
    _need(events, ["particle", "frame", "kind"], "events")
    ax = _axes(ax, figsize=(7, 4))
    parts = set(events["particle"].tolist())
    if trajectories is not None:
        _need(trajectories, ["particle", "frame"], "trajectories")
        parts |= set(trajectories["particle"].tolist())
    order = {p: i for i, p in enumerate(sorted(parts))}
    if trajectories is not None and len(trajectories):
        span = trajectories.groupby("particle")["frame"].agg(["min", "max"])
        for p, (a, b) in span.iterrows():
            ax.plot([a, b], [order[p], order[p]], "-", color="#dddddd", lw=3, solid_capstyle="butt", zorder=0)
    kinds = list(EVENT_STYLE) if kinds is None else list(kinds)
    for k in kinds:
        e = events[events["kind"].astype(str) == k]
        if len(e) == 0:
            continue
        marker, color = EVENT_STYLE.get(k, ("x", "k"))
        ax.scatter(e["frame"], e["particle"].map(order), marker=marker, c=color, s=22, label=f"{k} ({len(e)})",
                   edgecolors="k", linewidths=0.3, zorder=2)
    ax.set_xlabel("frame")
    ax.set_ylabel("particle")
    if len(order) <= 30:
        ax.set_yticks(list(order.values()), [str(p) for p in order])
    ax.set_title("events")
    if len(events):
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return ax


def plot_transitions(matrix: pd.DataFrame, *, values: str = "count", ax=None, cmap: str = "viridis"):
    """Heat map of a transition matrix with the numbers written in.

    Parameters
    ----------
    matrix : DataFrame
        Long form (:func:`stemflow.tracking.transition_matrix`: ``state0``, ``state1`` and
        ``values``) or already square (index = from, columns = to).
    values : str
        ``count``, ``rate`` or another column of the long form.
    ax : matplotlib Axes, optional
    cmap : str

    Returns
    -------
    matplotlib Axes
    """
    if not isinstance(matrix, pd.DataFrame):
        raise InputError(f"matrix must be a DataFrame; got {type(matrix).__name__}")
    if {"state0", "state1", values} <= set(matrix.columns):
        m = matrix.pivot(index="state0", columns="state1", values=values)
        states = sorted(set(m.index) | set(m.columns))
        m = m.reindex(index=states, columns=states).fillna(0)
    elif "state0" in matrix.columns:
        raise InputError(f"matrix has no column {values!r}; pass values= one of {list(matrix.columns)}")
    else:
        m = matrix
    ax = _axes(ax, figsize=(4.5, 4))
    a = m.to_numpy(np.float64)
    im = ax.imshow(a, cmap=cmap)
    ax.set_xticks(range(a.shape[1]), [str(c) for c in m.columns], rotation=45, ha="right")
    ax.set_yticks(range(a.shape[0]), [str(c) for c in m.index])
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    hi = np.nanmax(a) if a.size else 0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            txt = f"{a[i, j]:.0f}" if values == "count" else f"{a[i, j]:.3g}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                    color="k" if hi and a[i, j] > 0.6 * hi else "w")
    ax.figure.colorbar(im, ax=ax, label=values + (" per frame" if values == "rate" else ""))
    ax.set_title("transitions")
    return ax


def plot_drift(drift: pd.DataFrame, *, truth: pd.DataFrame | None = None, ax=None):
    """Drift (dy, dx in px) against frame, with the true drift dashed when given."""
    _need(drift, ["frame", "dy", "dx"], "drift")
    ax = _axes(ax, figsize=(6, 3))
    for c, color in (("dy", "#1f77b4"), ("dx", "#ff7f0e")):
        ax.plot(drift["frame"], drift[c], "-", color=color, label=f"{c} measured")
        if truth is not None:
            _need(truth, ["frame", c], "truth")
            ax.plot(truth["frame"], truth[c], "--", color="k", lw=0.8, label=f"{c} true" if c == "dy" else None)
    ax.set_xlabel("frame")
    ax.set_ylabel("drift (px)")
    ax.legend(fontsize="small")
    ax.set_title("drift")
    return ax


def plot_ripley(curve: pd.DataFrame, *, ax=None, label: str = "L(r) − r"):
    """Ripley's L(r) − r (nm) against the radius (nm), with the envelope of random placement.

    Parameters
    ----------
    curve : DataFrame
        :func:`stemflow.chem.ripley_l`'s table: ``radius_nm``, ``l_minus_r_nm``, ``csr_low_nm``,
        ``csr_high_nm``.
    ax : matplotlib Axes, optional
    label : str
        Legend text of the curve.

    Returns
    -------
    matplotlib Axes
        Above the grey band the atoms cluster at that radius, below it they keep apart.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> curve = pd.DataFrame({"radius_nm": [0.5, 1.0], "l_minus_r_nm": [0.2, 0.1],
    ...                       "csr_low_nm": [-0.1, -0.1], "csr_high_nm": [0.1, 0.1]})
    >>> plot_ripley(curve).get_xlabel()
    'r (nm)'
    """
    _need(curve, ["radius_nm", "l_minus_r_nm", "csr_low_nm", "csr_high_nm"], "curve")
    ax = _axes(ax, figsize=(5, 3.5))
    r = curve["radius_nm"].to_numpy(np.float64)
    if np.isfinite(curve["csr_low_nm"].to_numpy(np.float64)).any():
        ax.fill_between(r, curve["csr_low_nm"], curve["csr_high_nm"], color="0.85", label="random placement (envelope)")
    ax.plot(r, curve["l_minus_r_nm"], color=LABEL_COLORS["dopant"], label=label)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xlabel("r (nm)")
    ax.set_ylabel("L(r) − r (nm)")
    n, frames = curve.attrs.get("atoms"), curve.attrs.get("frames")
    ax.set_title("Ripley's L" + (f": {n} atoms in {frames} frame(s)" if n is not None else ""))
    ax.legend(fontsize="small")
    return ax
