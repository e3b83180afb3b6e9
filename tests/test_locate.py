"""Tests of locate against the simulator's ground truth (positions, labels), not its own output."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from stemflow.errors import InputError
from stemflow.locating import locate
from stemflow.simulate import simulate_image
from stemflow.tables import CLASSES, LOCATED
from stemflow.simulate.imaging import class_mask

CODE = {name: k for k, name in enumerate(CLASSES)}


def _onehot(mask, blur=0.0):
    """Ideal network output: one-hot of the class mask, optionally blurred and renormalised."""
    p = np.eye(len(CLASSES), dtype=np.float32)[mask].transpose(2, 0, 1)
    if blur:
        p = np.stack([ndimage.gaussian_filter(c, blur) for c in p])
        p /= p.sum(axis=0)
    return p


def _interior(t, shape, margin):
    h, w = shape
    return t[(t.y >= margin) & (t.y <= h - 1 - margin) & (t.x >= margin) & (t.x <= w - 1 - margin)]


def _nearest(found, truth):
    """Distance (px) from each true row to the nearest found row, and that row's position."""
    return cKDTree(found[["y", "x"]].to_numpy()).query(truth[["y", "x"]].to_numpy())


def _rmse(found, truth, shape, margin=6, labels=("lattice", "dopant")):
    t = _interior(truth, shape, margin)
    t = t[t.label.isin(labels)]
    d, _ = _nearest(found, t)
    return float(np.sqrt(np.mean(d**2)))


@pytest.fixture(scope="module")
def graphene():
    # 12 pm/px: C–C 11.8 px, truth disks of radius 0.5 Å = 4.2 px, probe σ 3.9 px.
    return simulate_image("graphene", 192, seed=1, pixel_size=0.012, dose=1e5,
                          defects={"Si1C3": 2, "Si1C4": 1, "V1": 2})


# ----------------------------------------------------------------------------- truth recovery


@pytest.mark.parametrize("blur, bound", [(0.0, 0.15), (1.5, 0.2)])
def test_ideal_probabilities_give_every_column_with_its_label(graphene, blur, bound):
    sim = graphene
    found = locate(_onehot(sim.mask, blur))
    inner = _interior(sim.atoms, sim.mask.shape, 5)
    d, k = _nearest(found, inner)
    assert (d < 1.0).all()                                       # every true column is found
    assert (found.label.to_numpy()[k] == inner.label.astype(str).to_numpy()).all()
    assert set(inner.label) == {"lattice", "dopant", "vacancy"}
    # Nothing found where there is no column.
    d_back, _ = _nearest(sim.atoms, _interior(found, sim.mask.shape, 5))
    assert (d_back < 1.0).all()
    # Sub-pixel centres: disks are pixelated, so about 0.1 px RMS.
    assert _rmse(found, sim.atoms, sim.mask.shape, labels=("lattice", "dopant", "vacancy")) < bound


def test_output_columns_dtypes_and_values(graphene):
    sim = graphene
    found = locate(_onehot(sim.mask), sim.image)
    assert list(found.columns) == LOCATED.names
    assert [str(t) for t in found.dtypes] == ["float64", "float64", "category", "float32",
                                              "float32", "int64"]
    assert list(found.label.cat.categories) == ["lattice", "dopant", "vacancy"]
    assert np.allclose(found.prob, 1.0)                          # one-hot input
    r = 0.5 / sim.imaging.pixel_A                                # disk radius, px
    inner = _interior(found, sim.mask.shape, r + 1)
    assert np.all(np.abs(inner.area - np.pi * r**2) < 2 * np.pi * r)


def test_intensity_is_the_image_mean_over_the_blob(graphene):
    sim = graphene
    found = locate(_onehot(sim.mask), sim.expected)
    t = _interior(sim.atoms, sim.mask.shape, 6)
    _, k = _nearest(found, t)
    # Reference: mean of the image over the truth disk of each column (plain numpy).
    lab, n = ndimage.label(sim.mask > 0)
    ref = ndimage.mean(sim.expected, lab, lab[np.rint(t.y).astype(int), np.rint(t.x).astype(int)])
    assert np.allclose(found.intensity.to_numpy()[k], ref, rtol=1e-5)
    # Physics: Si columns are brighter than C, vacancies darker.
    by = pd.Series(found.intensity.to_numpy()[k], index=t.label.astype(str).to_numpy())
    assert by["dopant"].min() > 2 * by["lattice"].median() > 4 * by["vacancy"].max()
    assert locate(_onehot(sim.mask)).intensity.isna().all()


# ----------------------------------------------------------------------------- refinement


def test_refinement_on_the_noise_free_image_beats_the_probability_centre(graphene):
    sim = graphene
    p = _onehot(sim.mask)
    plain = _rmse(locate(p, sim.expected, refine=False), sim.atoms, sim.mask.shape)
    refined = _rmse(locate(p, sim.expected, refine=True), sim.atoms, sim.mask.shape)
    # Measured: 0.11 px → 0.05 px (the rest is the pull of Si on its C neighbours).
    assert plain > 0.08
    assert refined < 0.07 and refined < 0.65 * plain


def test_refinement_recovers_sub_pixel_centres_from_pixel_snapped_probabilities():
    # Heavy columns, realistic dose: disks snapped to whole pixels (error 0.41 px RMS) are put
    # right by the noisy image (measured 0.17 px).
    sim = simulate_image("ws2", 160, seed=2, pixel_size=0.01, dose=1e5)
    t = sim.atoms
    snapped = class_mask(np.rint(t[["y", "x"]].to_numpy()), t.label.map(CODE).to_numpy(np.uint8),
                         sim.mask.shape, 0.5 / sim.imaging.pixel_A)
    p = _onehot(snapped)
    plain = _rmse(locate(p, sim.image), t, sim.mask.shape, labels=("lattice",))
    refined = _rmse(locate(p, sim.image, refine=True), t, sim.mask.shape, labels=("lattice",))
    assert plain > 0.3
    assert refined < 0.25


def test_refinement_is_off_by_default_and_never_moves_vacancies(graphene):
    sim = graphene
    p = _onehot(sim.mask)
    plain = locate(p, sim.expected)
    assert plain[["y", "x"]].equals(locate(p)[["y", "x"]])
    refined = locate(p, sim.expected, refine=True)
    vac = (plain.label == "vacancy").to_numpy()
    assert vac.sum() == 2
    assert np.array_equal(plain[vac][["y", "x"]], refined[vac][["y", "x"]])
    assert not np.allclose(plain[~vac][["y", "x"]], refined[~vac][["y", "x"]])


# ----------------------------------------------------------------------------- touching atoms


def test_touching_atoms_are_split():
    # Disks of radius 0.75 Å overlap their three neighbours (C–C 1.42 Å): the whole lattice is
    # a handful of connected blobs, which must be cut back into columns.
    sim = simulate_image("graphene", 128, seed=4, pixel_size=0.02, mask_radius=0.75,
                         defects={"Si1C3": 1, "Si1C4": 1})
    p = _onehot(sim.mask)
    assert ndimage.label(sim.mask > 0)[1] < 5
    found = locate(p)
    inner = _interior(sim.atoms, sim.mask.shape, 5)
    d, k = _nearest(found, inner)
    assert (d < 1.0).all()
    assert (found.label.to_numpy()[k] == inner.label.astype(str).to_numpy()).all()
    assert len(_interior(found, sim.mask.shape, 5)) <= len(inner) + 2
    assert _rmse(found, sim.atoms, sim.mask.shape, margin=5) < 0.3
    assert len(locate(p, split_touching=False)) < 10


def test_a_dopant_touching_a_carbon_gives_two_atoms_with_their_own_labels():
    mask = np.zeros((40, 40), np.uint8)
    yx = np.array([[20.0, 15.3], [20.4, 23.1]])                  # 7.8 px apart, radius 5 px
    mask[:] = class_mask(yx, np.array([CODE["dopant"], CODE["lattice"]], np.uint8), mask.shape, 5.0)
    assert ndimage.label(mask > 0)[1] == 1
    found = locate(_onehot(mask)).sort_values("x")
    assert found.label.tolist() == ["dopant", "lattice"]
    assert np.allclose(found[["y", "x"]], yx, atol=0.6)


def test_a_single_elongated_blob_is_not_split():
    yy, xx = np.mgrid[:40, :40]
    for angle in (0.0, 0.6, 1.1):
        u = (yy - 20.2) * np.cos(angle) + (xx - 19.7) * np.sin(angle)
        v = -(yy - 20.2) * np.sin(angle) + (xx - 19.7) * np.cos(angle)
        mask = ((u / 6.0) ** 2 + (v / 4.0) ** 2 <= 1).astype(np.uint8)
        found = locate(_onehot(mask))
        assert len(found) == 1
        assert np.allclose(found[["y", "x"]].to_numpy()[0], [20.2, 19.7], atol=0.2)


# ----------------------------------------------------------------------------- borders, sizes


def test_blobs_cut_by_the_edge_get_a_centre_and_border_drops_them():
    yx = np.array([[1.0, 20.0], [20.0, 20.0], [38.5, 3.0]])
    mask = class_mask(yx, np.array([1, 1, 1], np.uint8), (40, 40), 4.0)
    found = locate(_onehot(mask))
    assert len(found) == 3
    d, _ = _nearest(found, pd.DataFrame(yx, columns=["y", "x"]))
    assert (d < 2.0).all()                                       # cut blobs: centre pulled inwards
    kept = locate(_onehot(mask), border=4.0)
    assert kept[["y", "x"]].to_numpy().round().tolist() == [[20.0, 20.0]]
    # border drops exactly the centres closer than it to the outermost pixel centres.
    to_edge = np.minimum(np.minimum(found.y, 39 - found.y), np.minimum(found.x, 39 - found.x))
    for b in (0.5, 1.8, 2.5):
        assert len(locate(_onehot(mask), border=b)) == (to_edge >= b).sum()
    assert len(locate(_onehot(mask), border=1.8)) == 2


def test_small_specks_are_dropped_unless_asked_for(graphene):
    sim = graphene
    mask = sim.mask.copy()
    specks = np.argwhere(ndimage.distance_transform_edt(mask == 0) > 3)[::997][:5]
    mask[specks[:, 0], specks[:, 1]] = CODE["lattice"]
    n_true = len(locate(_onehot(sim.mask)))
    assert len(locate(_onehot(mask))) == n_true
    assert len(locate(_onehot(mask), min_area=1)) == n_true + len(specks)


def test_threshold_applies_to_the_foreground_probability():
    p = np.zeros((2, 20, 20), np.float32)
    p[1, 5:9, 5:9] = 0.6
    p[1, 12:16, 12:16] = 0.4
    p[0] = 1 - p[1]
    assert len(locate(p, classes=("background", "atom"))) == 1
    assert len(locate(p, classes=("background", "atom"), threshold=0.3)) == 2
    found = locate(p, classes=("background", "atom"), threshold=0.3)
    assert found.prob.tolist() == pytest.approx([0.6, 0.4])
    assert list(found.label.cat.categories) == ["atom"]


# ----------------------------------------------------------------------------- empty, bad input


def test_empty_input_gives_an_empty_table_with_the_columns():
    p = np.zeros((4, 32, 32), np.float32)
    p[0] = 1
    for probs in (p, np.zeros((4, 0, 0), np.float32)):
        found = locate(probs)
        assert len(found) == 0 and list(found.columns) == LOCATED.names
        assert [str(t) for t in found.dtypes] == ["float64", "float64", "category", "float32",
                                                  "float32", "int64"]
        assert list(found.label.cat.categories) == ["lattice", "dopant", "vacancy"]


def _good():
    p = np.zeros((4, 16, 16), np.float32)
    p[0] = 1
    return p


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda: _good()[0], {}, "n_classes, H, W"),
    (lambda: _good()[None], {}, "n_classes, H, W"),
    (lambda: _good()[:3], {}, "classes"),
    (lambda: np.where(np.arange(16) == 3, np.nan, _good()).astype(np.float32), {}, "NaN"),
    (lambda: _good() * 3 - 1, {}, "logits"),
    (lambda: _good() * 0.5, {}, "softmax"),
    (lambda: _good().astype(np.int64), {}, "dtype"),
    (_good, {"image": np.zeros((16, 15))}, "shape"),
    (_good, {"image": np.full((16, 16), np.nan)}, "NaN"),
    (_good, {"threshold": 1.0}, "threshold"),
    (_good, {"border": -1}, "border"),
    (_good, {"min_area": 0}, "min_area"),
    (_good, {"window": 0.0}, "window"),
])
def test_bad_input_says_what_is_wrong_and_how_to_fix_it(make, kwargs, message):
    with pytest.raises(InputError, match=message):
        locate(make(), **kwargs)


def _blob_probs(shape, centres, label="lattice", radius=2.0):
    """One-hot probabilities with a disk of ``label`` around each centre (px)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, np.int64)
    for y, x in centres:
        mask[(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = CODE[label]
    return np.eye(len(CLASSES), dtype=np.float32)[mask].transpose(2, 0, 1)


def test_offsets_move_each_centre_by_its_pixels_mean_offset_dy_to_y_dx_to_x():
    probs = _blob_probs((32, 40), [(10.0, 12.0), (20.0, 28.0)])
    plain = locate(probs)
    offsets = np.zeros((2, 32, 40))
    offsets[0], offsets[1] = 0.3, -0.2                 # dy, dx everywhere
    offsets[0, 15:, 20:] = -0.4                        # the second blob's pixels: another dy
    moved = locate(probs, offsets=offsets)
    np.testing.assert_allclose(moved.y - plain.y, [0.3, -0.4], atol=1e-9)
    np.testing.assert_allclose(moved.x - plain.x, [-0.2, -0.2], atol=1e-9)
    with pytest.raises(InputError, match=r"offsets must be a finite \(2, 32, 40\)"):
        locate(probs, offsets=offsets[:, :, :-1])
    offsets[1, 10, 12] = np.nan
    with pytest.raises(InputError, match="offsets must be a finite"):
        locate(probs, offsets=offsets)


def test_weights_move_centres_only_and_bad_weights_are_refused():
    probs = _blob_probs((32, 40), [(10.0, 12.0), (20.0, 28.0)])
    plain = locate(probs)
    weights = 1.0 - probs[0]
    weights[:, :12] *= 0.2                              # the first blob's left half counts less
    moved = locate(probs, weights=weights)
    assert moved.x[0] > plain.x[0] + 0.1 and abs(moved.y[0] - plain.y[0]) < 1e-9
    assert abs(moved.x[1] - plain.x[1]) < 1e-9          # the second blob lies right of column 12
    pd.testing.assert_frame_equal(moved.drop(columns=["y", "x"]), plain.drop(columns=["y", "x"]))
    with pytest.raises(InputError, match=r"weights must be a finite \(32, 40\) array; it has shape"):
        locate(probs, weights=weights[:, :-1])
    weights[3, 3] = np.nan
    with pytest.raises(InputError, match="holds NaN"):
        locate(probs, weights=weights)
    empty = np.zeros_like(probs)
    empty[0] = 1.0                                      # nothing but background: still checked
    with pytest.raises(InputError, match="weights must be"):
        locate(empty, weights=weights[:, :-1])


def test_a_map_that_is_foreground_everywhere_is_one_blob_not_an_overflow():
    from stemflow.locating import distance_to_background

    d = distance_to_background(np.ones((5, 7), bool))
    assert np.isfinite(d).all() and d[2, 3] == 3.0 and d[0, 0] == 1.0      # to just outside the edge
    probs = np.zeros((4, 16, 16))
    probs[1] = 1.0                                      # every pixel "lattice"
    found = locate(probs)
    assert len(found) >= 1 and np.isfinite(found[["y", "x"]].to_numpy()).all()


def test_refinement_moves_atoms_towards_their_image_centre_but_never_vacancies():
    shape = (40, 40)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = np.zeros(shape)
    for y, x in [(12.6, 12.6), (26.6, 26.6)]:          # the image's columns, 0.6 px off the blobs
        image += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2))
    probs = _blob_probs(shape, [(12.0, 12.0)], "lattice") + _blob_probs(shape, [(26.0, 26.0)], "vacancy")
    probs[0] -= 1.0                                     # one background channel between the two
    found = locate(probs, image, refine=True).sort_values("y").reset_index(drop=True)
    assert list(found.label) == ["lattice", "vacancy"]
    assert abs(found.y[0] - 12.6) < 0.05 and abs(found.x[0] - 12.6) < 0.05     # refined onto the column
    assert found.y[1] == 26.0 and found.x[1] == 26.0                               # a vacancy stays put
    # without a class called "vacancy" every blob is refined
    other = locate(probs, image, refine=True, classes=("background", "lattice", "dopant", "hole"))
    other = other.sort_values("y").reset_index(drop=True)
    assert abs(other.y[1] - 26.6) < 0.05


@pytest.mark.parametrize("where", ["top", "bottom", "left", "right", "middle"])
def test_refined_centres_of_a_symmetric_spot_are_exact_up_to_the_frame_edge(where):
    """The window uses a pixel only with its mirror, so the frame edge does not pull the centre:
    2.5–3 px from any of the four edges a noise-free spot is found to 0.02 px."""
    from stemflow.locating import refine_centres

    h, w = 40, 48
    spots = {"top": [(2.5, 20.2), (3.0, 30.7)], "bottom": [(h - 3.5, 10.3), (h - 4.0, 25.5)],
             "left": [(15.4, 2.5), (25.3, 3.0)], "right": [(10.6, w - 3.5), (30.2, w - 4.0)],
             "middle": [(20.3, 20.6)]}[where]
    yy, xx = np.mgrid[:h, :w]
    for y, x in spots:
        img = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2 ** 2))
        ry, rx = refine_centres(img, [y + 0.35], [x - 0.3], 1.0)
        assert abs(ry[0] - y) < 0.02 and abs(rx[0] - x) < 0.02, (y, x, ry, rx)


def test_refine_centres_checks_its_input():
    from stemflow.locating import refine_centres

    img = np.zeros((16, 16))
    with pytest.raises(InputError, match="one 2-D frame"):
        refine_centres(img[None], [1.0], [1.0], 1.0)
    with pytest.raises(InputError, match=r"sigma=0 px must be > 0"):
        refine_centres(img, [1.0], [1.0], 0)
    ry, rx = refine_centres(img, [], [], 0.6)              # nothing to do: empty arrays back
    assert ry.shape == (0,) and rx.shape == (0,)
    ry, rx = refine_centres(img, [5.0], [6.0], 0.6)        # no signal: the start is kept
    assert (ry[0], rx[0]) == (5.0, 6.0)


def test_the_distance_to_background_is_scipys_exact_euclidean_transform():
    from stemflow.locating import distance_to_background

    rng = np.random.default_rng(3)
    binary = ndimage.binary_dilation(rng.random((97, 131)) > 0.97, iterations=4)
    binary[:, :6] = True                          # blobs that touch the frame's edge
    got = distance_to_background(binary)
    assert got.dtype == np.float64 and got.shape == binary.shape
    np.testing.assert_allclose(got, ndimage.distance_transform_edt(binary), atol=1e-5)
    assert got.max() > 4                          # the blobs are not all one pixel wide
