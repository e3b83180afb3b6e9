"""Tests of matching and scoring on hand-built tables whose answers are known."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from stemflow.errors import InputError
from stemflow.metrics import default_max_distance, match, score


def _table(yx, labels=None, frame=None):
    yx = np.asarray(yx, float).reshape(-1, 2)
    df = pd.DataFrame({"y": yx[:, 0], "x": yx[:, 1]})
    if labels is not None:
        df["label"] = pd.Categorical(labels, categories=["lattice", "dopant", "vacancy"])
    if frame is not None:
        df.insert(0, "frame", np.asarray(frame, np.int64))
    return df


def _grid(n=6, spacing=10.0):
    g = np.arange(n) * spacing
    return np.array(list(itertools.product(g, g)))


# ----------------------------------------------------------------------------- match


def test_shifted_copy_pairs_every_row_with_its_original():
    truth = _table(_grid())
    pred = _table(_grid() + [0.3, -0.4])
    m = match(pred.iloc[::-1].reset_index(drop=True), truth, 2.0)
    assert len(m) == len(truth)
    assert np.allclose(m["distance"], 0.5)
    # Reversed pred: row k of pred is row n-1-k of truth.
    assert (m["truth"].to_numpy() == len(truth) - 1 - m["pred"].to_numpy()).all()
    assert list(m.columns) == ["pred", "truth", "distance"]
    assert m["pred"].dtype == np.int64 and m["distance"].dtype == np.float64


def test_rows_beyond_max_distance_stay_unpaired_and_the_limit_is_inclusive():
    truth = _table([[0, 0], [0, 10]])
    pred = _table([[0, 1.0], [0, 12.5]])
    m = match(pred, truth, 1.0)
    assert m[["pred", "truth"]].values.tolist() == [[0, 0]]
    assert m["distance"].iloc[0] == pytest.approx(1.0)


def test_optimal_matching_pairs_more_than_greedy_nearest_first():
    # Greedy takes the closest pair (pred 0 – truth 0, 0.3 px) and then has nothing left for
    # pred 1 or truth 1; the optimum pairs both: pred 0 – truth 1 (0.9), pred 1 – truth 0 (0.6).
    pred = _table([[0, 0.0], [0, 0.9]])
    truth = _table([[0, 0.3], [0, -0.9]])
    m = match(pred, truth, 1.0)
    assert m[["pred", "truth"]].values.tolist() == [[0, 1], [1, 0]]
    assert np.allclose(m["distance"], [0.9, 0.6])


def test_two_preds_competing_for_one_truth_the_nearer_wins():
    truth = _table([[5, 5]])
    pred = _table([[5, 5.4], [5, 4.9], [5, 5.8]])
    m = match(pred, truth, 1.0)
    assert m[["pred", "truth"]].values.tolist() == [[1, 0]]
    assert m["distance"].iloc[0] == pytest.approx(0.1)


def test_matching_is_optimal_on_random_clouds():
    # Reference: dense Hungarian assignment, cost = distance within reach, else a large number.
    rng = np.random.default_rng(7)
    for trial in range(20):
        p = rng.uniform(0, 12, (rng.integers(1, 30), 2))
        t = rng.uniform(0, 12, (rng.integers(1, 30), 2))
        r = 1.5
        dist = np.hypot(*(p[:, None, :] - t[None, :, :]).transpose(2, 0, 1))
        big = 1e6
        cost = np.where(dist <= r, dist, big)
        ri, ci = linear_sum_assignment(cost)
        ok = cost[ri, ci] < big
        m = match(_table(p), _table(t), r)
        assert len(m) == ok.sum(), trial
        assert m["distance"].sum() == pytest.approx(dist[ri[ok], ci[ok]].sum(), abs=1e-9), trial
        assert m["pred"].is_unique and m["truth"].is_unique
        assert np.allclose(m["distance"], dist[m["pred"], m["truth"]])


def test_matching_stays_within_frames():
    truth = _table([[0, 0], [0, 0]], frame=[0, 1])
    pred = _table([[0, 0.2], [50, 50], [0, 0.1]], frame=[1, 1, 3])
    m = match(pred, truth, 1.0)
    assert m[["pred", "truth"]].values.tolist() == [[0, 1]]
    # Without a frame column in one table, everything is one frame.
    m2 = match(pred.drop(columns="frame"), truth, 1.0)
    assert len(m2) == 2


def test_match_returns_row_positions_whatever_the_index():
    truth = _table([[0, 0], [0, 10]]).set_axis([7, 7])
    pred = _table([[0, 10.2]]).set_axis(["a"])
    m = match(pred, truth, 1.0)
    assert m[["pred", "truth"]].values.tolist() == [[0, 1]]


def test_match_of_empty_tables_is_empty():
    m = match(_table(np.empty((0, 2))), _table([[0, 0]]), 1.0)
    assert len(m) == 0 and list(m.columns) == ["pred", "truth", "distance"]
    assert m["pred"].dtype == np.int64


@pytest.mark.parametrize("pred, truth, md, message", [
    (pd.DataFrame({"y": [0.0]}), _table([[0, 0]]), 1.0, "lacks column"),
    (_table([[np.nan, 0]]), _table([[0, 0]]), 1.0, "NaN"),
    (_table([[0, 0]]), _table([[0, 0]]), 0.0, "max_distance"),
    (_table([[0, 0]]), _table([[0, 0]]), np.inf, "max_distance"),
    (np.zeros((2, 2)), _table([[0, 0]]), 1.0, "DataFrame"),
])
def test_match_bad_input_says_what_to_fix(pred, truth, md, message):
    with pytest.raises(InputError, match=message):
        match(pred, truth, md)


# ----------------------------------------------------------------------------- score


def test_score_of_a_perfect_detection():
    truth = _table(_grid(), ["lattice"] * 35 + ["dopant"])
    s = score(truth.copy(), truth)
    assert s.index.tolist() == ["lattice", "dopant", "vacancy", "all"]
    assert s.index.name == "class"
    assert s.loc["all", ["tp", "fp", "fn"]].tolist() == [36, 0, 0]
    assert s.loc["dopant", ["tp", "fp", "fn"]].tolist() == [1, 0, 0]
    assert (s[["precision", "recall", "f1"]] == 1.0).all().all()   # vacancy: nothing to find
    assert s.loc["all", "rmse_px"] == 0.0
    assert np.isnan(s.loc["vacancy", "rmse_px"])
    assert [str(t) for t in s.dtypes] == ["int64"] * 3 + ["float64"] * 4


def test_score_counts_a_missing_an_extra_and_a_swapped_atom():
    labels = ["lattice"] * 34 + ["dopant", "vacancy"]
    truth = _table(_grid(), labels)
    pred = truth.iloc[1:].copy()                                  # lattice row 0 missing
    pred.loc[35, "label"] = "dopant"                              # vacancy called dopant
    extra = _table([[100.0, 100.0]], ["lattice"])                 # one atom where there is none
    pred = pd.concat([pred, extra], ignore_index=True)
    s = score(pred, truth)
    assert s.loc["lattice", ["tp", "fp", "fn"]].tolist() == [33, 1, 1]
    assert s.loc["dopant", ["tp", "fp", "fn"]].tolist() == [1, 1, 0]
    assert s.loc["vacancy", ["tp", "fp", "fn"]].tolist() == [0, 0, 1]
    assert s.loc["all", ["tp", "fp", "fn"]].tolist() == [35, 1, 1]
    assert s.loc["lattice", "precision"] == pytest.approx(33 / 34)
    assert s.loc["lattice", "recall"] == pytest.approx(33 / 34)
    assert s.loc["dopant", "precision"] == pytest.approx(0.5)
    assert s.loc["dopant", "f1"] == pytest.approx(2 / 3)
    assert s.loc["vacancy", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]


def test_rmse_of_a_jittered_truth_is_the_jitter():
    rng = np.random.default_rng(3)
    yx = rng.uniform(0, 500, (2000, 2))
    yx = yx[np.argsort(yx[:, 0])]
    truth = _table(yx, ["lattice"] * 2000)
    sigma = 0.2                                                   # px per axis
    pred = truth.copy()
    pred[["y", "x"]] += rng.normal(0, sigma, (2000, 2))
    s = score(pred, truth, max_distance=2.0, pixel_size=0.012)
    expected = sigma * np.sqrt(2)                                 # radial RMS of 2-D jitter
    assert s.loc["all", "tp"] == 2000
    assert s.loc["all", "rmse_px"] == pytest.approx(expected, rel=0.05)
    assert s.loc["lattice", "rmse_pm"] == pytest.approx(s.loc["lattice", "rmse_px"] * 12.0)


def test_default_max_distance_is_half_the_median_neighbour_distance():
    truth = _table(_grid(spacing=8.0), ["lattice"] * 36)
    assert default_max_distance(truth) == pytest.approx(4.0)
    # An atom 3.9 px off the corner counts with the default, one 4.1 px off does not.
    assert score(truth.iloc[[0]].assign(x=-3.9), truth).loc["all", "tp"] == 1
    assert score(truth.iloc[[0]].assign(x=-4.1), truth).loc["all", "tp"] == 0


def test_default_max_distance_is_taken_within_frames():
    a = _grid(spacing=8.0)
    truth = pd.concat([_table(a, frame=[0] * 36), _table(a + 0.5, frame=[1] * 36)],
                      ignore_index=True)
    assert default_max_distance(truth) == pytest.approx(4.0)
    with pytest.raises(InputError, match="max_distance"):
        default_max_distance(_table([[0, 0], [0, 1]], frame=[0, 1]))


def test_score_within_frames():
    truth = _table([[0, 0], [20, 20], [0, 0]], ["lattice", "dopant", "lattice"], frame=[0, 0, 1])
    pred = _table([[0, 0.2], [20, 20]], ["lattice", "dopant"], frame=[1, 1])
    s = score(pred, truth, max_distance=1.0)
    assert s.loc["all", ["tp", "fp", "fn"]].tolist() == [1, 1, 2]
    assert s.loc["dopant", ["tp", "fp", "fn"]].tolist() == [0, 1, 1]


def test_scores_when_nothing_is_found_or_nothing_is_there():
    truth = _table(_grid(3), ["lattice"] * 9)
    none = truth.iloc[:0]
    s = score(none, truth)
    assert s.loc["lattice", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]
    s = score(truth, none, max_distance=1.0)
    assert s.loc["lattice", ["precision", "recall", "f1"]].tolist() == [0.0, 0.0, 0.0]
    s = score(none, none, max_distance=1.0)
    assert (s[["precision", "recall", "f1"]] == 1.0).all().all()
    assert not s[["precision", "recall", "f1"]].isna().any().any()


def test_detection_only_scoring_needs_no_labels():
    truth = _table(_grid(3))
    s = score(truth, truth, classes=())
    assert s.index.tolist() == ["all"]
    with pytest.raises(InputError, match="classes=()"):
        score(truth, truth)


def test_score_of_the_simulator_truth_against_itself():
    from stemflow.simulate import simulate_image

    sim = simulate_image("graphene", 128, seed=2, pixel_size=0.012, defects={"Si1C3": 1, "V1": 1})
    s = score(sim.atoms, sim.atoms, pixel_size=sim.pixel_size)
    n = sim.atoms["label"].value_counts()
    assert s.loc["all", "tp"] == len(sim.atoms)
    assert s.loc["dopant", "tp"] == n["dopant"] == 1 and s.loc["vacancy", "tp"] == n["vacancy"] == 1
    assert (s["f1"] == 1.0).all()
