"""Training samples: shapes, determinism, and targets that sit where the truth says."""

import numpy as np
from scipy import ndimage

from stemflow.augment import SampleSpec, degrade, training_batches, training_sample


def test_batches_are_deterministic_for_a_seed():
    spec = SampleSpec(patch=64, reuse=2)
    a = next(training_batches(5, 4, spec, shuffle_buffer=8))
    b = next(training_batches(5, 4, spec, shuffle_buffer=8))
    c = next(training_batches(6, 4, spec, shuffle_buffer=8))
    assert a[0].shape == (4, 1, 64, 64) and a[1].shape == (4, 64, 64)
    assert a[0].dtype == np.float32 and a[1].dtype == np.int64
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_targets_sit_on_the_atoms():
    """In a noise-free sample every lattice disk of the target lies on a bright column."""
    spec = SampleSpec(patch=96, lattices=("ws2",), p_noise_free=1.0, reuse=1)
    x, y, off = training_sample(np.random.default_rng(3), spec)
    lab, n = ndimage.label(y == 1)
    assert n > 20
    centres = np.array(ndimage.center_of_mass(np.ones_like(y), lab, range(1, n + 1)))
    r, c = np.rint(centres).astype(int).T
    local_max = ndimage.maximum_filter(x, 5)
    # W columns are local maxima of the image; S2 columns are too, at lower level
    on_peak = np.abs(x[r, c] - local_max[r, c]) <= 0.25 * (x.max() - x.min())
    assert on_peak.mean() > 0.9
    assert x[y == 1].mean() > x[y == 0].mean() + 0.1
    # offsets point every pixel of a disk at one common centre, the blob's own centre of mass
    rr, cc = np.indices(y.shape)
    ty, tx = rr + off[0], cc + off[1]
    for k in range(1, n + 1):
        sel = lab == k
        r, c = np.nonzero(sel)
        if r.min() == 0 or c.min() == 0 or r.max() == y.shape[0] - 1 or c.max() == y.shape[1] - 1:
            continue  # disks cut by the patch edge
        assert ty[sel].std() < 1e-4 and tx[sel].std() < 1e-4
        assert abs(ty[sel][0] - centres[k - 1][0]) < 0.3 and abs(tx[sel][0] - centres[k - 1][1]) < 0.3
    assert np.all(off[:, y == 0] == 0)


def test_degrade_is_poisson_at_the_dose():
    lam = np.full((256, 256), 4.0, np.float32)
    draws = [degrade(lam, np.random.default_rng(k), dose_factor=2.5) for k in range(10)]
    plain = [d for d in draws if abs(d.mean() - 10) < 0.2]
    assert plain, "at least one draw without heavy non-linear response"
    # Poisson: variance = mean (10 counts), plus at most read noise; blur-free draws show it
    assert any(9.5 < d.var() < 11.5 for d in plain), [round(float(d.var()), 2) for d in plain]


def test_microscope_samples_use_an_aberrated_probe_and_the_default_keeps_the_gaussian_one():
    from stemflow.augment import SampleSpec, _simulate

    spec = SampleSpec(lattices=("graphene",), p_microscope=1.0)
    sims = [_simulate(np.random.default_rng(s), spec)[0] for s in range(3)]
    assert all(s.imaging.probe == "aberrated" for s in sims)
    assert len({(s.imaging.defocus, s.imaging.voltage_kv) for s in sims}) == 3      # drawn, not fixed
    plain = _simulate(np.random.default_rng(0), SampleSpec(lattices=("graphene",)))[0]
    assert plain.imaging.probe == "gaussian"


def test_sample_spec_moves_columns_off_the_ideal_lattice_only_when_asked():
    from stemflow.augment import SampleSpec, _simulate

    spec = SampleSpec(lattices=("graphene",), p_relax=1.0, relax_range=(0.3, 0.3),
                      p_disorder=1.0, disorder_range=(0.02, 0.02))
    sim, _ = _simulate(np.random.default_rng(1), spec)
    assert sim.params["relax"] == 0.3 and sim.params["disorder"] == 0.02
    plain, _ = _simulate(np.random.default_rng(1), SampleSpec(lattices=("graphene",)))
    assert plain.params["relax"] == 0.0 and plain.params["disorder"] == 0.0
    # a spec without them draws the stream it drew before they existed (the earlier training
    # stages' samples stay reproducible): the frame's seed as the code before them drew it
    assert plain.params["seed"] == 970525013
    amorphous, _ = _simulate(np.random.default_rng(1), SampleSpec(lattices=("amorphous",), p_relax=1.0,
                                                                  relax_range=(0.3, 0.3)))
    assert amorphous.params["relax"] == 0.0          # no lattice to relax on a support
