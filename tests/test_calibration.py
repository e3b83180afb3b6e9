"""Reliability tables and the expected calibration error, against hand-computed values."""

import numpy as np
import pytest

from stemflow.calibration import expected_calibration_error, plot_reliability, reliability
from stemflow.errors import InputError


def test_reliability_bins_and_gaps_by_hand():
    prob = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55]
    right = [True, True, True, False, True, False]
    t = reliability(prob, right, bins=10)
    assert t["n"].tolist() == [2, 4]
    assert t["accuracy"].tolist() == [0.5, 0.75]
    assert np.allclose(t["gap"], [-0.05, -0.2])
    # ECE = (2·0.05 + 4·0.2) / 6
    assert expected_calibration_error(prob, right, bins=10) == pytest.approx(0.9 / 6)


def test_calibrated_probabilities_have_a_small_ece_and_overconfident_ones_a_large_one():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    right = rng.uniform(0, 1, p.size) < p
    assert expected_calibration_error(p, right) < 0.02
    assert expected_calibration_error(np.sqrt(p), right) > 0.1


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="length"):
        reliability([0.5], [True, False])
    with pytest.raises(InputError, match="within"):
        reliability([1.5], [True])
    fig = plot_reliability({"x": reliability([0.2, 0.9], [False, True], bins=5)}, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000 and fig is not None
