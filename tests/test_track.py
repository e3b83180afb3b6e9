"""stemflow.tracking against the simulator's ground truth: drift, trajectories, hops, coordination
changes, rates, dwell times, diffusion, and bad input."""


import numpy as np
import pandas as pd
import pytest

from stemflow import find_atoms
from stemflow.errors import InputError, StemflowWarning
from stemflow.simulate import simulate_movie
from stemflow.tables import EVENTS
from stemflow.tracking import (diffusion, drift, msd, dwell_times, event_rates, link, track,
                            transition_matrix)
from stemflow.tracking.scoring import drift_error, score_events, trajectory_purity

RATES = {"hop": 0.15, "switch34": 0.1, "switch43": 0.15, "vacancy": 0.15}
PX = 0.01


def _noisy(atoms, seed=0, sigma=0.3, keep=0.98):
    """Truth positions with localisation noise (px) and a fraction ``1 - keep`` of the lattice atoms
    missed (the finder misses host atoms more often than dopants); ids and truth columns dropped."""
    rng = np.random.default_rng(seed)
    a = atoms[["frame", "y", "x", "label"]]
    a = a[(a.label != "lattice") | (rng.random(len(a)) < keep)].sort_values("frame", kind="stable")
    a["y"] += rng.normal(0, sigma, len(a))
    a["x"] += rng.normal(0, sigma, len(a))
    return a.reset_index(drop=True)


@pytest.fixture(scope="module")
def movie():
    # 2 px/frame of drift: 57 px over the movie, more than two lattice periods.
    return simulate_movie("graphene", 30, 288, drift=(1.4, -1.4), drift_jitter=0.3, seed=11, pixel_size=PX,
                          defects={"Si1C3": 4, "Si1C4": 1, "V1": 1}, rates=RATES)


@pytest.fixture(scope="module")
def tracked(movie):
    return track(_noisy(movie.atoms), pixel_size=PX)


def _tol(result):
    return 0.3 * result.trajectories.attrs["spacing_nm"] / PX


def test_drift_is_recovered_to_a_tenth_of_a_pixel_without_aliasing(movie, tracked):
    total = np.hypot(*movie.drift[["dy", "dx"]].iloc[-1])
    assert total > 2 * 0.246 / PX            # more than two lattice periods
    assert drift_error(tracked.drift, movie.drift) <= 0.1
    alone = drift(_noisy(movie.atoms, seed=1))
    assert drift_error(alone, movie.drift) <= 0.1
    assert list(alone.columns) == ["frame", "dy", "dx", "matched"]


def test_hops_are_found_in_the_right_frame(movie, tracked):
    s = score_events(tracked.events, movie.events, tracked.trajectories, movie.atoms, _tol(tracked))
    assert s.loc["hop", "true"] >= 5, s
    assert s.loc["hop", "precision"] >= 0.95 and s.loc["hop", "recall"] >= 0.95, s


def test_coordination_changes_come_from_host_atoms_without_chem_columns(movie, tracked):
    s = score_events(tracked.events, movie.events, tracked.trajectories, movie.atoms, _tol(tracked))
    assert s.loc["coordination_change", "true"] >= 3, s
    assert s.loc["coordination_change", "recall"] >= 0.95, s
    assert s.loc["coordination_change", "precision"] >= 0.95, s
    cc = tracked.events[tracked.events.kind == "coordination_change"]
    assert set(cc.state0.astype(str)) | set(cc.state1.astype(str)) == {"dopant-3", "dopant-4"}


def test_defect_column_gives_the_states_of_events(movie):
    # With a defect column (as chem adds), states are the defect names.
    r = track(movie.atoms[["frame", "y", "x", "label", "defect"]], pixel_size=PX)
    cc = r.events[r.events.kind == "coordination_change"]
    true_cc = movie.events[movie.events.kind == "coordination_change"]
    assert set(zip(cc.state0.astype(str), cc.state1.astype(str))) == \
        set(zip(true_cc.state0.astype(str), true_cc.state1.astype(str)))
    assert sorted(cc.frame) == sorted(true_cc.frame)


def test_trajectories_are_pure_and_ids_unique(movie, tracked):
    traj = tracked.trajectories
    assert trajectory_purity(traj, movie.atoms, _tol(tracked)) >= 0.99
    assert not traj.duplicated(["frame", "particle"]).any()
    assert traj.particle.dtype == np.int64
    assert list(tracked.events.columns) == EVENTS.names


def test_network_detections_give_the_true_hops():
    mov = simulate_movie("graphene", 12, 256, drift=(1.0, 1.8), seed=4, pixel_size=PX,
                         defects={"Si1C3": 3, "V1": 1}, rates={"hop": 0.25, "vacancy": 0.25})
    atoms = find_atoms(mov.images(), pixel_size=PX)
    r = track(atoms)                                     # pixel size from atoms.attrs
    assert drift_error(r.drift, mov.drift) <= 0.1
    s = score_events(r.events, mov.events, r.trajectories, mov.atoms, _tol(r), kinds=("hop",))
    assert s.loc["hop", "true"] >= 3
    assert s.loc["hop", "precision"] >= 0.95 and s.loc["hop", "recall"] >= 0.95, s


def test_vacancy_migration_in_ws2_is_tracked():
    mov = simulate_movie("ws2", 20, 256, drift=(-1.2, 0.7), seed=2, pixel_size=PX,
                         defects={"V_S2": 2, "Mo_W": 2}, rates={"vacancy": 0.3, "hop": 0.2})
    r = track(_noisy(mov.atoms, sigma=0.2), pixel_size=PX)
    s = score_events(r.events, mov.events, r.trajectories, mov.atoms, _tol(r), kinds=("hop",))
    assert s.loc["hop", "true"] >= 4, s
    assert s.loc["hop", "precision"] >= 0.95 and s.loc["hop", "recall"] >= 0.95, s


def test_streamed_frames_find_the_same_true_hops_with_offset_ids(movie):
    a = _noisy(movie.atoms)
    r = track((g for _, g in a.groupby("frame")), pixel_size=PX, first_particle=1000)
    assert r.trajectories.particle.min() >= 1000
    s = score_events(r.events, movie.events, r.trajectories, movie.atoms, _tol(r), kinds=("hop",))
    assert s.loc["hop", "recall"] >= 0.95 and s.loc["hop", "precision"] >= 0.95


def test_link_alone_keeps_each_true_dopant_in_one_trajectory(movie):
    t = link(movie.atoms[["frame", "y", "x", "label"]], 0.3, pixel_size=PX, labels=["dopant"])
    true_n = movie.atoms.loc[movie.atoms.label == "dopant", "particle"].nunique()
    assert t.particle.nunique() == true_n


def test_rates_and_dwell_times_on_a_long_movie_match_the_simulated_ones():
    rates = {"hop": 0.0, "switch34": 0.08, "switch43": 0.12}
    mov = simulate_movie("graphene", 600, 224, seed=7, pixel_size=PX, defects={"Si1C3": 3}, rates=rates)
    r = track(mov.atoms[["frame", "y", "x", "label"]], pixel_size=PX, drift=False)
    tm = transition_matrix(r.trajectories).set_index(["state0", "state1"])
    for (s0, s1), p in {("dopant-3", "dopant-4"): 0.08, ("dopant-4", "dopant-3"): 0.12}.items():
        row = tm.loc[(s0, s1)]
        assert abs(row["rate"] - p) < 3.5 * np.sqrt(p * (1 - p) / row["exposure"]), tm
    d = dwell_times(r.trajectories)
    four = d[(d.state == "dopant-4") & ~d.censored]
    assert len(four) > 30
    se = np.sqrt(1 - 0.12) / 0.12 / np.sqrt(len(four))      # geometric lifetime, mean 1/p frames
    assert abs(four.frames.mean() - 1 / 0.12) < 3.5 * se
    er = event_rates(r.events, r.trajectories, dose=1e5)
    row = er[(er.kind == "coordination_change") & (er.state0 == "dopant-3")].iloc[0]
    assert row["rate_per_dose"] == pytest.approx(row["rate"] / 1e5)


def test_diffusion_of_hopping_vacancies_follows_rate_times_bond_squared():
    mov = simulate_movie("graphene", 300, 224, seed=5, pixel_size=PX, defects={"V1": 3},
                         rates={"vacancy": 0.2})
    r = track(mov.atoms[["frame", "y", "x", "label"]], pixel_size=PX)
    hops = mov.events[mov.events.kind == "hop"]
    truth_tracked = mov.atoms[mov.atoms.label == "vacancy"]
    per_frame = len(hops) / (len(truth_tracked) - truth_tracked.particle.nunique())
    expected = per_frame * 0.142**2 / 4                      # D = k b² / 4, nm²/frame
    d = diffusion(r.trajectories, max_lag=1, by=None)
    assert d.loc[0, "D"] == pytest.approx(expected, rel=0.1)


def test_missing_frame_column_is_a_clear_error(movie):
    with pytest.raises(InputError, match="no 'frame' column"):
        track(movie.atoms[["y", "x", "label"]], pixel_size=PX)
    with pytest.raises(InputError, match="no 'frame' column"):
        drift(movie.atoms[["y", "x"]])


def test_one_frame_gives_empty_trajectories_with_their_columns_and_a_warning(movie):
    a = movie.atoms[movie.atoms.frame == 0][["frame", "y", "x", "label"]]
    with pytest.warns(StemflowWarning, match="single frame"):
        r = track(a, pixel_size=PX)
    assert len(r.trajectories) == 0 and len(r.events) == 0
    for c in ("particle", "y_corr", "x_corr", "site", "state"):
        assert c in r.trajectories.columns
    assert list(r.events.columns) == EVENTS.names


def test_empty_table_returns_empty_tables():
    empty = pd.DataFrame({"frame": pd.Series(dtype=np.int64), "y": [], "x": [], "label": []})
    with pytest.warns(StemflowWarning, match="empty"):
        r = track(empty, pixel_size=PX)
    assert [len(t) for t in r] == [0, 0, 0]
    assert list(r.drift.columns) == ["frame", "dy", "dx", "matched"]


def test_bad_input_names_the_problem_and_the_fix(movie):
    a = movie.atoms[["frame", "y", "x", "label"]]
    with pytest.raises(InputError, match="pixel size .* unknown"):
        track(a)
    bad = a.copy()
    bad.loc[3, "x"] = np.nan
    with pytest.raises(InputError, match="NaN"):
        track(bad, pixel_size=PX)
    with pytest.raises(InputError, match="spacing"):
        track(a[a.label != "lattice"], pixel_size=PX)
    with pytest.raises(InputError, match="label"):
        track(a.drop(columns="label"), pixel_size=PX)
    with pytest.raises(InputError, match="search_range"):
        link(a, pixel_size=PX)
    with pytest.raises(InputError, match="increasing order"):
        track([a[a.frame == 1], a[a.frame == 0]], pixel_size=PX)


def _still_dopant(seed=5, frames=12):
    """A still graphene movie with one Si (truth tables + 0.3 px noise, lattice intensity 0.1 and
    Si 0.4 as find_atoms measures them), and the index of the lattice atom one bond from the Si."""
    mov = simulate_movie("graphene", frames, 160, seed=seed, pixel_size=PX, defects={"Si1C3": 1}, rates={})
    a = _noisy(mov.atoms, seed=seed, keep=1.0)
    rng = np.random.default_rng(seed)
    a["label"] = a["label"].astype(str)
    a["intensity"] = np.where(a.label == "dopant", 0.4, 0.1) + rng.normal(0, 0.02, len(a))
    si = mov.atoms[(mov.atoms.label == "dopant") & (mov.atoms.frame == 0)][["y", "x"]].to_numpy()[0]
    first = mov.atoms[mov.atoms.frame == 0]
    d = np.hypot(first.y - si[0], first.x - si[1])
    neighbour = first[(first.label == "lattice")][["y", "x"]].to_numpy()[np.argmin(d[first.label == "lattice"])]
    return a, si, neighbour


def _at(a, frame, yx):
    """Index of the row of ``frame`` nearest to ``yx`` (px)."""
    f = a[a.frame == frame]
    return f.index[np.argmin(np.hypot(f.y - yx[0], f.x - yx[1]))]


def _hop_to(a, si, nb, from_frame):
    """The Si swaps with its neighbour from ``from_frame`` on: a real hop (labels and intensities)."""
    for f in range(from_frame, int(a.frame.max()) + 1):
        i, j = _at(a, f, si), _at(a, f, nb)
        a.loc[[i, j], ["label", "intensity"]] = a.loc[[j, i], ["label", "intensity"]].to_numpy()


def test_one_noisy_frame_makes_no_hop_and_a_held_new_site_is_a_hop_in_its_frame():
    a, si, nb = _still_dopant(frames=30)
    # Frames 4, 12, 18: the Si is called 'lattice' and a false dopant shows up one bond away, for
    # one frame each (10 % of the frames: a noisy movie).
    for f in (4, 12, 18):
        i, j = _at(a, f, si), _at(a, f, nb)
        a.loc[i, "label"], a.loc[j, "label"] = "lattice", "dopant"
    _hop_to(a, si, nb, 24)                                  # frame 24 on: a real hop, held
    r = track(a, pixel_size=PX)
    hops = r.events.query("kind == 'hop'")
    assert hops.frame.tolist() == [24], hops
    assert hops.distance_nm.iloc[0] == pytest.approx(0.142, abs=0.02)
    assert r.trajectories.attrs["persist_frames"] >= 2         # chosen from the movie's own error rate
    assert track(a, pixel_size=PX, persist=2).events.query("kind == 'hop'").frame.tolist() == [24]
    # Each frame judged alone (the former behaviour), every noisy frame makes a hop there and back.
    assert track(a, pixel_size=PX, persist=None).events.query("kind == 'hop'").frame.tolist() == \
        [4, 5, 12, 13, 18, 19, 24]


def test_hop_in_a_frame_where_the_dopant_is_called_lattice_is_dated_to_that_frame():
    a, si, nb = _still_dopant(seed=6)
    _hop_to(a, si, nb, 7)
    j = _at(a, 7, nb)
    a.loc[j, "label"] = "lattice"              # seen on its new site in frame 7, but called lattice (still bright)
    hops = track(a, pixel_size=PX).events.query("kind == 'hop'")
    assert hops.frame.tolist() == [7], hops
    assert track(a, pixel_size=PX, persist=None).events.query("kind == 'hop'").frame.tolist() == [8]


def test_dopants_the_chemistry_could_not_check_at_the_frame_edge_are_followed():
    """identify labels a dopant within 1.3 bonds of the frame edge 'unknown' (dopant_check 'edge');
    in a movie the neighbouring frames judge it, so track follows it as the dopant the network saw."""
    a, si, nb = _still_dopant(frames=20)
    _hop_to(a, si, nb, 10)
    a["dopant_check"] = np.where(a["label"] == "dopant", "dopant", "")
    for f in range(7, 14):                      # drifted to the edge for 7 frames, across the hop
        i = _at(a, f, si if f < 10 else nb)
        a.loc[i, ["label", "dopant_check"]] = ["unknown", "edge"]
    r = track(a, pixel_size=PX)
    assert r.events.query("kind == 'hop'").frame.tolist() == [10], r.events
    assert (r.trajectories["label"].astype(str) == "dopant").all()
    # without the verdict column the same rows are unknown atoms, not followed: the hop is lost
    plain = track(a.drop(columns="dopant_check"), pixel_size=PX)
    assert plain.events.query("kind == 'hop'").frame.tolist() != [10]


def test_persistence_follows_the_frame_level_error_rates():
    from stemflow.tracking.sites import persistence
    assert persistence(0.0, 0.05) == (1, 1)                 # no one-frame errors: every frame counts
    assert persistence(0.01, 0.05)[0] == 2                  # 1 % one-frame errors, 5 % moves
    assert persistence(0.2, 0.02)[0] >= 3


def test_appearances_vanishings_and_hop_distances_are_dated_and_measured():
    from stemflow.tracking import events

    rows = []
    for f in range(7):                                    # particle 0: the whole movie, hops at frame 3
        rows.append((0, f, 50.0, 50.0 + (7.1 if f >= 3 else 0.0), 10 if f < 3 else 11))
    for f in range(2, 7):                                 # particle 1 appears at frame 2
        rows.append((1, f, 20.0, 20.0, 20))
    for f in range(0, 4):                                 # particle 2 is last seen in frame 3
        rows.append((2, f, 80.0, 80.0, 30))
    t = pd.DataFrame(rows, columns=["particle", "frame", "y", "x", "site"]).assign(label="dopant")
    ev = events(t, pixel_size=0.02, first_frame=0, last_frame=6)
    got = {(int(r.particle), int(r.frame), str(r.kind)) for r in ev.itertuples()}
    assert got == {(0, 3, "hop"), (1, 2, "appear"), (2, 4, "vanish")}
    hop = ev[ev.kind == "hop"].iloc[0]
    assert hop.distance_nm == pytest.approx(0.142, abs=1e-3) and (hop.site0, hop.site1) == (10, 11)
    assert np.isnan(ev[ev.kind == "appear"].distance_nm).all() and np.isnan(ev[ev.kind == "vanish"].y1).all()
    assert ev[ev.kind == "vanish"].iloc[0][["y0", "x0"]].tolist() == [80.0, 80.0]
    # the movie's first frame decides what appears: from frame 2 on, particle 1 was there all along
    later = events(t[t.frame >= 2], pixel_size=0.02, first_frame=2, last_frame=6)
    assert {(int(r.particle), str(r.kind)) for r in later.itertuples()} == {(0, "hop"), (2, "vanish")}
    earlier = events(t[t.frame >= 2], pixel_size=0.02, first_frame=0, last_frame=6)
    assert {(int(r.particle), int(r.frame), str(r.kind)) for r in earlier.itertuples()
            if r.kind == "appear"} == {(0, 2, "appear"), (1, 2, "appear"), (2, 2, "appear")}


def test_subtract_drift_removes_each_frames_own_drift():
    from stemflow.tracking import subtract_drift

    atoms = pd.DataFrame({"frame": [0, 1, 2, 2], "y": [10.0, 11.0, 12.0, 20.0], "x": [5.0, 5.0, 5.0, 9.0],
                          "label": "dopant"})
    dr = pd.DataFrame({"frame": [0, 1, 2], "dy": [0.0, 0.5, 1.25], "dx": [0.0, -0.3, 0.4]})
    out = subtract_drift(atoms, dr)
    np.testing.assert_array_equal(out["y_corr"], [10.0, 10.5, 10.75, 18.75])
    np.testing.assert_array_equal(out["x_corr"], [5.0, 5.3, 4.6, 8.6])
    assert out["y"].tolist() == atoms["y"].tolist()              # the measured positions are kept
    with pytest.raises(InputError, match=r"no row for frame\(s\) \[2\]"):
        subtract_drift(atoms, dr[dr.frame < 2])
    with pytest.raises(InputError, match="dx"):
        subtract_drift(atoms, dr.drop(columns="dx"))


def _two_particles(n=8):
    """Particle 0 moves +1 px per frame along x; particle 1 stands still."""
    f = np.arange(n)
    return pd.DataFrame({"particle": np.r_[np.zeros(n, int), np.ones(n, int)], "frame": np.r_[f, f],
                         "y_corr": np.r_[np.full(n, 5.0), np.full(n, 30.0)],
                         "x_corr": np.r_[10.0 + f, np.full(n, 40.0)],
                         "label": ["dopant"] * n + ["vacancy"] * n})


def test_msd_of_a_moving_and_a_still_particle_is_exact_in_nm_and_seconds():
    t = _two_particles()
    per = msd(t, pixel_size=0.1, per_particle=True, max_lag=4)
    np.testing.assert_allclose(per[0].to_numpy(), (0.1 * np.arange(1, 5)) ** 2)
    np.testing.assert_allclose(per[1].to_numpy(), 0.0)
    ens = msd(t, pixel_size=0.1, frame_time=0.5, max_lag=4)
    np.testing.assert_allclose(ens["lag"], 0.5 * np.arange(1, 5))              # s
    np.testing.assert_allclose(ens["msd"], (0.1 * np.arange(1, 5)) ** 2 / 2)   # nm², mean of the two
    assert (ens["N"] > 0).all()


def test_diffusion_is_the_weighted_slope_of_the_msd_over_four_per_group():
    t = _two_particles()
    d = diffusion(t, pixel_size=0.1, max_lag=3).set_index("group")
    assert list(d.index) == ["dopant", "vacancy"] and d["particles"].tolist() == [1, 1]
    m = msd(t[t.label == "dopant"], pixel_size=0.1, max_lag=3)
    slope = np.sum(m.N * m.lag * m.msd) / np.sum(m.N * m.lag ** 2)
    assert d.loc["dopant", "D"] == pytest.approx(slope / 4, rel=1e-12)
    # its standard error: that of a weighted least-squares slope through the origin, σ² / Σ w x²
    # with σ² the weighted residual variance on n − 1 degrees of freedom (the MSD of a particle
    # moving at constant speed is a parabola, so the straight line leaves residuals)
    res = m.msd - slope * m.lag
    se = np.sqrt(np.sum(m.N * res ** 2) / (len(m) - 1) / np.sum(m.N * m.lag ** 2))
    assert se > 0 and d.loc["dopant", "D_err"] == pytest.approx(se / 4, rel=1e-12)
    assert d.loc["vacancy", "D_err"] == 0.0
    assert d.loc["vacancy", "D"] == 0.0
    assert d.loc["dopant", "unit"] == "nm^2/frame"
    per_frame = diffusion(t, pixel_size=0.1, max_lag=3, by=None)
    per_s = diffusion(t, pixel_size=0.1, frame_time=2.0, max_lag=3, by=None)
    assert per_s["group"].tolist() == ["all"] and per_s["unit"].tolist() == ["nm^2/s"]
    assert per_s["D"][0] == pytest.approx(per_frame["D"][0] / 2.0, rel=1e-12)     # 2 s per frame
    with pytest.raises(InputError, match="no column 'state'"):
        diffusion(t, pixel_size=0.1, by="state")


def test_track_options_are_checked_and_recorded():
    from stemflow.tracking import TrackOptions

    with pytest.raises(InputError, match="memory"):
        TrackOptions(memory=-1)
    with pytest.raises(InputError, match="search_range"):
        TrackOptions(search_range=0)
    with pytest.raises(InputError, match="same_site < new_site"):
        TrackOptions(same_site=0.8)
    with pytest.raises(InputError, match="persist"):
        TrackOptions(persist=True)
    with pytest.raises(InputError, match="unknown tracking option.*serch_range"):
        TrackOptions.from_keywords(None, serch_range=0.3)
    assert TrackOptions(labels="dopant").labels == ("dopant",)
    base = TrackOptions(memory=1, labels=["vacancy"])
    assert TrackOptions.from_keywords(base, memory=2) == TrackOptions(memory=2, labels=("vacancy",))
    assert TrackOptions.from_keywords({"memory": 2}).memory == 2
    # the options a track was made with travel with its tables
    mov = simulate_movie("graphene", 6, 128, seed=2, defects={"Si1C3": 2})
    traj, ev, dr = track(mov.atoms[["frame", "y", "x", "label"]], mov.pixel_size, base, memory=2)
    for t in (traj, ev, dr):
        assert t.attrs["track_options"]["memory"] == 2
        assert t.attrs["track_options"]["labels"] == ["vacancy"]
    assert set(traj["label"]) <= {"vacancy"}


def test_a_table_decoded_over_frames_keeps_its_one_frame_stays():
    """find_atoms_movie's labels already weigh the neighbouring frames: track must not smooth them
    a second time. Every Si here leaves its site for one frame, three times (real stays, as a
    hidden Markov model would report them): kept as hops there and back, while persist="auto"
    on a frame-by-frame table takes such excursions for noise."""
    from scipy.spatial import cKDTree

    mov = simulate_movie("graphene", 20, 256, pixel_size=0.01, dose=1e5, drift=(0.0, 0.0), drift_jitter=0.0,
                         defects={"Si1C3": 4}, rates={}, seed=5)
    atoms = mov.atoms[["frame", "y", "x", "label"]].copy()
    host = atoms[(atoms.frame == 0) & (atoms.label == "lattice")][["y", "x"]].to_numpy()
    tree = cKDTree(host)
    for f in (5, 10, 15):
        rows = atoms.index[(atoms.label == "dopant") & (atoms.frame == f)]
        _, j = tree.query(atoms.loc[rows, ["y", "x"]].to_numpy(float))
        atoms.loc[rows, ["y", "x"]] = host[j]              # onto the nearest host site for one frame
    n_si = int((atoms[atoms.frame == 0].label == "dopant").sum())
    assert n_si >= 2
    hops = lambda r: int((r.events.kind.astype(str) == "hop").sum())  # noqa: E731
    decoded = atoms.copy()
    decoded.attrs.update(pixel_size=0.01, decoded_over_frames=True)
    kept = track(decoded)
    assert hops(kept) == 6 * n_si and kept.trajectories.attrs["track_options"]["persist"] is None
    smoothed = track(atoms, pixel_size=0.01)
    assert hops(smoothed) < hops(kept) and smoothed.trajectories.attrs["track_options"]["persist"] == "auto"


def test_heavy_atoms_on_an_amorphous_support_are_tracked_without_a_host_lattice():
    # a table of find_atoms(..., lattice="amorphous") holds heavy atoms only: no host to measure a
    # spacing on; its attrs say what it is, and the atoms are followed (one hops 0.27 nm in frame 3)
    rng = np.random.default_rng(0)
    yx = rng.uniform(20, 230, (12, 2))
    rows = []
    for f in range(6):
        here = yx.copy()
        if f >= 3:
            here[0] += (0.27 / 0.03, 0.0)
        rows.append(pd.DataFrame({"frame": f, "y": here[:, 0] + rng.normal(0, 0.2, 12),
                                  "x": here[:, 1] + rng.normal(0, 0.2, 12), "label": "dopant"}))
    atoms = pd.concat(rows, ignore_index=True)
    with pytest.raises(InputError, match="lattice='amorphous'"):
        track(atoms, pixel_size=0.03)
    atoms.attrs["lattice"] = "amorphous"
    traj, ev, _ = track(atoms, pixel_size=0.03, drift=False)
    assert traj["particle"].nunique() == 12 and (traj.groupby("particle").size() == 6).all()
    hops = ev[ev["kind"].astype(str) == "hop"]
    assert len(hops) == 1 and int(hops["frame"].iloc[0]) == 3
    assert hops["distance_nm"].iloc[0] == pytest.approx(0.27, abs=0.03)
