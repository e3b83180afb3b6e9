"""Tests of the Gaussian-fit refinement against exact positions (the simulator's truth, or spots
drawn here with known centres)."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from stemflow import find_atoms
from stemflow.errors import InputError
from stemflow.refine import fit_columns, refine_atoms
from stemflow.simulate import simulate_image


def _spots(shape, yx, sigma, height, background):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, float(background))
    for y, x in yx:
        img += height * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return img


def _grid(shape, spacing, margin, rng):
    ys = np.arange(margin, shape[0] - margin, spacing, dtype=float)
    xs = np.arange(margin, shape[1] - margin, spacing, dtype=float)
    yx = np.array([(y, x) for y in ys for x in xs])
    return yx + rng.uniform(-0.5, 0.5, yx.shape)


def _rmse(df, truth, margin, shape):
    t = truth[(truth.y > margin) & (truth.y < shape[0] - 1 - margin)
              & (truth.x > margin) & (truth.x < shape[1] - 1 - margin)
              & truth.label.isin(["lattice", "dopant"])]
    d, _ = cKDTree(df[["y", "x"]].to_numpy()).query(t[["y", "x"]].to_numpy())
    return float(np.sqrt(np.mean(d**2)))


def test_fit_recovers_overlapping_noise_free_spots_from_rough_starts():
    rng = np.random.default_rng(0)
    yx = _grid((96, 96), 11.0, 8, rng)           # neighbours 2.4 σ apart: overlapping
    img = _spots((96, 96), yx, 4.5, 10.0, 2.0)
    start = yx + rng.normal(0, 0.7, yx.shape)
    y, x, d = fit_columns(img, start[:, 0], start[:, 1], 3.5, return_details=True)
    err = np.hypot(y - yx[:, 0], x - yx[:, 1])
    assert np.sqrt(np.mean(err**2)) < 0.05          # from 0.7 px RMS
    assert d["sigma"] == pytest.approx(4.5, rel=0.01)
    assert d["ok"].all()


def test_fit_standard_errors_match_the_scatter_under_poisson_noise():
    rng = np.random.default_rng(1)
    yx = _grid((128, 128), 16.0, 10, rng)
    expected = _spots((128, 128), yx, 3.0, 40.0, 3.0)
    dev, est = [], []
    for k in range(4):
        img = rng.poisson(expected).astype(float)
        y, x, d = fit_columns(img, yx[:, 0], yx[:, 1], 3.0, fit_sigma=False, return_details=True)
        dev.append(np.r_[y - yx[:, 0], x - yx[:, 1]])
        est.append(np.r_[d["y_err"], d["x_err"]])
    ratio = np.std(np.concatenate(dev)) / np.sqrt(np.mean(np.concatenate(est) ** 2))
    assert 0.8 < ratio < 1.25


def test_refinement_sharpens_the_networks_centres_at_high_dose():
    sim = simulate_image("ws2", 256, seed=11, pixel_size=0.012, dose=1e6,
                         defects={"Mo_W": 3, "V_S": 3})
    plain = find_atoms(sim.image, 0.012, "ws2", flips=1)      # the one pass refine weighs its fit against
    refined = find_atoms(sim.image, 0.012, "ws2", refine=True)
    assert refined.label.tolist() == plain.label.tolist()
    before = _rmse(plain, sim.atoms, 12, sim.image.shape)
    after = _rmse(refined, sim.atoms, 12, sim.image.shape)
    assert after < 0.8 * before
    vac = plain.label == "vacancy"
    assert np.array_equal(refined.loc[vac, ["y", "x"]].to_numpy(), plain.loc[vac, ["y", "x"]].to_numpy())


def test_a_column_without_signal_keeps_its_start():
    img = _spots((64, 64), [(32.0, 32.0)], 3.0, 50.0, 1.0)
    y, x, d = fit_columns(img, [32.3, 10.0], [31.6, 10.0], 3.0, return_details=True)
    assert abs(y[0] - 32.0) < 0.01 and abs(x[0] - 32.0) < 0.01
    assert (y[1], x[1]) == (10.0, 10.0) and not d["ok"][1] and d["ok"][0]     # kept, and flagged


def test_bad_input_is_refused_with_a_clear_message():
    img = np.ones((32, 32))
    with pytest.raises(InputError, match="NaN"):
        fit_columns(np.full((32, 32), np.nan), [5.0], [5.0], 2.0)
    with pytest.raises(InputError, match="2-D"):
        fit_columns(np.ones((2, 32, 32)), [5.0], [5.0], 2.0)
    with pytest.raises(InputError, match="different lengths"):
        fit_columns(img, [5.0, 6.0], [5.0], 2.0)
    with pytest.raises(InputError, match="sigma"):
        fit_columns(img, [5.0], [5.0], 0.0)
    y, x = fit_columns(img, [], [], 2.0)
    assert y.size == 0 and x.size == 0
    empty = pd.DataFrame({"y": [], "x": [], "label": pd.Categorical([])})
    assert refine_atoms(img, empty, 2.0).empty
