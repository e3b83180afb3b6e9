"""Tests of the simulator against geometry and physics it must reproduce exactly."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from stemflow.tables import CLASSES
from stemflow.simulate import (DEFECT_KINDS, Imaging, probe_profile, simulate_4d, simulate_image,
                               simulate_movie)
from stemflow.simulate.fourd import Detector
from stemflow.simulate.imaging import detector_z_exponent, electron_wavelength


def _nn_distances_nm(t: pd.DataFrame, k: int = 1) -> np.ndarray:
    xy = t[["y_nm", "x_nm"]].to_numpy()
    d, _ = cKDTree(xy).query(xy, k + 1)
    return d[:, 1:]


def _neighbours(t, i, r_nm):
    xy = t[["y_nm", "x_nm"]].to_numpy()
    tree = cKDTree(xy)
    return [j for j in tree.query_ball_point(xy[i], r_nm) if j != i]


# ----------------------------------------------------------------- lattices


@pytest.mark.parametrize("rotation", [0.0, 17.0, 41.5])
def test_graphene_cc_bond_is_142_pm(rotation):
    sim = simulate_image("graphene", 160, defects={}, rotation=rotation, seed=3, pixel_size=0.012)
    d = _nn_distances_nm(sim.atoms, 3)
    inner = sim.atoms[["y", "x"]].apply(lambda c: c.between(15, 145)).all(axis=1).to_numpy()
    assert np.allclose(d[inner], 0.142, rtol=0.005)  # all three neighbours at 1.42 Å ± 0.5 %


@pytest.mark.parametrize("lattice,a,metal", [("ws2", 0.318, "W"), ("mos2", 0.316, "Mo")])
def test_mx2_projected_geometry(lattice, a, metal):
    sim = simulate_image(lattice, 200, defects={}, seed=4, pixel_size=0.012)
    t = sim.atoms
    inner = (t.y.between(20, 180) & t.x.between(20, 180)).to_numpy()
    m, x = t[t.element == metal], t[t.element == "S"]
    assert (x["count"] == 2).all() and (m["count"] == 1).all()
    # metal–chalcogen projected distance a/√3; each metal sees 3 chalcogen columns at that distance
    d_mx, _ = cKDTree(x[["y_nm", "x_nm"]]).query(m[["y_nm", "x_nm"]], 3)
    sel = inner[t.element == metal]
    assert np.allclose(d_mx[sel], a / np.sqrt(3), rtol=0.005)
    # chalcogen–chalcogen and metal–metal nearest distances are a
    assert np.allclose(_nn_distances_nm(x)[inner[t.element == "S"]], a, rtol=0.005)
    assert np.allclose(_nn_distances_nm(m)[sel], a, rtol=0.005)


def test_amorphous_support_has_no_long_range_order_but_a_minimum_distance():
    from stemflow.simulate.lattice import amorphous

    lat = amorphous((0.0, 24.0, 0.0, 24.0), np.random.default_rng(2))   # Å
    c = pd.DataFrame({"y_nm": lat.positions[:, 0] / 10, "x_nm": lat.positions[:, 1] / 10})
    inner = c.y_nm.between(0.2, 2.2) & c.x_nm.between(0.2, 2.2)
    d = _nn_distances_nm(c)[inner.to_numpy(), 0]
    assert d.min() > 0.125 and 0.13 < np.median(d) < 0.17
    assert d.std() > 0.005  # not a crystal: distances spread
    density = inner.sum() / 2.0**2  # atoms per nm²
    assert 25 < density < 40


def test_the_amorphous_support_is_background_and_heavy_atoms_are_dopants():
    sim = simulate_image("amorphous", 200, seed=2, pixel_size=0.012, defects={"Pt1": 6})
    assert (sim.atoms.label == "dopant").sum() == 6 and (sim.atoms.element == "Pt").all()
    assert len(sim.atoms) == 6                       # the support never appears in the truth ...
    assert set(np.unique(sim.mask)) == {0, 2}        # ... nor in the masks
    # ... but it is imaged: away from the Pt atoms the frame shows the carbon network, about
    # 0.33 C/Å² × 6^1.7 × 4.4e-4 Å² × 1e5 e/Å² × (0.12 Å)² = 4.4 counts per px
    far = sim.mask == 0
    assert 3.0 < np.median(sim.expected[far]) < 12.0


def test_a_thick_support_brightens_the_frame_in_proportion_and_stays_background():
    kw = dict(seed=4, pixel_size=0.03, defects={"Pt1": 5}, noise=False, tail_fraction=0.0)
    thin = simulate_image("amorphous", 256, support=2.0, **kw)
    thick = simulate_image("amorphous", 256, support=8.0, **kw)
    bare = simulate_image("amorphous", 256, support=0.0, **kw)
    added_thin = thin.expected.mean() - bare.expected.mean()
    added_thick = thick.expected.mean() - bare.expected.mean()
    # 6 C per Å² more gives 3x the added counts of 2 per Å² (Poisson: within a few %)
    assert added_thick / added_thin == pytest.approx(4.0, rel=0.05)
    # carbon at 4.4e-4 Å² per Z^1.7 and 1e5 e/Å²: 2 atoms/Å² add about 2·21.0·44·(0.3 Å)² counts/px
    assert added_thin == pytest.approx(2 * 6**1.7 * 4.4e-4 * 1e5 * 0.3**2, rel=0.15)
    assert len(thick.atoms) == len(bare.atoms) == 5


def test_a_patchy_film_covers_the_requested_share_and_moves_with_the_specimen():
    mov = simulate_movie("graphene", 3, 160, seed=3, pixel_size=0.01, defects={}, rates={}, noise=False,
                         support=1.0, support_cover=0.4, drift=(3.0, -2.0), tail_fraction=0.0)
    from stemflow.simulate.imaging import support_thickness

    for cover in (0.3, 0.7):
        t = support_thickness((400, 400), 0.1, np.random.default_rng(1), cover)
        assert (t > 0.1).mean() == pytest.approx(cover, abs=0.1)
        assert t[t > 0.1].mean() == pytest.approx(1.0, abs=0.15)   # mean 1 where covered
    film0 = mov._support_view(0)
    # integer drift (3, -2) px per frame: frame 2 shows frame 0's film moved by (6, -4) px
    film2 = mov._support_view(2)
    assert np.allclose(film2[6:, :-4], film0[:-6, 4:], rtol=1e-4, atol=1e-3 * film0.max())
    assert not np.allclose(film2, film0, atol=1e-3 * film0.max())


def test_adatoms_are_imaged_off_the_columns_and_are_not_in_the_truth():
    kw = dict(seed=5, pixel_size=0.01, defects={"Si1C3": 2}, noise=False)
    plain = simulate_image("graphene", 192, **kw)
    with_adatoms = simulate_image("graphene", 192, adatoms=0.5, **kw)
    pd.testing.assert_frame_equal(plain.atoms, with_adatoms.atoms)
    assert np.array_equal(plain.mask, with_adatoms.mask)
    extra = with_adatoms.expected - plain.expected
    # bright compact blobs: the brightest added pixel is at least a C column's peak ...
    assert extra.max() > plain.expected.max() * 0.5
    # ... and it is not on a column: 0.9 Å from every true position (minus the blob's width)
    peak = np.unravel_index(np.argmax(extra), extra.shape)
    d = np.hypot(plain.atoms.y - peak[0], plain.atoms.x - peak[1]).min() * 0.1   # Å
    assert d > 0.5


# ----------------------------------------------------------------- defects


def test_every_graphene_defect_has_its_coordination():
    kinds = {k: 2 for k in DEFECT_KINDS["graphene"]}
    sim = simulate_image("graphene", 320, defects=kinds, seed=11, pixel_size=0.012, rotation=8)
    t = sim.atoms.reset_index(drop=True)
    assert sim.params["defects_placed"] == kinds
    atoms = t[t.label != "vacancy"].reset_index(drop=True)

    def c_and_si_neighbours(i, cutoff_nm):
        nb = _neighbours(atoms, i, cutoff_nm)
        el = atoms.element.to_numpy()[nb]
        return int((el == "C").sum()), int((el == "Si").sum())

    for i, row in atoms.iterrows():
        if row.defect == "Si1C3":
            assert c_and_si_neighbours(i, 0.21) == (3, 0)
        elif row.defect == "Si1C4":
            assert c_and_si_neighbours(i, 0.21) == (4, 0)
        elif row.defect == "Si2C4":
            assert c_and_si_neighbours(i, 0.21) == (2, 1)
        elif row.defect == "Si3C6":
            assert c_and_si_neighbours(i, 0.21)[0] == 2
            assert c_and_si_neighbours(i, 0.25)[1] == 2  # the other two Si at 2.46 Å
        elif row.defect == "SW":
            nb = _neighbours(atoms, i, 0.175)
            assert len(nb) == 3
    # the rotated Stone–Wales bond is 1.32 Å
    sw = atoms[atoms.defect == "SW"]
    for _, grp in sw.groupby("defect_id"):
        assert len(grp) == 2
        assert np.hypot(*(grp[["y_nm", "x_nm"]].diff().iloc[1])) == pytest.approx(0.132, abs=1e-6)
    # a single vacancy leaves three 2-fold C atoms around an empty site
    for _, v in t[t.defect == "V1"].iterrows():
        d = np.hypot(atoms.y_nm - v.y_nm, atoms.x_nm - v.x_nm)
        assert (np.abs(d - 0.142) < 0.002).sum() == 3
    # a divacancy is two adjacent empty sites
    for _, grp in t[t.defect == "V2"].groupby("defect_id"):
        assert (grp.label == "vacancy").all() and len(grp) == 2
        assert np.hypot(*(grp[["y_nm", "x_nm"]].diff().iloc[1])) == pytest.approx(0.142, rel=0.005)


def test_mx2_defects_sit_on_the_right_sublattice():
    kinds = {k: 2 for k in DEFECT_KINDS["ws2"]}
    sim = simulate_image("ws2", 320, defects=kinds, seed=5, pixel_size=0.012)
    t = sim.atoms
    assert sim.params["defects_placed"] == kinds
    vs = t[t.defect == "V_S"]
    assert (vs["count"] == 1).all() and (vs.element == "S").all() and (vs.label == "vacancy").all()
    vs2 = t[t.defect == "V_S2"]
    assert (vs2["count"] == 0).all() and (vs2.label == "vacancy").all()
    mo = t[t.defect == "Mo_W"]
    assert (mo.element == "Mo").all() and (mo.label == "dopant").all()
    # a substituted metal keeps 3 chalcogen neighbours at a/√3, a chalcogen vacancy 3 metal ones
    xs = t[t.element == "S"]
    d, _ = cKDTree(xs[["y_nm", "x_nm"]]).query(mo[["y_nm", "x_nm"]], 3)
    assert np.allclose(d, 0.318 / np.sqrt(3), rtol=0.005)
    metals = t[t.element.isin(["W", "Mo"])]
    d, _ = cKDTree(metals[["y_nm", "x_nm"]]).query(vs2[["y_nm", "x_nm"]], 3)
    assert np.allclose(d, 0.318 / np.sqrt(3), rtol=0.005)


def test_defect_densities_are_respected():
    sim = simulate_image("graphene", 512, defects={"Si1C3": 0.3}, seed=7, pixel_size=0.012)
    area = (512 * 0.012) ** 2
    n = (sim.atoms.defect == "Si1C3").sum()
    assert abs(n - 0.3 * area) < 4 * np.sqrt(0.3 * area)


# ----------------------------------------------------------------- image formation


def test_truth_positions_are_the_blob_centres_under_jitter_and_scan_drift():
    """The tables say where atoms *appear*: blob centroids match them with distortions on."""
    sim = simulate_image("amorphous", 256, seed=9, defects={"Pt1": 8}, pixel_size=0.02, noise=False,
                         tail_fraction=0.0, line_jitter=0.6, scan_drift=(4.0, -3.0), probe_fwhm=1.0)
    img = sim.expected
    pt = sim.atoms[sim.atoms.element == "Pt"]
    sig = sim.imaging.sigma_px
    errors = []
    for _, r in pt.iterrows():
        cy, cx = int(round(r.y)), int(round(r.x))
        k = int(np.ceil(2.5 * sig))
        if not (k <= cy < 256 - k and k <= cx < 256 - k):
            continue
        win = img[cy - k:cy + k + 1, cx - k:cx + k + 1].astype(np.float64)
        win = win - np.percentile(win, 20)
        win[win < 0] = 0
        yy, xx = np.mgrid[cy - k:cy + k + 1, cx - k:cx + k + 1]
        errors.append(np.hypot((win * yy).sum() / win.sum() - r.y, (win * xx).sum() / win.sum() - r.x))
    assert len(errors) >= 4
    assert np.max(errors) < 0.1  # px


def test_poisson_noise_and_dose_scaling():
    a = simulate_image("graphene", 128, defects={}, seed=1, dose=2e5, read_noise=0.0)
    b = simulate_image("graphene", 128, defects={}, seed=1, dose=1e5, read_noise=0.0)
    assert a.expected.mean() == pytest.approx(2 * b.expected.mean(), rel=1e-5)
    resid = a.image - a.expected
    assert abs(resid.mean()) < 0.05 * np.sqrt(a.expected.mean())
    assert resid.var() / a.expected.mean() == pytest.approx(1.0, rel=0.05)  # Poisson: var = mean
    assert np.array_equal(a.image, np.round(a.image))  # counts


def test_carbon_peak_counts_match_dim_60kV_frames():
    """A C column peaks at a few to ~20 counts at 8–16 pm/px and 1e5 e⁻/Å² (REAL_DATA.md)."""
    for px in (0.008, 0.016):
        sim = simulate_image("graphene", 128, defects={}, seed=1, pixel_size=px, noise=False)
        assert 2 < sim.expected.max() < 25


def test_si_is_brighter_than_c_by_z_contrast():
    sim = simulate_image("graphene", 256, defects={"Si1C3": 4}, seed=2, noise=False, tail_fraction=0)
    t = sim.atoms
    peak = sim.expected[np.rint(t.y).astype(int).clip(0, 255), np.rint(t.x).astype(int).clip(0, 255)]
    si = peak[(t.element == "Si").to_numpy()].mean()
    c = np.median(peak[(t.element == "C").to_numpy()])
    assert si / c == pytest.approx((14 / 6) ** 1.7, rel=0.1)


def test_masks_agree_with_tables():
    sim = simulate_image("graphene", 256, seed=12, defects={"Si1C3": 3, "V1": 3, "Si1C4": 2})
    t, mask = sim.atoms, sim.mask
    code = {c: i for i, c in enumerate(CLASSES)}
    yi, xi = np.rint(t.y).astype(int), np.rint(t.x).astype(int)
    ok = (yi.between(0, 255) & xi.between(0, 255)).to_numpy()
    assert np.array_equal(mask[yi[ok], xi[ok]], t.label[ok].map(code).to_numpy().astype(np.uint8))
    for name in ("dopant", "vacancy"):
        _, n = ndimage.label(mask == code[name])
        assert n == (t.label == name).sum()
    # disk area matches the radius: π r² px per column (interior columns)
    r = sim.imaging.mask_radius / sim.imaging.pixel_A
    frac = (mask > 0).mean()
    assert frac == pytest.approx(len(t) * np.pi * r**2 / 256**2, rel=0.1)


def test_contamination_and_background_add_signal_but_no_atoms():
    clean = simulate_image("graphene", 192, seed=3, defects={})
    dirty = simulate_image("graphene", 192, seed=3, defects={}, contamination=0.5, background=0.5)
    assert len(clean.atoms) == len(dirty.atoms)
    assert dirty.expected.mean() > 1.2 * clean.expected.mean()


def test_same_seed_same_data_other_seed_other_data():
    a = simulate_image("ws2", 96, seed=5)
    b = simulate_image("ws2", 96, seed=5)
    c = simulate_image("ws2", 96, seed=6)
    assert np.array_equal(a.image, b.image) and a.atoms.equals(b.atoms)
    assert not np.array_equal(a.image, c.image)


def _sha(a) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def test_default_settings_render_exactly_the_frames_they_did_before_the_microscope_options():
    """Fingerprints taken with the code before the probe/detector/scan options were added: the
    default images (which the bundled model was trained on) must not change by a bit. The noisy
    image is compared exactly (Poisson draws do not feel last-bit changes of the expected counts);
    a numpy release that changes its random streams would need new fingerprints."""
    a = simulate_image("graphene", 64, seed=1, defects={"Si1C3": 1})
    b = simulate_image("amorphous", 64, seed=3, pixel_size=0.02, support=2.0, support_cover=0.6, adatoms=0.3,
                       contamination=0.3, background=0.3, outliers=1e-3, line_jitter=0.4, line_offset=0.5,
                       scan_drift=(2.0, -1.0), defects={"Pt1": 2})
    m = simulate_movie("ws2", 2, 48, seed=4, drift=(0.5, 0.3), line_jitter=0.2)
    assert _sha(a.image) == "f6a125a7d758e94f"
    assert _sha(b.image) == "31388c6360a1f5d0"
    assert _sha(m.images()) == "4e40d276de112ad6"
    assert a.expected.astype(np.float64).sum() == pytest.approx(14285.185619413853, rel=1e-6)
    assert b.expected.astype(np.float64).sum() == pytest.approx(424581.2046880722, rel=1e-6)
    assert m.expected(1).astype(np.float64).sum() == pytest.approx(161481.4379849434, rel=1e-6)


def _fwhm(profile: np.ndarray) -> float:
    """FWHM of a 1-D peak, px, with the half-maximum crossings interpolated linearly."""
    i = int(np.argmax(profile))
    half = profile[i] / 2
    left = i - np.argmax(profile[i::-1] < half)
    right = i + np.argmax(profile[i:] < half)
    xl = left + (half - profile[left]) / (profile[left + 1] - profile[left])
    xr = right - 1 + (profile[right - 1] - half) / (profile[right - 1] - profile[right])
    return float(xr - xl)


def test_an_aberration_free_probe_is_the_airy_pattern_of_the_aperture():
    # relativistic wavelength, textbook form: λ = 12.2643 / √(V (1 + 0.97848e-6 V)) Å
    assert electron_wavelength(60) == pytest.approx(12.2643 / np.sqrt(60e3 * (1 + 0.97848e-6 * 60e3)), rel=1e-4)
    assert electron_wavelength(300) == pytest.approx(0.01969, rel=1e-3)
    lam, alpha, px_A = electron_wavelength(60), 0.030, 0.04
    p = probe_profile(Imaging(probe="aberrated", voltage_kv=60, aperture_mrad=30, pixel_size=px_A / 10), 201)
    assert p.sum() == pytest.approx(1.0) and np.unravel_index(np.argmax(p), p.shape) == (100, 100)
    assert np.allclose(p, p.T, atol=1e-6 * p.max()) and np.allclose(p, p[::-1], atol=1e-6 * p.max())
    # Airy intensity [2 J1(v)/v]², v = 2π α r / λ: FWHM 0.5145 λ/α (0.83 Å), first zero at 0.61 λ/α
    assert _fwhm(p[100]) * px_A == pytest.approx(0.5145 * lam / alpha, rel=0.02)
    r = np.arange(101) * px_A
    zero = r[np.argmin(p[100, 100:][: int(0.8 * lam / alpha / px_A)])]
    assert zero == pytest.approx(0.61 * lam / alpha, abs=1.5 * px_A)
    assert p[100, 100 + int(round(0.61 * lam / alpha / px_A))] < 1e-3 * p.max()


def test_defocus_source_size_and_focal_spread_widen_the_probe():
    base = dict(probe="aberrated", pixel_size=0.005, voltage_kv=60, aperture_mrad=30)

    def width(**kw):
        return _fwhm(probe_profile(Imaging(**base, **kw), 121)[60]) * 0.05   # Å

    w0 = width()
    assert width(defocus=100.0) > 1.2 * w0
    assert width(defocus=-100.0) > 1.2 * w0        # no C3: either sign blurs
    peak0 = probe_profile(Imaging(**base), 121).max()
    assert probe_profile(Imaging(**base, defocus=40.0), 121).max() < 0.8 * peak0   # within the depth of field
    # a Gaussian source of FWHM s convolves the probe: widths add roughly in quadrature
    assert width(source_size=1.0) == pytest.approx(np.hypot(w0, 1.0), rel=0.1)
    assert probe_profile(Imaging(**base, focal_spread=60.0), 121).max() < 0.9 * peak0
    # the Gaussian probe's profile is the core of probe_fwhm (no tail)
    g = probe_profile(Imaging(pixel_size=0.005, probe_fwhm=1.2, tail_fraction=0.0), 121)
    assert g.sum() == pytest.approx(1.0) and _fwhm(g[60]) * 0.05 == pytest.approx(1.2, rel=0.02)


def _blob_centroid_errors(image, atoms, k: int, floor_pct: float):
    """Distance (px) from each true column at least ``k`` px inside the frame to the centroid of
    its (2k+1)² window above the window's ``floor_pct`` percentile; and the rows used."""
    img = np.asarray(image, np.float64)
    h, w = img.shape
    errors, used = [], []
    for i, r in atoms.iterrows():
        cy, cx = int(round(r.y)), int(round(r.x))
        if not (k <= cy < h - k and k <= cx < w - k):
            continue
        win = img[cy - k:cy + k + 1, cx - k:cx + k + 1]
        win = np.clip(win - np.percentile(win, floor_pct), 0, None)
        yy, xx = np.mgrid[cy - k:cy + k + 1, cx - k:cx + k + 1]
        errors.append(np.hypot((win * yy).sum() / win.sum() - r.y, (win * xx).sum() / win.sum() - r.x))
        used.append(i)
    return np.array(errors), atoms.loc[used]


def test_the_aberrated_probe_keeps_the_counts_and_the_positions():
    kw = dict(seed=9, defects={"Pt1": 8}, pixel_size=0.02, noise=False, tail_fraction=0.0, probe_fwhm=1.0)
    gauss = simulate_image("amorphous", 160, **kw)
    aber = simulate_image("amorphous", 160, probe="aberrated", c3=0.002, defocus=-15, focal_spread=30,
                          source_size=0.5, **kw)
    inner = (slice(40, 120), slice(40, 120))   # away from the edges that see columns outside
    assert aber.expected[inner].sum() == pytest.approx(gauss.expected[inner].sum(), rel=0.02)
    pd.testing.assert_frame_equal(gauss.atoms, aber.atoms)
    errors, _ = _blob_centroid_errors(aber.expected, aber.atoms, 4, 30)
    assert len(errors) >= 4 and np.max(errors) < 0.15   # px
    # a film under the aberrated probe adds the same counts as under the Gaussian one
    film = dict(seed=4, pixel_size=0.03, defects={"Pt1": 2}, noise=False, tail_fraction=0.0)
    added = [simulate_image("amorphous", 96, support=2.0, **film, **o).expected.mean()
             - simulate_image("amorphous", 96, **film, **o).expected.mean() for o in ({}, {"probe": "aberrated"})]
    assert added[1] == pytest.approx(added[0], rel=0.05)


def test_a_lower_inner_detector_angle_lowers_the_z_contrast():
    # screened Rutherford: unscreened (γ → 2) far above the screening angle, lower near it
    assert detector_z_exponent(400) > 1.95
    gammas = [detector_z_exponent(t, 200) for t in (40, 60, 90, 150)]
    assert np.all(np.diff(gammas) > 0) and 1.45 < gammas[0] < 1.7
    assert Imaging(detector_inner_mrad=60, detector_outer_mrad=200).z_exponent == pytest.approx(gammas[1])
    assert Imaging(gamma=1.9).z_exponent == 1.9          # no detector angles: gamma as given

    def peak_ratio(lattice, heavy, light, defects, inner):
        sim = simulate_image(lattice, 160, seed=2, defects=defects, noise=False, tail_fraction=0.0,
                             detector_inner_mrad=inner, detector_outer_mrad=200)
        t = sim.atoms
        v = sim.expected[np.rint(t.y).astype(int).clip(0, 159), np.rint(t.x).astype(int).clip(0, 159)]
        return v[(t.element == heavy).to_numpy()].mean() / np.median(v[(t.element == light).to_numpy()])

    for lattice, heavy, light, defects, z in (("graphene", "Si", "C", {"Si1C3": 3}, 14 / 6),
                                              ("ws2", "W", "Mo", {"Mo_W": 3}, 74 / 42)):
        low, high = peak_ratio(lattice, heavy, light, defects, 40), peak_ratio(lattice, heavy, light, defects, 120)
        assert low < high
        assert high == pytest.approx(z ** detector_z_exponent(120, 200), rel=0.1)


def test_the_thermal_diffuse_halo_adds_its_fraction_of_the_column_signal_smoothly():
    kw = dict(seed=3, defects={}, pixel_size=0.02, noise=False, tail_fraction=0.0)
    plain = simulate_image("graphene", 192, **kw)
    halo = simulate_image("graphene", 192, tds_background=0.3, **kw)
    added = (halo.expected - plain.expected).astype(np.float64)
    inner = (slice(40, 152), slice(40, 152))
    assert added[inner].sum() == pytest.approx(0.3 * plain.expected[inner].astype(np.float64).sum(), rel=0.03)
    # smooth: no atomic contrast in the halo (a 1 nm blur of a 0.25 nm lattice)
    assert added[inner].std() < 0.02 * added[inner].mean()
    pd.testing.assert_frame_equal(plain.atoms, halo.atoms)


def test_flyback_and_line_drift_move_the_truth_with_the_blobs():
    kw = dict(seed=9, defects={"Pt1": 30}, pixel_size=0.02, noise=False, tail_fraction=0.0, probe_fwhm=1.0)
    sim = simulate_image("amorphous", 192, flyback=5.0, flyback_length=20.0, line_drift=0.12, line_jitter=0.3, **kw)
    still = simulate_image("amorphous", 192, **kw)
    pt, pt0 = sim.atoms.set_index("particle"), still.atoms.set_index("particle")
    common = pt.index.intersection(pt0.index)
    dx = (pt.loc[common, "x"] - pt0.loc[common, "x"]).to_numpy()
    assert np.allclose(pt.loc[common, "y"], pt0.loc[common, "y"])   # x-only distortions
    assert np.abs(dx).max() > 0.3                                    # the truth moved
    errors, used = _blob_centroid_errors(sim.expected, sim.atoms, int(np.ceil(2.5 * sim.imaging.sigma_px)), 20)
    bent = int((used.x < 30).sum())          # where the flyback still shifts by more than 1 px
    assert len(errors) >= 15 and bent >= 2
    assert np.max(errors) < 0.12   # px, as for jitter and drift alone


def test_flyback_shifts_the_start_of_each_line_and_line_drift_is_correlated_along_y():
    from stemflow.simulate.imaging import scan_shift_field

    f = scan_shift_field((8, 64), flyback=4.0, flyback_length=8.0)
    assert np.allclose(f[:, 0], 4.0) and np.allclose(f[:, 8], 4.0 / np.e) and abs(f[0, -1]) < 0.01
    # a vertical line is imaged with its start bent by the flyback and random-walk wander along y
    kw = dict(seed=1, defects={}, pixel_size=0.01, noise=False)
    base = simulate_image("graphene", 128, **kw)
    walk = simulate_image("graphene", 128, line_drift=0.1, **kw)
    white = simulate_image("graphene", 128, line_jitter=0.4, **kw)

    def row_shifts(sim):   # x shift of each row against the undistorted frame (first order)
        g = np.gradient(base.expected.astype(np.float64), axis=1)
        return -((sim.expected - base.expected) * g).sum(1) / (g * g).sum(1)

    def lag1(s):   # correlation of neighbouring rows' shifts
        return np.corrcoef(s[:-1], s[1:])[0, 1]

    assert lag1(row_shifts(walk)) > 0.8 and abs(lag1(row_shifts(white))) < 0.3


def test_line_skip_repeats_recorded_lines():
    sim = simulate_image("graphene", 256, seed=2, line_skip=0.1, defects={})
    same = np.all(sim.image[1:] == sim.image[:-1], axis=1)
    assert same.sum() == pytest.approx(0.1 * 255, abs=4 * np.sqrt(0.1 * 0.9 * 255))
    assert np.array_equal(same, np.all(sim.expected[1:] == sim.expected[:-1], axis=1))  # same lines in both
    clean = simulate_image("graphene", 256, seed=2, defects={})
    keep = np.concatenate([[True], ~same])
    assert np.array_equal(sim.expected[keep], clean.expected[keep])


def test_saturation_compresses_bright_pixels():
    kw = dict(seed=2, defects={"Si1C3": 3}, noise=False)
    lin = simulate_image("graphene", 96, **kw).expected.astype(np.float64)
    sat = simulate_image("graphene", 96, saturation=8.0, **kw).expected.astype(np.float64)
    assert np.allclose(sat, lin / (1 + lin / 8.0), rtol=1e-5)
    assert sat.max() < 8.0 and (lin.max() / sat.max()) > (np.median(lin) / np.median(sat))


def test_afterglow_correlates_the_noise_along_the_fast_scan_and_keeps_the_mean():
    kw = dict(seed=5, defects={}, dose=5e5, read_noise=0.0)
    plain = simulate_image("graphene", 256, **kw)
    glow = simulate_image("graphene", 256, afterglow=0.5, **kw)
    assert glow.image.mean() == pytest.approx(plain.image.mean(), rel=0.005)
    assert glow.expected.mean() == pytest.approx(plain.expected.mean(), rel=0.002)
    # the shot noise is smeared causally along x: lag-1 correlation a along x, none along y
    res = (glow.image - glow.expected).astype(np.float64)
    res -= res.mean()
    cx = (res[:, 1:] * res[:, :-1]).mean() / res.var()
    cy = (res[1:] * res[:-1]).mean() / res.var()
    assert cx == pytest.approx(0.5, abs=0.05) and abs(cy) < 0.05
    # noise variance of an exponential moving average: (1 − a)/(1 + a) of the Poisson variance
    raw = (plain.image - plain.expected).astype(np.float64)
    assert res.var() / raw.var() == pytest.approx(1 / 3, rel=0.1)


def test_a_few_counts_per_carbon_column_at_very_low_dose():
    im = Imaging(dose=500)
    assert im.column_counts("C") == pytest.approx(500 * 4.4e-4 * 6**1.7)      # ≈ 4.6 counts
    assert 2 <= Imaging(dose=250).column_counts("C") and Imaging(dose=2000).column_counts("C") <= 20
    sim = simulate_image("graphene", 128, seed=3, defects={}, dose=500, read_noise=0.0, tail_fraction=0.0)
    inner = (sim.atoms.y.between(10, 117) & sim.atoms.x.between(10, 117)).sum()
    region = sim.expected[10:118, 10:118].astype(np.float64).sum()
    assert region / inner == pytest.approx(im.column_counts("C"), rel=0.1)
    assert np.array_equal(sim.image, np.round(sim.image)) and sim.image.max() <= 6


@pytest.mark.parametrize("option,value", [
    ("probe", "airy"), ("voltage_kv", 5.0), ("voltage_kv", 1000.0), ("aperture_mrad", 0.0),
    ("defocus", float("nan")), ("c3", 50.0), ("c5", -500.0), ("source_size", -1.0), ("focal_spread", 2000.0),
    ("detector_inner_mrad", 5.0), ("tds_background", 1.5), ("tds_fwhm", 0.5), ("flyback", 20.0),
    ("flyback_length", 0.0), ("line_skip", 0.5), ("line_drift", -0.1), ("saturation", 0.0), ("afterglow", 0.95),
])
def test_microscope_options_out_of_range_are_refused_with_their_range(option, value):
    with pytest.raises(ValueError, match=rf"{option}=.*allowed"):
        Imaging(**{option: value})


def test_an_outer_angle_needs_an_inner_one_below_it():
    with pytest.raises(ValueError, match="detector_outer_mrad"):
        Imaging(detector_outer_mrad=200)
    with pytest.raises(ValueError, match="detector_outer_mrad"):
        Imaging(detector_inner_mrad=80, detector_outer_mrad=60)


def test_microscope_options_travel_with_the_settings():
    import json

    new = ("probe", "voltage_kv", "aperture_mrad", "defocus", "c3", "c5", "source_size", "focal_spread",
           "detector_inner_mrad", "detector_outer_mrad", "tds_background", "tds_fwhm", "flyback",
           "flyback_length", "line_skip", "line_drift", "saturation", "afterglow")
    assert set(new) <= set(Imaging.option_names())
    im = Imaging(probe="aberrated", c3=0.001, detector_inner_mrad=60, saturation=50.0, afterglow=0.3)
    d = json.loads(json.dumps(im.to_dict()))
    assert Imaging(**{**d, "scan_drift": tuple(d["scan_drift"])}) == im
    kw = dict(seed=1, drift=(0.4, 0.2), defects={"Si1C3": 1, "V1": 1})
    mov = simulate_movie("graphene", 3, 64, probe="aberrated", c3=0.001, line_skip=0.05, afterglow=0.3,
                         tds_background=0.1, saturation=30.0, detector_inner_mrad=70, **kw)
    assert mov.params["imaging"]["afterglow"] == 0.3 and mov.params["imaging"]["probe"] == "aberrated"
    a = mov.frame(2)[0]
    mov.render(0, 2)
    assert np.array_equal(a, mov.frame(2)[0])                 # deterministic per frame
    plain = simulate_movie("graphene", 3, 64, **kw)
    # the same specimen, truth and masks (these options move no column) but other frames
    pd.testing.assert_frame_equal(mov.atoms, plain.atoms)
    assert np.array_equal(mov.masks(), plain.masks())
    assert not np.allclose(mov.expected(1), plain.expected(1))
    scan = simulate_movie("graphene", 3, 64, flyback=2.0, line_drift=0.05, **kw)
    assert scan.params["imaging"]["flyback"] == 2.0
    both = scan.atoms.merge(plain.atoms, on=["frame", "particle"], suffixes=("", "_plain"))
    assert np.allclose(both.y, both.y_plain)                       # the truth follows the scan
    assert np.abs(both.x - both.x_plain).max() > 0.5


# ----------------------------------------------------------------- movies


@pytest.fixture(scope="module")
def movie():
    return simulate_movie("graphene", 40, 192, seed=21, drift=(0.6, -0.4), drift_jitter=0.1,
                          defects={"Si1C3": 5, "V1": 3}, rates={"hop": 0.15, "switch34": 0.1,
                                                                "switch43": 0.2, "vacancy": 0.15})


def test_movie_events_agree_with_site_changes(movie):
    t = movie.atoms[movie.atoms.label != "lattice"].sort_values(["particle", "frame"])
    seen = []
    for p, g in t.groupby("particle"):
        g = g.reset_index(drop=True)
        for i in range(1, len(g)):
            if g.frame[i] != g.frame[i - 1] + 1:
                continue
            if g.site[i] != g.site[i - 1]:
                seen.append((p, g.frame[i], "hop", g.site[i - 1], g.site[i]))
            if g.defect[i] != g.defect[i - 1]:
                seen.append((p, g.frame[i], "coordination_change", g.site[i - 1], g.site[i]))
    ev = movie.events[movie.events.kind.isin(["hop", "coordination_change"])]
    listed = list(ev[["particle", "frame", "kind", "site0", "site1"]].itertuples(index=False, name=None))
    assert sorted(map(tuple, seen)) == sorted(listed)
    assert (ev.kind == "hop").sum() >= 5 and (ev.kind == "coordination_change").sum() >= 2
    hops = movie.events[movie.events.kind == "hop"]
    assert np.allclose(hops.distance_nm, 0.246 / np.sqrt(3), rtol=1e-9)  # exchange with a nearest neighbour


def test_coordination_changes_move_si_into_the_divacancy(movie):
    cc = movie.events[movie.events.kind == "coordination_change"]
    assert set(map(tuple, cc[["state0", "state1"]].astype(str).to_numpy())) <= {("Si1C3", "Si1C4"), ("Si1C4", "Si1C3")}
    assert np.allclose(cc.distance_nm, 0.5 * 0.246 / np.sqrt(3), rtol=1e-9)


def test_lattice_follows_the_drift_table(movie):
    t = movie.atoms[movie.atoms.label == "lattice"]
    a = t[t.frame == 0].set_index("particle")
    b = t[t.frame == 30].set_index("particle")
    common = a.index.intersection(b.index)
    stayed = common[(a.loc[common, "site"] == b.loc[common, "site"]).to_numpy()]
    assert len(stayed) > 0.8 * len(common)
    # lattice atoms still on their site (not exchanged with a defect) moved exactly by the drift
    shift = (b.loc[stayed, ["y", "x"]] - a.loc[stayed, ["y", "x"]]).to_numpy()
    d = movie.drift.set_index("frame")
    expected = d.loc[30, ["dy", "dx"]].to_numpy() - d.loc[0, ["dy", "dx"]].to_numpy()
    assert np.abs(shift - expected).max() < 1e-9
    assert abs(expected[0] - 0.6 * 30) < 5


def test_frames_render_the_same_in_any_order(movie):
    a, _ = movie.frame(7)
    movie.render(0, 3)
    b, _ = movie.frame(7)
    assert np.array_equal(a, b)


# ----------------------------------------------------------------- 4D-STEM


def test_virtual_adf_of_4d_returns_the_image():
    sim = simulate_4d("graphene", (40, 40), seed=3, dose=5e6, pixel_size=0.02)
    assert sim.data.shape == (40, 40, 64, 64) and sim.data.dtype == np.uint16
    virtual = (sim.data * sim.detector.adf_mask()).sum(axis=(2, 3))
    assert np.corrcoef(virtual.ravel(), sim.image.ravel())[0, 1] > 0.99
    electrons = 5e6 * 0.2**2
    assert sim.data.sum(axis=(2, 3)).mean() == pytest.approx(electrons, rel=0.01)  # all electrons land


def test_bright_field_is_dark_where_atoms_scatter():
    sim = simulate_4d("graphene", (40, 40), seed=3, dose=2e7, pixel_size=0.02)
    bf_mask = sim.detector.radius() <= sim.detector.convergence
    bf = (sim.data * bf_mask).sum(axis=(2, 3))
    assert np.corrcoef(bf.ravel(), sim.image.ravel())[0, 1] < -0.95


# ----------------------------------------------------------------- bad input


def test_unknown_lattice_lists_the_known_ones():
    with pytest.raises(ValueError, match="graphene, ws2, mos2, amorphous"):
        simulate_image("hBN", 64)


def test_unknown_defect_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: V1, V2, Si1C3"):
        simulate_image("graphene", 64, defects={"Si4": 1})


def test_pixel_size_in_wrong_units_is_refused():
    with pytest.raises(ValueError, match="nm"):
        simulate_image("graphene", 64, pixel_size=10.0)  # pm given as nm


def test_bad_detector_geometry_is_refused():
    with pytest.raises(ValueError, match="detector edge"):
        simulate_4d("graphene", (16, 16), detector=Detector(shape=(16, 16)))


def test_unknown_imaging_option_is_named():
    with pytest.raises(TypeError, match="dosage"):
        simulate_image("graphene", 64, dosage=1e5)
    with pytest.raises(ValueError, match="dose"):
        Imaging(dose=-1)
