"""The lattice prior (stemflow.chem.lattice_prior) and the simulator's displaced columns."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from stemflow import find_atoms
from stemflow.chem import identify, lattice_prior
from stemflow.errors import InputError
from stemflow.metrics import match
from stemflow.simulate import simulate_image

PX = 0.01


def _measured(tau_A=0.0, sigma_px=0.25, defects=None, seed=0, size=320):
    """Truth of a simulated frame and a 'measured' table: truth + Gaussian noise of sigma_px per axis."""
    sim = simulate_image("graphene", size, pixel_size=PX, seed=seed, defects=defects or {}, disorder=tau_A)
    t = sim.atoms
    rng = np.random.default_rng(seed + 1)
    noise = rng.normal(0.0, sigma_px, (len(t), 2))
    m = pd.DataFrame({"y": t.y + noise[:, 0], "x": t.x + noise[:, 1], "label": t.label.astype(str),
                      "xy_error": sigma_px})
    m["y_fit"], m["x_fit"], m["fit_error"] = m.y, m.x, sigma_px
    m = identify(m, PX, "graphene", classes=False)
    return t, m


def _rms(a, t, cols=("y", "x")):
    """RMS distance (px) over columns at least 0.3 nm inside the frame (edge columns miss
    neighbours, so their coordination is odd and the prior leaves them alone)."""
    d = a[list(cols)].to_numpy() - t[["y", "x"]].to_numpy()
    e = 0.3 / PX
    n = max(t.y.max(), t.x.max())
    inner = (t.y.between(e, n - e) & t.x.between(e, n - e)).to_numpy()
    return float(np.sqrt((d[inner] ** 2).sum(1).mean()))


def test_prior_on_an_ideal_lattice_goes_to_the_sites():
    t, m = _measured(tau_A=0.0, sigma_px=0.25)
    out = lattice_prior(m)
    lat = (t.label == "lattice").to_numpy()
    before, after = _rms(m[lat], t[lat]), _rms(out[lat], t[lat])
    assert after < 0.35 * before                      # 0.35 px radial → about 0.05 px
    info = pd.DataFrame(out.attrs["lattice_prior"])
    assert (info.tau_px < 0.1).all() and (info.weight < 0.15).all()
    assert out.xy_error[out.prior_weight < 0.5].max() < 0.15   # the stated error follows


@pytest.mark.parametrize("tau_px", [0.25, 0.6])
def test_prior_estimates_real_scatter_and_follows_it(tau_px):
    sigma = 0.25
    t, m = _measured(tau_A=tau_px * PX * 10, sigma_px=sigma, seed=3)
    out = lattice_prior(m)
    info = pd.DataFrame(out.attrs["lattice_prior"])
    assert np.allclose(info.tau_px, tau_px, rtol=0.25)
    expected_w = tau_px**2 / (tau_px**2 + sigma**2)
    assert np.allclose(info.weight, expected_w, atol=0.12)
    lat = (t.label == "lattice").to_numpy()
    assert _rms(out[lat], t[lat]) < _rms(m[lat], t[lat])     # never worse than the measurement


def test_columns_around_defects_and_vacancies_are_left_alone():
    t, m = _measured(defects={"Si1C3": 3, "V1": 2}, seed=5)
    out = lattice_prior(m)
    pos = out[["y", "x"]].to_numpy()
    bond = 0.142 / PX
    dop = out.label.astype(str) == "dopant"
    shell = cKDTree(pos[dop.to_numpy()]).query_ball_point(pos, 1.2 * bond, return_length=True) > 0
    assert dop.sum() == 3
    assert (out.prior_weight[shell] == 1.0).all()
    assert (out.prior_weight[~shell & (out.coordination == 3)] < 1.0).mean() > 0.9
    # A vacancy goes to its site of the lattice model.
    vac = out[out.label.astype(str) == "vacancy"]
    tv = t[t.label == "vacancy"]
    mm = match(vac, tv, 0.5 * bond)
    assert len(mm) == 2 and mm.distance.max() < 0.15


def test_find_atoms_with_the_prior_beats_the_refinement():
    sim = simulate_image("graphene", 256, pixel_size=PX, seed=11, dose=1e5, defects={"Si1C3": 2})
    ref = find_atoms(sim.image, PX, "graphene", refine=True, identify=False)
    pri = find_atoms(sim.image, PX, "graphene", lattice_prior=True, identify_options={"classes": False})
    for c in ("y_fit", "x_fit", "fit_error", "prior_weight", "xy_error", "site", "defect"):
        assert c in pri.columns
    lat = sim.atoms[sim.atoms.label == "lattice"]

    def rmse(a):
        m = match(a, lat, 7.0)
        return float(np.sqrt(np.mean(m.distance**2)))

    assert rmse(pri) < 0.7 * rmse(ref)
    assert np.allclose(pri.y_nm, pri.y * PX)


def test_prior_errors_are_clear():
    sim = simulate_image("graphene", 128, pixel_size=PX, seed=1)
    with pytest.raises(InputError, match="identify"):
        find_atoms(sim.image, PX, "graphene", lattice_prior=True, identify=False)
    with pytest.raises(InputError, match="crystalline"):
        find_atoms(sim.image, PX, "amorphous", lattice_prior=True)
    bare = pd.DataFrame({"y": [1.0], "x": [2.0], "label": ["lattice"]})
    with pytest.raises(InputError, match=r"lattice_prior=True"):
        lattice_prior(bare, PX, "graphene")


def test_simulated_relaxation_and_disorder():
    plain = simulate_image("graphene", 200, pixel_size=PX, seed=2, defects={"Si1C3": 2}).atoms
    relaxed = simulate_image("graphene", 200, pixel_size=PX, seed=2, defects={"Si1C3": 2}, relax=0.2).atoms
    p = relaxed[["y", "x"]].to_numpy()
    si = np.flatnonzero((relaxed.label == "dopant").to_numpy())
    d, _ = cKDTree(p).query(p[si], 4)
    assert np.allclose(d[:, 1:] * PX * 10, 1.42 + 0.2, atol=0.01)          # Å: bond + relaxation
    q = plain[["y", "x"]].to_numpy()
    d0, _ = cKDTree(q).query(q[(plain.label == "dopant").to_numpy()], 4)
    assert np.allclose(d0[:, 1:] * PX * 10, 1.42, atol=0.01)                # without relax: the bond
    shaken = simulate_image("graphene", 200, pixel_size=PX, seed=2, disorder=0.05).atoms
    still = simulate_image("graphene", 200, pixel_size=PX, seed=2).atoms
    m = match(shaken, still, 5.0)
    per_axis = np.sqrt(np.mean(m.distance**2) / 2) * PX * 10               # Å
    assert 0.04 < per_axis < 0.06
    with pytest.raises(ValueError, match="disorder"):
        simulate_image("graphene", 64, disorder=-1.0)


def test_cli_find_with_the_prior(tmp_path, capsys):
    from stemflow.cli import main

    sim = simulate_image("graphene", 160, pixel_size=PX, seed=4, dose=1e5)
    np.save(tmp_path / "frame.npy", sim.image)
    out = tmp_path / "atoms.parquet"
    assert main(["find", str(tmp_path / "frame.npy"), "--pixel-size", str(PX), "--lattice-prior",
                 "--out", str(out)]) == 0
    atoms = pd.read_parquet(out)
    assert {"y_fit", "x_fit", "prior_weight", "xy_error"} <= set(atoms.columns)
    assert (atoms.prior_weight < 0.5).mean() > 0.5
    assert main(["find", str(tmp_path / "frame.npy"), "--pixel-size", str(PX), "--lattice-prior",
                 "--no-identify", "--out", str(tmp_path / "b.parquet")]) != 0
    assert "--lattice-prior needs" in capsys.readouterr().err
    assert not (tmp_path / "b.parquet").exists()
