"""stemflow.plot and stemflow.report: pictures show what the simulator's truth holds."""

import base64
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from stemflow import plot
from stemflow.errors import InputError, InputNotFoundError
from stemflow.report import write_report
from stemflow.simulate import simulate_movie
from stemflow.tracking import track, transition_matrix

PX = 0.01


@pytest.fixture(scope="module")
def movie():
    return simulate_movie("graphene", 10, 192, drift=(0.8, -0.6), seed=3, pixel_size=PX,
                          defects={"Si1C3": 2, "V1": 1}, rates={"hop": 0.3, "switch34": 0.2, "switch43": 0.3,
                                                                 "vacancy": 0.3})


def _ax():
    return Figure().add_subplot()


def test_atoms_are_drawn_where_the_truth_puts_them(movie):
    ax = plot.plot_atoms(movie.atoms, frame=2, by="label", ax=_ax(), image=movie.image(2))
    truth = movie.atoms[movie.atoms.frame == 2]
    drawn = np.vstack([c.get_offsets() for c in ax.collections])
    assert len(drawn) == len(truth)
    dop = truth[truth.label == "dopant"][["x", "y"]].to_numpy()
    for xy in dop:
        assert np.min(np.hypot(*(drawn - xy).T)) < 1e-9
    labels = {t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()}
    assert labels == set(truth.label.astype(str))


def test_event_timeline_has_one_marker_per_true_event(movie):
    ax = plot.plot_events(movie.events, ax=_ax())
    n = sum(len(c.get_offsets()) for c in ax.collections)
    assert n == len(movie.events)


def test_transition_heat_map_writes_the_counts(movie):
    r = track(movie.atoms[["frame", "y", "x", "label", "defect"]], pixel_size=PX)
    tm = transition_matrix(r.trajectories)
    ax = plot.plot_transitions(tm, ax=_ax())
    written = sorted(int(t.get_text()) for t in ax.texts)
    assert sum(written) == int(tm["count"].sum())
    true_switch = (movie.events.kind == "coordination_change").sum()
    off_diag = tm[tm.state0 != tm.state1]["count"].sum()
    assert off_diag == true_switch


def test_trajectories_and_mean_frame(movie):
    r = track(movie.atoms[["frame", "y", "x", "label"]], pixel_size=PX)
    mean = plot.mean_frame(movie.images(), r.drift)
    assert mean.shape == movie.shape
    ax = plot.plot_trajectories(r.trajectories, image=mean, ax=_ax())
    n_true = movie.atoms.loc[movie.atoms.label != "lattice", "particle"].nunique()
    assert len([ln for ln in ax.lines if ln.get_linestyle() == "-"]) == n_true
    with pytest.raises(InputError, match="drift has"):
        plot.mean_frame(movie.images(), r.drift.iloc[:3])


def test_report_embeds_the_pictures_and_counts_the_true_hops(movie, tmp_path):
    r = track(movie.atoms[["frame", "y", "x", "label"]], pixel_size=PX)
    movie.atoms.to_parquet(tmp_path / "atoms.parquet")
    r.trajectories.to_parquet(tmp_path / "trajectories.parquet")
    r.events.to_parquet(tmp_path / "events.parquet")
    r.drift.to_parquet(tmp_path / "drift.parquet")
    out = write_report(tmp_path)
    text = out.read_text()
    pngs = re.findall(r"base64,([A-Za-z0-9+/=]+)", text)
    assert len(pngs) == 5
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    n_hops = int((movie.events.kind == "hop").sum())
    assert re.search(rf"<td>hop events</td>\s*<td>{n_hops}</td>", text)
    # settings and provenance: the calibration (from the tables' own metadata) and how it was tracked
    assert "<h2>Settings and provenance</h2>" in text
    assert re.search(r"<td>pixel size</td>\s*<td>0.01 nm/px</td>", text)
    assert re.search(r"<td>tracking</td>\s*<td>labels=\['dopant', 'vacancy'\], search_range=None, memory=3", text)


def test_report_errors_name_the_fix(tmp_path):
    with pytest.raises(InputNotFoundError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(InputError, match="stemflow track"):
        write_report(tmp_path)


def _bars(ax):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    return [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]


def test_scale_bars_are_in_nm_and_only_when_the_pixel_size_is_known(movie):
    ax = plot.plot_atoms(movie.atoms, ax=_ax(), image=movie.image(0), pixel_size=PX)
    (bar,) = _bars(ax)
    assert bar.txt_label.get_text() == "0.2 nm"                   # 192 px × 0.01 nm: a fifth is 0.38 nm
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(0.2 / PX)   # drawn in px
    assert _bars(plot.plot_atoms(movie.atoms, ax=_ax())) == []    # no calibration, no bar
    atoms = movie.atoms.copy()
    atoms.attrs["pixel_size"] = 0.05                              # find_atoms records it in attrs
    ax = plot.plot_atoms(atoms, ax=_ax())
    (bar,) = _bars(ax)
    fifth = 0.2 * abs(np.diff(ax.get_xlim())[0]) * 0.05              # nm
    length = float(bar.txt_label.get_text().removesuffix(" nm"))
    assert length <= fifth < 2.5 * length and length in (1, 2, 5)
    ax = _ax()
    ax.imshow(np.zeros((512, 512)))
    assert plot.scale_bar(ax, 0.01) == 1.0 and plot.scale_bar(ax, 0.01, length_nm=2.5) == 2.5
    assert plot.scale_bar(ax, None) is None and plot.scale_bar(ax, float("nan")) is None
