"""Resampling keeps positions exact; normalisation is robust and refuses unusable images."""

import numpy as np
import pytest
from scipy import ndimage

from stemflow.errors import InputError
from stemflow.preprocess import normalize, resample, to_input_coords, to_model_coords
from stemflow.simulate import simulate_image
from stemflow.simulate.imaging import render


@pytest.mark.parametrize("factor", [0.25, 0.4, 0.8, 1.6])
def test_resampling_maps_positions_exactly(factor):
    yx = np.array([[60.3, 71.7]])
    img = render(yx, [1.0], 6.0, (140, 150))
    small = resample(img, factor)
    assert small.shape == (int(140 * factor), int(150 * factor))
    c = np.array(ndimage.center_of_mass(small))
    assert np.allclose(to_input_coords(c, factor), yx[0], atol=0.02)
    assert np.allclose(to_model_coords(to_input_coords(c, factor), factor), c)


def test_downsampling_keeps_the_mean_counts():
    sim = simulate_image("graphene", 256, seed=1, pixel_size=0.005)
    small = resample(sim.image, 0.25)
    assert small.mean() == pytest.approx(sim.image.mean(), rel=0.02)


def test_normalisation_is_the_same_across_doses():
    lo = simulate_image("graphene", 192, seed=2, dose=3e4)
    hi = simulate_image("graphene", 192, seed=2, dose=3e6)
    # on the network's grid (20 pm/px), columns sit at the same normalised level whatever the dose
    a, b = normalize(resample(lo.image, 0.5)), normalize(resample(hi.image, 0.5))
    t = hi.atoms[hi.atoms.element == "C"]
    yx = to_model_coords(t[["y", "x"]].to_numpy(), 0.5)
    r, c = np.rint(yx).astype(int).clip(0, 95).T
    sa, sb = ndimage.gaussian_filter(a, 1)[r, c].mean(), ndimage.gaussian_filter(b, 1)[r, c].mean()
    assert sa == pytest.approx(sb, rel=0.15)  # was 0.69 vs 0.89 with σ = 1 px smoothing


def test_constant_and_nan_images_are_refused():
    with pytest.raises(InputError, match="constant"):
        normalize(np.full((64, 64), 3.0))
    img = np.ones((64, 64))
    img[5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        normalize(img)
    with pytest.raises(InputError, match="positive"):
        resample(np.ones((8, 8)), 0)
