"""Low-dose movies: registration from images, column amplitudes, dopant placements over time."""

from __future__ import annotations

import numpy as np
import pytest

import stemflow
from stemflow.errors import InputError, StemflowWarning
from stemflow.occupancy import Levels, amplitude_levels, column_amplitudes, column_gram, occupancy
from stemflow.registration import register_frames, shift_frames
from stemflow.simulate import simulate_movie
from stemflow.tracking.scoring import score_events, true_move_rate


def test_register_frames_follows_a_random_walk_at_low_dose():
    mov = simulate_movie("graphene", 12, 160, drift=(0.0, 0.0), drift_jitter=0.8, rates={}, seed=21,
                         pixel_size=0.01, dose=1500, defects={"Si1C3": 2})
    shifts = register_frames(mov.images(), sigma_px=3.0)
    truth = mov.drift[["dy", "dx"]].to_numpy()
    assert np.abs(truth).max() > 1.5                                  # the field really moves
    assert np.sqrt(((shifts - truth) ** 2).sum(axis=1).mean()) < 0.8


def test_register_frames_does_not_slip_by_a_bond_with_a_wide_probe():
    """A 1.4 Å probe at 1000 e⁻/Å² leaves single frames almost without lattice contrast; steps chained
    frame to frame slipped by a bond here (7 px RMS); each frame on the sum of those before it
    does not."""
    mov = simulate_movie("graphene", 40, 320, drift=(0.0, 0.0), drift_jitter=0.7, seed=901, pixel_size=0.01,
                         dose=1000, defects={"Si1C3": 8, "Si1C4": 2}, probe_fwhm=1.4,
                         rates={"hop": 0.08, "switch34": 0.03, "switch43": 0.05})
    shifts = register_frames(mov.images(), sigma_px=3.0, max_step=0.4 * 14.2)
    err = shifts - mov.drift[["dy", "dx"]].to_numpy()
    err -= err.mean(axis=0)
    assert np.sqrt((err ** 2).sum(axis=1).mean()) < 1.5


def test_shift_frames_marks_where_no_data_is():
    frames = np.random.default_rng(0).poisson(2.0, (2, 40, 40)).astype(float)
    reg, valid = shift_frames(frames, [[0.0, 0.0], [0.0, 3.0]])
    assert valid[0].all() and not valid[1][:, -3:].any() and valid[1][:, :36].all()
    assert (reg[1][~valid[1]] == 0).all()
    np.testing.assert_allclose(reg[1][:, :30], frames[1][:, 3:33])


def test_column_amplitudes_separate_overlapping_columns():
    yy, xx = np.mgrid[:48, :48]
    g = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 3.0**2))   # noqa: E731
    img = 0.5 + 1.0 * g(24, 20) + 4.0 * g(24, 26)                    # 2 σ apart: the tails overlap
    amp, seen = column_amplitudes(img[None], np.ones((1, 48, 48), bool), [[24, 20], [24, 26]], 3.0)
    np.testing.assert_allclose(amp[0], [1.0, 4.0], atol=0.01)        # the model stops at 3 σ
    # a column at the frame's corner keeps over half its information in the frame: weighed, and
    # its amplitude is right; a site whose centre is off the frame is not observed
    corner = img + 3.0 * g(2, 2)
    amp, seen = column_amplitudes(corner[None], np.ones((1, 48, 48), bool), [[24, 20], [24, 26], [2, 2], [-2, 30]],
                                  3.0)
    assert seen.tolist() == [[True, True, True, False]] and np.isnan(amp[0, 3])
    np.testing.assert_allclose(amp[0, :3], [1.0, 4.0, 3.0], atol=0.05)


def test_column_amplitudes_weigh_a_column_half_in_a_registration_strip_from_the_half_with_data():
    """A strip without data (a registration shift) cuts through a column in two frames: their
    amplitudes come from the pixels they have, not from the zeros in the strip nor from the
    movie's mean there; a column wholly in the strip is not observed in those frames."""
    yy, xx = np.mgrid[:48, :48]
    g = lambda y, x: np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 3.0**2))   # noqa: E731
    sites = [[24, 12], [24, 30], [24, 44]]
    dopant = np.r_[[4.0] * 4, [1.0] * 4]                  # a dopant at x = 30 in frames 0-3, then a host column
    frames = np.stack([0.5 + 1.0 * g(24, 12) + d * g(24, 30) + 1.0 * g(24, 44) for d in dopant])
    valid = np.ones(frames.shape, bool)
    valid[[2, 6], :, 31:] = False                         # frames 2 and 6: no data right of x = 30
    frames[~valid] = 0.0                                  # as shift_frames leaves it
    amp, seen = column_amplitudes(frames, valid, sites, 3.0)
    assert seen[:, :2].all() and seen[:, 2].tolist() == [True, True, False, True, True, True, False, True]
    np.testing.assert_allclose(amp[:, 1], dopant, atol=0.3)      # frame 2: 4, frame 6: 1, as seen
    np.testing.assert_allclose(amp[:, 0], 1.0, atol=0.05)


def _two_site_amplitudes(rng, hop_at=10, spike_at=4, frames=20):
    host, dop, sd = 1.0, 4.0, 0.8
    amp = rng.normal(host, sd, (frames, 2))
    amp[:hop_at, 0] += dop - host
    amp[hop_at:, 1] += dop - host
    amp[spike_at, 1] = dop + 0.5          # one frame in which the other site looks like the dopant
    return amp


def test_occupancy_dates_a_hop_and_ignores_one_noisy_frame():
    amp = _two_site_amplitudes(np.random.default_rng(1))
    sites = [[20.0, 20.0], [20.0, 34.0]]
    obs = (np.r_[0:10, 10:20], np.r_[[0] * 10, [1] * 10])
    levels = amplitude_levels(amp, [True, True], obs)
    dop, prob = occupancy(amp, sites, [True, True], obs, levels, 14.0)
    assert dop.sum(axis=1).tolist() == [1] * 20                       # one dopant in every frame
    assert np.flatnonzero(np.diff(dop[:, 0].astype(int))).tolist() == [9]   # leaves site 0 at frame 10
    assert not dop[4, 1] and prob[4, 1] < 0.5                         # the spike is not a hop
    assert prob[15, 1] > 0.9


def test_occupancy_judged_frame_by_frame_would_take_the_spike():
    # the same data without the time model: the spike frame does put the dopant on site 1
    amp = _two_site_amplitudes(np.random.default_rng(1))
    assert amp[4, 1] > amp[4, 0]


def _wander(frames=30, seed=2):
    """Six sites in a row, 14 px apart; a dopant 10 frames on site 0, 3 on site 1, then on site 2,
    two steps from the only site the evidence names (site 0, frames 0-9)."""
    rng = np.random.default_rng(seed)
    sites = np.column_stack([np.full(6, 20.0), 20.0 + 14.0 * np.arange(6)])
    where = np.r_[[0] * 10, [1] * 3, [2] * (frames - 13)]
    amp = rng.normal(1.0, 0.5, (frames, 6))
    amp[np.arange(frames), where] += 3.0
    return amp, sites, where, (np.arange(10), np.zeros(10, np.int64))


@pytest.mark.parametrize("with_gram", [False, True])
def test_occupancy_follows_a_dopant_out_of_the_sites_its_evidence_names(with_gram):
    amp, sites, where, obs = _wander()
    lv = Levels(1.0, 4.0, v0=0.25, k=0.0)
    kw = dict(gram=column_gram(sites, 3.0)) if with_gram else {}
    dop, _ = occupancy(amp, sites, [True] * 6, obs, lv, 14.0, **kw)
    assert not dop[13:, 2].any()                   # without: site 2 is out of every group
    dop, _ = occupancy(amp, sites, [True] * 6, obs, lv, 14.0, amplitude_seed=5.0, **kw)
    assert dop.sum(axis=1).tolist() == [1] * len(where)
    assert (np.argmax(dop, axis=1) == where).mean() > 0.95
    # a site's amplitudes alone bring no dopant: with no evidence anywhere, no group
    dop, _ = occupancy(amp, sites, [True] * 6, (np.zeros(0, np.int64), np.zeros(0, np.int64)), lv, 14.0,
                       amplitude_seed=5.0, **kw)
    assert not dop.any()


def test_dopant_level_is_set_from_frames_the_dopant_held():
    """Summed frames see a dopant for a frame or two beyond its stay; the levels are set from the
    observations inside a run of them (the frames before and after observed on the same site)."""
    from stemflow.lowdose import _held

    frames = np.r_[0:12, 20:23, 30]
    sites = np.r_[[0] * 12, [1] * 3, [2]]
    f, s = _held(frames, sites, least=5)
    assert list(zip(f.tolist(), s.tolist())) == [(t, 0) for t in range(1, 11)] + [(21, 1)]
    f, s = _held(frames, sites, least=20)         # too few held: all of them
    assert len(f) == len(frames)


def test_levels_noise_grows_with_the_amplitude():
    lv = Levels(1.0, 4.0, v0=0.2, k=0.1)
    assert lv.sd(4.0) > lv.sd(1.0) == lv.sd(0.0)


@pytest.fixture(scope="module")
def low_dose_movie():
    return simulate_movie("graphene", 24, 200, drift=(0.0, 0.0), drift_jitter=0.7, seed=31, pixel_size=0.01,
                          dose=1000, defects={"Si1C3": 4}, rates={"hop": 0.15})


def test_find_atoms_movie_finds_the_si_that_single_frames_miss(low_dose_movie):
    mov = low_dose_movie
    atoms = stemflow.find_atoms_movie(mov.images(), pixel_size=0.01)
    truth = mov.atoms[mov.atoms.label == "dopant"]
    with pytest.warns(StemflowWarning, match="unlike anything the model knows"):    # single frames say so
        per_frame = stemflow.find_atoms(mov.images(), pixel_size=0.01, identify=False)
    tol = 0.3 * 0.142 / 0.01

    def recall(table):
        d = table[table.label.astype(str) == "dopant"]
        return len(stemflow.match(d[["frame", "y", "x"]], truth[["frame", "y", "x"]], tol)) / len(truth)

    assert recall(atoms) > 0.9 > 0.7 > recall(per_frame)
    assert set(atoms.attrs) >= {"pixel_size", "shifts", "levels", "window"}
    assert atoms["prob"].between(0, 1).all()
    r = stemflow.track(atoms)
    s = score_events(r.events, mov.events, r.trajectories, mov.atoms, tol, kinds=("hop",)).loc["hop"]
    assert s["true"] >= 4 and s["tp"] >= 0.8 * s["true"] and s["tp"] >= 0.8 * s["found"]


def test_find_atoms_movie_measures_how_often_its_dopants_move(low_dose_movie):
    from stemflow.lowdose import MOVE_RATE, MOVE_RATE_RANGE

    mov = low_dose_movie
    truth = true_move_rate(mov.atoms)
    rate = stemflow.find_atoms_movie(mov.images(), pixel_size=0.01).attrs["move_rate"][0]
    assert truth > 0.13 and abs(rate - truth) < 0.05 and rate != MOVE_RATE
    still = simulate_movie("graphene", 16, 160, drift=(0.0, 0.0), drift_jitter=0.7, seed=32, pixel_size=0.01,
                           dose=1000, defects={"Si1C3": 3}, rates={})
    atoms = stemflow.find_atoms_movie(still.images(), pixel_size=0.01)
    assert atoms.attrs["move_rate"][0] == MOVE_RATE_RANGE[0]
    dop = atoms[atoms.label == "dopant"]
    assert dop.groupby("frame").size().nunique() == 1 and len(dop) >= 2 * 16       # the same Si in every frame


@pytest.mark.parametrize("bad, msg", [
    (dict(movie=np.zeros((2, 64, 64))), "at least 3 frames"),
    (dict(movie=np.zeros((4, 64, 64)), pixel_size=None), "no pixel size"),
    (dict(movie=np.full((4, 64, 64), np.nan)), "NaN"),
    (dict(movie=np.zeros((4, 64, 64)), lattice="amorphous"), "amorphous"),
    (dict(movie=np.zeros((4, 64, 64)), window=-1), "window"),
    (dict(movie=np.zeros((4, 64, 64)), move_rate=1.5), "move_rate"),
    (dict(movie=np.zeros((4, 64, 64)), move_rate="fast"), "move_rate"),
    (dict(movie=np.zeros((4, 64, 64)), amplitude_seed=float("nan")), "amplitude_seed"),
    (dict(movie=np.zeros((4, 64, 64)), segment=2), "segment"),
])
def test_find_atoms_movie_rejects_bad_input(bad, msg):
    kw = dict(pixel_size=0.01) | bad
    movie = kw.pop("movie")
    with pytest.raises(InputError, match=msg):
        stemflow.find_atoms_movie(movie, **kw)


def _two_sites(shape=(40, 56), sig=4.5):
    """Sites A and B one spacing (14 px) apart, the place halfway between them, and a unit
    Gaussian column at any place on a frame of ``shape``."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    sites = np.array([[20.0, 20.0], [20.0, 34.0]])
    return sig, sites, sites.mean(axis=0), lambda p: np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2) / (2 * sig**2))


def test_occupancy_places_a_dopant_between_two_sites_through_its_profile():
    # sites A and B one spacing apart; a dopant at A, then halfway between them (A and B emptied),
    # then back: the fit has no column halfway, only what such a column does to A's and B's
    sig, sites, mid, col = _two_sites()
    host, dopant = 1.0, 5.0
    frames = [dopant * col(sites[0]) + host * col(sites[1])] * 5 + [dopant * col(mid)] * 5 \
        + [dopant * col(sites[0]) + host * col(sites[1])] * 5
    rng = np.random.default_rng(2)
    frames = np.stack(frames) + rng.normal(0, 0.05, (15, 40, 56))
    amp, seen = column_amplitudes(frames, np.ones(frames.shape, bool), sites, sig)
    w, _ = column_amplitudes(col(mid)[None], np.ones((1, 40, 56), bool), sites, sig)
    profiles = {2: (np.array([0, 1]), w[0], np.array([True, True]))}
    levels = Levels(host, dopant, v0=0.05, k=0.0)
    obs = (np.arange(15), np.zeros(15, np.int64))
    cand = np.vstack([sites, mid])
    amp3 = np.column_stack([amp, np.full(15, np.nan)])
    dop, prob = occupancy(amp3, cand, [True, True, False], obs, levels, 14.0, profiles=profiles)
    assert dop[:, 2].astype(int).tolist() == [0] * 5 + [1] * 5 + [0] * 5
    assert dop[:, 0].astype(int).tolist() == [1] * 5 + [0] * 5 + [1] * 5
    assert (prob[5:10, 2] > 0.99).all()             # the profile is evidence, not just no evidence
    without, _ = occupancy(amp, sites, [True, True], obs, levels, 14.0)
    assert without[5:10].any(axis=1).all()          # without the profile the dopant stays on a site


def test_occupancy_fitted_between_places_keep_what_profiles_lose():
    # a dopant alternates between site A (B holds a host column) and the place halfway to B (both
    # emptied), 6 frames each, in heavy noise. Judged through A's and B's amplitudes alone (the
    # profile) the between place loses most of what sets it apart; fitted as a column of its own,
    # with the columns' overlaps (gram), it keeps all of it
    sig, sites, mid, col = _two_sites()
    host, dopant = 1.0, 3.0
    truth = np.array(([0] * 6 + [1] * 6) * 10)                  # 1: halfway
    rng = np.random.default_rng(1)
    frames = np.stack([dopant * col(mid) if t else dopant * col(sites[0]) + host * col(sites[1])
                       for t in truth]) + rng.normal(0, 5.0, (len(truth), 40, 56))
    valid = np.ones(frames.shape, bool)
    amp, _ = column_amplitudes(frames, valid, sites, sig)
    levels = Levels(host, dopant, v0=float(np.std(amp[truth == 0, 1])) ** 2, k=0.0)
    obs = (np.arange(len(truth)), np.zeros(len(truth), np.int64))
    cand = np.vstack([sites, mid])
    w, _ = column_amplitudes(col(mid)[None], np.ones((1, 40, 56), bool), sites, sig)
    profiles = {2: (np.array([0, 1]), w[0], np.array([True, True]))}
    by_profile, _ = occupancy(np.column_stack([amp, np.full(len(truth), np.nan)]), cand, [True, True, False], obs,
                              levels, 14.0, profiles=profiles)
    amp_all, _ = column_amplitudes(frames, valid, cand, sig)
    fitted, _ = occupancy(amp_all, cand, [True, True, False], obs, levels, 14.0, profiles=profiles,
                          gram=column_gram(cand, sig))
    assert (by_profile[:, 2] != truth).sum() >= 8
    assert (fitted[:, 2] != truth).sum() <= 1
    assert (fitted[:, 0] == (truth == 0)).all()
    with pytest.raises(InputError, match="gram"):
        occupancy(amp_all, cand, [True, True, False], obs, levels, 14.0, gram=column_gram(sites, sig))


def test_site_amplitudes_alone_keep_less_than_half_of_what_tells_a_4fold_si_from_a_3fold_one():
    # the claim behind fitting the places between sites (occupancy's notes): graphene at 10 pm/px,
    # 1.1 Å probe; the image of "Si on site A" minus "Si halfway between A and B (both emptied)",
    # and how much of it the columns of the lattice sites alone can express
    sig, b = 0.11 / 0.01 / 2.3548, 14.2
    a1, a2 = np.array([1.5 * b, np.sqrt(3) / 2 * b]), np.array([1.5 * b, -np.sqrt(3) / 2 * b])
    pts = np.array([o + s for i in range(-4, 5) for j in range(-4, 5) for o in [i * a1 + j * a2]
                    for s in ([0.0, 0.0], [b, 0.0])])
    pts = pts[np.hypot(*pts.T) < 45]
    yy, xx = np.mgrid[-60:61, -60:61].astype(float)
    g = lambda p: np.exp(-((yy - p[1]) ** 2 + (xx - p[0]) ** 2) / (2 * sig**2)).ravel()   # noqa: E731
    cols = np.column_stack([g(p) for p in pts] + [np.ones(yy.size)])
    ia, ib = np.argmin(np.hypot(*pts.T)), np.argmin(np.hypot(*(pts - [b, 0]).T))
    host, dopant = 0.063, 0.26
    on_a = cols[:, :-1] @ np.where(np.arange(len(pts)) == ia, dopant, host)
    between = cols[:, :-1] @ np.where(np.isin(np.arange(len(pts)), [ia, ib]), 0.0, host) + dopant * g([b / 2, 0])
    diff = on_a - between
    kept = cols @ np.linalg.lstsq(cols, diff, rcond=None)[0]
    assert 0.3 < kept @ kept / (diff @ diff) < 0.5
    with_mid = np.column_stack([cols, g([b / 2, 0])])
    kept = with_mid @ np.linalg.lstsq(with_mid, diff, rcond=None)[0]
    assert kept @ kept / (diff @ diff) > 0.999


def test_occupancy_follows_a_dopant_from_between_two_sites_on_to_their_neighbours():
    # C - A - B in a row, 14 px apart; a Si sits halfway between A and B (both emptied) for 12 frames,
    # then on A for 3, then on C for 6. The evidence saw it only between A and B; C is more than
    # 1.2 spacings from there, yet one move from A, where a Si between A and B goes to
    yy, xx = np.mgrid[:40, :80]
    sig = 4.5
    a, b, c = np.array([20.0, 30.0]), np.array([20.0, 44.0]), np.array([20.0, 16.0])
    mid = (a + b) / 2
    col = lambda p: np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2) / (2 * sig**2))   # noqa: E731
    host, dopant = 1.0, 5.0
    frames = np.stack([dopant * col(mid) + host * col(c)] * 12 + [dopant * col(a) + host * (col(b) + col(c))] * 3
                      + [dopant * col(c) + host * (col(a) + col(b))] * 6)
    frames += np.random.default_rng(3).normal(0, 0.05, frames.shape)
    cand = np.vstack([a, b, c, mid])
    valid = np.ones(frames.shape, bool)
    amp, _ = column_amplitudes(frames, valid, cand, sig)
    profiles = {3: (np.array([0, 1]), np.array([0.5, 0.5]), np.array([True, True]))}
    obs = (np.arange(12), np.full(12, 3))
    dop, _ = occupancy(amp, cand, [True, True, True, False], obs, Levels(host, dopant, v0=0.01, k=0.0), 14.0,
                       profiles=profiles, gram=column_gram(cand, sig))
    assert dop[:12, 3].all() and dop[12:15, 0].all()
    assert dop[15:, 2].all() and not dop[15:, [0, 1, 3]].any()


def test_low_dose_check_tells_dose_limited_frames_from_frames_ambiguous_for_other_reasons(low_dose_movie):
    from stemflow.lowdose import DIM_COUNTS, DIM_SHARE, ONE_AREA_MISMATCH, SUM_GAIN, SWITCH_SHARE, low_dose_check

    dim = low_dose_check(low_dose_movie.images(), pixel_size=0.01)
    assert dim["low_dose"] and dim["dose_limited"] and dim["frames"] == 9
    assert dim["single_share"] >= SWITCH_SHARE and dim["summed_share"] <= SUM_GAIN * dim["single_share"]
    # dose-limited below SWITCH_SHARE: found together because the frames hold few counts and show one area
    dimmish = simulate_movie("graphene", 9, 200, drift=(0.0, 0.0), drift_jitter=0.7, seed=3, pixel_size=0.01,
                             dose=2500, defects={"Si1C3": 3}, rates={})
    check = low_dose_check(dimmish.images(), pixel_size=0.01)
    assert DIM_SHARE <= check["single_share"] < SWITCH_SHARE
    assert check["dose_limited"] and check["few_counts"] and check["one_area"] and check["low_dose"]
    assert check["mismatch"] <= ONE_AREA_MISMATCH and check["counts_per_nm2"] < DIM_COUNTS
    # z-scored, the same frames are no counts: their counts are unknown, and the other tests decide
    frames = dimmish.images().astype(np.float64)
    zscored = (frames - frames.mean(axis=(1, 2), keepdims=True)) / frames.std(axis=(1, 2), keepdims=True)
    check = low_dose_check(zscored, pixel_size=0.01)
    assert np.isnan(check["counts_per_nm2"]) and check["few_counts"] and check["low_dose"], check
    bright = simulate_movie("graphene", 6, 160, seed=2, pixel_size=0.01, dose=1e5, defects={"Si1C3": 2}, rates={})
    check = low_dose_check(bright.images(), pixel_size=0.01)
    assert not check["low_dose"] and check["single_share"] < DIM_SHARE and np.isnan(check["summed_share"])
    # ambiguous because there is nothing to see, not for want of counts: summing does not help
    noise = np.random.default_rng(0).poisson(0.05, (9, 160, 160)).astype(np.float32)
    check = low_dose_check(noise, pixel_size=0.01)
    assert check["single_share"] >= DIM_SHARE and not check["low_dose"]
    assert not low_dose_check(low_dose_movie.images()[:4], pixel_size=0.01)["low_dose"]     # too few frames
    assert not low_dose_check(low_dose_movie.images(), pixel_size=0.01, lattice="amorphous")["low_dose"]
    with pytest.raises(InputError, match="n_frames"):
        low_dose_check(low_dose_movie.images(), pixel_size=0.01, n_frames=3)


def test_dose_limited_frames_with_many_counts_or_of_different_areas_are_judged_one_by_one(low_dose_movie,
                                                                                            monkeypatch):
    """Below SWITCH_SHARE only frames of few counts and of one area are found together; past it,
    any dose-limited ones."""
    import stemflow.lowdose as lowdose

    dimmish = simulate_movie("graphene", 9, 200, drift=(0.0, 0.0), drift_jitter=0.7, seed=3, pixel_size=0.01,
                             dose=2500, defects={"Si1C3": 3}, rates={}).images()
    with monkeypatch.context() as m:
        m.setattr(lowdose, "frame_mismatch", lambda *a, **k: 3 * lowdose.ONE_AREA_MISMATCH)
        check = lowdose.low_dose_check(dimmish, pixel_size=0.01)
        assert check["dose_limited"] and check["few_counts"] and not check["one_area"] and not check["low_dose"]
        advice = lowdose.low_dose_advice(check)
        assert "different areas" in advice and "they are judged one by one now" in advice
        dim = lowdose.low_dose_check(low_dose_movie.images(), pixel_size=0.01)
        assert not dim["one_area"] and dim["low_dose"]          # past SWITCH_SHARE frame by frame fails anyway
    with monkeypatch.context() as m:
        m.setattr(lowdose, "detected_counts", lambda *a, **k: 10 * lowdose.DIM_COUNTS * 0.01 ** 2)
        check = lowdose.low_dose_check(dimmish, pixel_size=0.01)
        assert check["dose_limited"] and check["one_area"] and not check["few_counts"] and not check["low_dose"]
        assert "counts per nm²" in lowdose.low_dose_advice(check)


def test_detected_counts_follow_the_dose_whatever_the_gain():
    from stemflow.lowdose import detected_counts

    kw = dict(pixel_size=0.01, defects={"Si1C3": 2}, rates={}, read_noise=0.0, seed=4)
    low, high = (simulate_movie("graphene", 1, 160, dose=d, **kw).images()[0] for d in (2000, 20000))
    assert 8 < detected_counts(high) / detected_counts(low) < 12
    assert detected_counts(37.0 * low) == pytest.approx(detected_counts(low), rel=1e-6)


def test_frame_mismatch_is_noise_for_one_area_and_structure_for_many():
    """Registered frames of one movie differ by about their noise; frames of eight different areas
    of the same crystal (registered on its lattice) differ by their defects, well past the limit."""
    from stemflow.lowdose import ONE_AREA_MISMATCH, _registered, frame_mismatch

    sig = 0.11 / 0.01 / 2.3548
    kw = dict(pixel_size=0.01, dose=1e4, defects={"Si1C3": 4}, rates={})
    one = simulate_movie("graphene", 8, 200, drift=(0.0, 0.0), drift_jitter=0.7, seed=5, **kw).images()
    many = np.stack([simulate_movie("graphene", 1, 200, seed=s, **kw).images()[0] for s in range(8)])
    _, reg, valid, _ = _registered(one, sig, 14.2)
    assert 0.5 < frame_mismatch(reg, valid, sig) <= ONE_AREA_MISMATCH / 2
    _, reg, valid, _ = _registered(many, sig, 14.2)
    assert frame_mismatch(reg, valid, sig) > 2 * ONE_AREA_MISMATCH


def test_real_graphene_frames_of_different_areas_are_never_taken_for_one_dim_movie():
    """Nine real 60 kV frames of one pixel size, stacked: the finder reads them well one by one, and
    they show different areas, so no stack of them may switch to find_atoms_movie."""
    import collections

    from stemflow.labelled import dev_data_dir, read_dopant_complexes
    from stemflow.lowdose import low_dose_check

    if dev_data_dir() is None or not (dev_data_dir() / "si_graphene_dev.npz").exists():
        pytest.skip("labelled dev data (shared/data or STEMFLOW_DEV_DATA) not here")
    groups = collections.defaultdict(list)
    for fr in read_dopant_complexes(dev_data_dir() / "si_graphene_dev.npz"):
        groups[(fr.image.shape, fr.pixel_size)].append(fr.image)
    stacks = [(ps, np.stack(v[k:k + 9])) for (_, ps), v in groups.items() for k in range(0, len(v) - 8, 9)]
    assert len(stacks) >= 4
    checks = [low_dose_check(stack, pixel_size=ps) for ps, stack in stacks]
    assert not any(c["low_dose"] for c in checks), checks
    assert any(c["dose_limited"] for c in checks)          # what keeps those apart: their counts
    assert all(not c["few_counts"] for c in checks if c["dose_limited"]), checks
    assert all(not c["one_area"] for c in checks if c["dose_limited"]), checks    # … and their areas


def test_track_accessor_finds_a_dim_movie_with_all_its_frames(low_dose_movie):
    import xarray as xr

    da = xr.DataArray(low_dose_movie.images()[:12], dims=("frame", "y", "x"), attrs={"pixel_size": 0.01})
    with pytest.warns(StemflowWarning, match="found with all frames together"):
        result = da.stem.track()
    assert result.trajectories.attrs["low_dose"]
    truth = low_dose_movie.atoms[(low_dose_movie.atoms.label == "dopant") & (low_dose_movie.atoms.frame < 12)]
    found_si = lambda t: len(stemflow.match(t[t.label.astype(str) == "dopant"][["frame", "y", "x"]],  # noqa: E731
                                            truth[["frame", "y", "x"]], 0.3 * 0.142 / 0.01))
    assert found_si(result.trajectories) >= 0.8 * len(truth)
    with pytest.warns(StemflowWarning, match="find_atoms_movie"):        # frame by frame, when asked
        alone = da.stem.track(low_dose=False).trajectories
    assert not alone.attrs["low_dose"] and found_si(alone) < 0.5 * len(truth)


def test_cli_find_low_dose(tmp_path, capsys, low_dose_movie):
    import pandas as pd

    from stemflow.cli import main

    np.save(tmp_path / "movie.npy", low_dose_movie.images()[:8])
    out = tmp_path / "atoms.parquet"
    assert main(["find", str(tmp_path / "movie.npy"), "--pixel-size", "0.01", "--low-dose", "--out", str(out)]) == 0
    atoms = pd.read_parquet(out)
    assert sorted(atoms.frame.unique()) == list(range(8)) and (atoms.label == "dopant").any()
    assert "dopant" in capsys.readouterr().out
    # by default the movie's first frames decide, and the choice is said
    assert main(["find", str(tmp_path / "movie.npy"), "--pixel-size", "0.01", "--out", str(tmp_path / "a.parquet")]) == 0
    assert "dose-limited" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), atoms)
    assert main(["find", str(tmp_path / "movie.npy"), "--pixel-size", "0.01", "--no-low-dose", "--no-identify",
                 "--out", str(tmp_path / "n.parquet")]) == 0
    err = capsys.readouterr().err                  # the command line says stemflow's warnings in one line each
    assert "stemflow find: warning: " in err and "low-dose frames of one area" in err
    assert not any("dose-limited" in line for line in err.splitlines() if not line.startswith("stemflow find: warning:"))
    assert len(pd.read_parquet(tmp_path / "n.parquet")) != len(atoms)
    np.save(tmp_path / "one.npy", low_dose_movie.images()[0])
    assert main(["find", str(tmp_path / "one.npy"), "--pixel-size", "0.01", "--low-dose",
                 "--out", str(tmp_path / "b.parquet")]) != 0
    assert "one image" in capsys.readouterr().err and not (tmp_path / "b.parquet").exists()


def test_find_atoms_movie_in_segments_matches_the_whole(low_dose_movie):
    import dask.array as dsa
    import xarray as xr

    images = low_dose_movie.images()
    whole = stemflow.find_atoms_movie(images, pixel_size=0.01)
    lazy = xr.DataArray(dsa.from_array(images, chunks=(4, -1, -1)), dims=("frame", "y", "x"),
                        attrs={"pixel_size": 0.01})
    parts = stemflow.find_atoms_movie(lazy, segment=9)
    assert parts.attrs["segments"] == 3 and whole.attrs["segments"] == 1
    assert sorted(parts.frame.unique()) == list(range(24))
    # the chained shifts are as good as the whole movie's registration
    truth = low_dose_movie.drift[["dy", "dx"]].to_numpy()
    err = lambda s: np.sqrt(((np.asarray(s) - truth) ** 2).sum(axis=1).mean())  # noqa: E731
    assert err(parts.attrs["shifts"]) < err(whole.attrs["shifts"]) + 0.5
    per_frame = lambda t: t[t.label == "dopant"].groupby("frame").size().reindex(range(24), fill_value=0)  # noqa: E731
    assert (per_frame(parts) == per_frame(whole)).mean() >= 0.9
    tol = 0.3 * 0.142 / 0.01
    d_w, d_p = (t[t.label == "dopant"] for t in (whole, parts))
    assert len(stemflow.match(d_p[["frame", "y", "x"]], d_w[["frame", "y", "x"]], tol)) >= 0.9 * len(d_w)


def test_complete_sites_puts_back_the_sites_a_moving_dopant_hides_in_the_mean_frame():
    # the host sites of a graphene patch as the mean frame shows them: one dopant spent the movie
    # between sites A and B (one bright column at the bond's middle, none at A or B), another moved
    # between two sites and left a column pulled 3 px from its site
    from stemflow.lowdose import _complete_sites

    sim = stemflow.simulate_image("graphene", 160, pixel_size=0.01, seed=4)
    truth = sim.atoms[sim.atoms.label == "lattice"][["y", "x"]].to_numpy()
    bond = 0.142 / 0.01
    centre = np.argmin(np.hypot(*(truth - 80.0).T))
    a = truth[centre]
    b = truth[np.argsort(np.hypot(*(truth - a).T))[1]]
    far = np.argmin(np.hypot(*(truth - [40.0, 120.0]).T))
    sites = [p for i, p in enumerate(truth) if not np.allclose(p, a) and not np.allclose(p, b) and i != far]
    pulled = truth[far] + [3.0, 0.0]
    sites = np.array(sites + [(a + b) / 2, pulled])
    is_dopant = np.r_[np.zeros(len(sites) - 2, bool), True, True]

    out = _complete_sites(sites, is_dopant, bond)

    assert len(out) == len(truth)                                    # A and B for the middle column
    d = np.hypot(*(out[:, None] - truth[None]).transpose(2, 0, 1)).min(axis=1)
    assert d.max() < 1.0                                             # every site is a true one, px
    for p in (a, b, truth[far]):
        assert np.hypot(*(out - p).T).min() < 0.5
    # the middle column called lattice in the mean, but seen as a dopant in two summed frames
    lattice_label = is_dopant.copy()
    lattice_label[-2] = False
    mid = (a + b) / 2
    assert len(_complete_sites(sites, lattice_label, bond)) == len(truth) - 1         # A, B missing
    out2 = _complete_sites(sites, lattice_label, bond, seen=np.vstack([mid, mid + 1.0]), min_count=2)
    assert len(out2) == len(truth) and np.hypot(*(out2 - a).T).min() < 0.5
    once = _complete_sites(sites, lattice_label, bond, seen=mid[None], min_count=2)
    assert len(once) == len(truth) - 1                                  # one sighting is not enough
    # nothing to do without dopants, or when no lattice can be fitted
    assert np.array_equal(_complete_sites(sites[:-2], is_dopant[:-2], bond), sites[:-2])
    few = sites[:4]
    assert np.array_equal(_complete_sites(few, np.array([False, False, False, True]), bond), few)


def test_occupancy_moves_a_dopant_between_two_places_off_the_sites_only_through_a_site():
    # a 4-fold Si between A and B, then between A and C: it must become 3-fold on A on the way
    yy, xx = np.mgrid[:64, :64]
    sig = 4.5
    a, b = np.array([30.0, 30.0]), np.array([30.0, 44.0])
    c = a + 14.0 * np.array([np.sin(np.pi / 3), -0.5])                 # 120° from A→B
    col = lambda p: np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2) / (2 * sig**2))   # noqa: E731
    sites = np.vstack([a, b, c])
    mab, mac = (a + b) / 2, (a + c) / 2
    host, dopant = 1.0, 5.0
    frames = [dopant * col(mab) + host * col(c)] * 6 + [dopant * col(mac) + host * col(b)] * 6
    frames = np.stack(frames) + np.random.default_rng(3).normal(0, 0.05, (12, 64, 64))
    amp, _ = column_amplitudes(frames, np.ones(frames.shape, bool), sites, sig)
    profiles = {}
    for k, (m, ends) in enumerate(((mab, [0, 1]), (mac, [0, 2]))):
        w, _ = column_amplitudes(col(m)[None], np.ones((1, 64, 64), bool), sites, sig)
        keep = np.abs(w[0]) > 0.02
        idx = np.flatnonzero(keep)
        profiles[3 + k] = (idx, w[0][keep], np.isin(idx, ends))
    amp5 = np.column_stack([amp, np.full((12, 2), np.nan)])
    cand = np.vstack([sites, mab, mac])
    obs = (np.arange(12), np.zeros(12, np.int64))
    dop, _ = occupancy(amp5, cand, [True, True, True, False, False], obs, Levels(host, dopant, 0.05, 0.0), 14.0,
                       profiles=profiles)
    where = dop.argmax(axis=1).tolist()
    assert dop.sum(axis=1).tolist() == [1] * 12
    assert where[0] == 3 and where[-1] == 4
    assert all(not (p in (3, 4) and q in (3, 4) and p != q) for p, q in zip(where, where[1:]))
    assert 0 in where                                                   # through A


def test_the_first_frame_is_weighed_as_moves_are():
    """With no evidence, a place between sites (weight 0.5) is half as likely as a site at the first
    frame too, as it is for a move."""
    from stemflow.occupancy import _hmm

    _, post = _hmm(np.zeros((1, 2)), [[1], [0]], 0.1, weight=[1.0, 0.5])
    np.testing.assert_allclose(post[0], [2 / 3, 1 / 3])
    _, post = _hmm(np.zeros((3, 2)), [[1], [0]], 0.1)
    np.testing.assert_allclose(post, 0.5)


def test_line_offsets_come_out_of_the_registered_frames():
    """Scan lines whose baseline jumps from line to line (0.1 counts RMS here, at 1000 e⁻/Å² per frame)
    are taken out before any column is fitted: what a row keeps of its departure from the mean frame
    is the offset, and after registration it is gone."""
    from stemflow.lowdose import _registered, line_offsets

    mov = simulate_movie("graphene", 12, 160, drift=(0.0, 0.0), drift_jitter=0.5, rates={}, seed=5,
                         pixel_size=0.01, dose=1000, defects={"Si1C3": 2}, line_offset=0.1)
    frames = mov.images()
    raw_reg, valid = shift_frames(frames, register_frames(frames, sigma_px=3.0))
    before = line_offsets(raw_reg, valid)
    assert np.sqrt(np.mean(before ** 2)) > 0.07                       # the offsets are there …
    _, reg, valid, _ = _registered(frames, 4.7, 14.2, destripe=True)
    after = line_offsets(reg, valid)
    assert np.sqrt(np.mean(after ** 2)) < 0.2 * np.sqrt(np.mean(before ** 2))   # … and then gone


def test_line_offsets_leave_rows_with_little_data_alone():
    from stemflow.lowdose import line_offsets

    reg = np.zeros((3, 4, 20))
    reg[1] += 1.0
    valid = np.ones(reg.shape, bool)
    valid[:, 0, 4:] = False                       # row 0 holds 4 of 20 pixels: under a quarter
    off = line_offsets(reg, valid)
    assert np.allclose(off[:, 0], 0.0)
    assert np.allclose(off[:, 1:], [[-1 / 3], [2 / 3], [-1 / 3]])
    with pytest.raises(InputError, match="two stacks"):
        line_offsets(reg[0], valid[0])


def test_line_offsets_leave_frames_without_them_alone():
    """Without line offsets, a row's mean departure is the noise of its pixels: subtracting it would
    only add that noise to every column fitted on the row, so it is shrunk away."""
    from stemflow.lowdose import line_offsets

    rng = np.random.default_rng(3)
    lattice = np.tile(0.5 + 0.4 * np.sin(np.arange(200) / 3.0) ** 2, (120, 1))
    frames = rng.poisson(np.broadcast_to(lattice, (10, 120, 200))).astype(float)
    valid = np.ones(frames.shape, bool)
    row_noise = np.sqrt(lattice.mean() / 200)                  # a row mean's noise, counts
    assert np.sqrt(np.mean(line_offsets(frames, valid) ** 2)) < 0.3 * row_noise
    striped = frames + rng.normal(0, 5 * row_noise, (10, 120, 1))
    assert np.sqrt(np.mean(line_offsets(striped, valid) ** 2)) > 3 * row_noise
