"""Fine-tuning and adaptation without labels: pseudo-labels agree with the truth, the student
learns from them, the card says what was done, bad input is refused."""

import numpy as np
import pytest
import torch

from stemflow import find_atoms, load_model
from stemflow.errors import InputError
from stemflow.metrics import score
from stemflow.nn.adapt import IGNORE, _crop, adapt, pseudo_labels, tta_maps
from stemflow.preprocess import normalize, resample
from stemflow.simulate import simulate_image

PX = 0.012


@pytest.fixture(scope="module")
def frames():
    return [simulate_image("graphene", 128, seed=50 + k, pixel_size=PX, dose=2e5,
                           defects={"Si1C3": 2, "V1": 1}) for k in range(2)]


def test_fine_tuning_starts_from_the_given_weights_and_checkpoints(tmp_path):
    from stemflow.nn.train import train

    base = load_model("default")
    kw = dict(steps=2, batch_size=2, workers=0, validate_every=2, progress=False, patch=64, reuse=1,
              lattices=("graphene",), lr=1e-9)
    path = train(tmp_path / "ft.pt", init="default", checkpoint_every=1, **kw)
    tuned = load_model(path)
    assert tuned.card["training"]["started_from"]["sha256"] == base.card["sha256"]
    assert tuned.card["architecture"] == base.card["architecture"]
    # a learning rate of 1e-9 leaves the convolutions where they started (BN statistics move)
    w0 = base.net.state_dict()["enc1.0.weight"]
    assert torch.allclose(tuned.net.state_dict()["enc1.0.weight"], w0, atol=1e-6)
    ck = load_model(tmp_path / "ft-step1.pt")
    assert ck.card["training"]["steps"] == 1


def test_tta_probabilities_are_probabilities_and_invariant_to_a_flip(frames):
    model = load_model("default")
    small = normalize(resample(frames[0].image, PX / model.pixel_size))
    p, off = tta_maps(model, small)
    assert p.shape[0] == model.net.n_classes and off.shape[0] == 2
    assert np.allclose(p.sum(0), 1, atol=1e-4)
    q, _ = tta_maps(model, np.ascontiguousarray(small[:, ::-1]))
    assert np.allclose(q[:, :, ::-1], p, atol=1e-4)   # averaged over the group: a flip changes nothing


def test_confident_pseudo_labels_are_right_and_the_rest_is_ignored(frames):
    model = load_model("default")
    sim = frames[0]
    factor = PX / model.pixel_size
    small = normalize(resample(sim.image, factor))
    lab = pseudo_labels(model, small, confidence=0.9)
    assert len(lab["yx"]) > 50
    # the confident blobs are true columns of the right class (the truth on the network's grid)
    import pandas as pd

    from stemflow.preprocess import to_input_coords

    names = np.asarray(model.classes)[lab["codes"]]
    pred = pd.DataFrame({"y": to_input_coords(lab["yx"][:, 0], factor),
                         "x": to_input_coords(lab["yx"][:, 1], factor), "label": names})
    s = score(pred, sim.atoms, classes=("lattice",))
    assert s.loc["all", "precision"] > 0.97          # (unmatched: blobs cut by the frame edge)
    assert s.loc["lattice", "precision"] > 0.97
    # ignored pixels exist, and the crops label no ignored pixel but background ones
    assert 0.05 < lab["ignore"].mean() < 0.95
    img, target, off = _crop(small, lab, 64, np.random.default_rng(0))
    assert img.shape == target.shape == (64, 64) and off.shape == (2, 64, 64)
    assert (target == IGNORE).any() and (target == 1).any()


def test_adapt_trains_a_student_records_it_and_keeps_finding_atoms(frames, tmp_path):
    result = adapt([f.image for f in frames], PX, steps=3, batch_size=4, sim_share=0.25, progress=False)
    card = result.card
    assert card["adaptation"]["steps"] == 3 and card["adaptation"]["frames"] == 2
    assert card["adaptation"]["from"]["sha256"] == load_model("default").card["sha256"]
    assert len(result.report) == 2 and {"rows_before", "rows_after", "pseudo_labels"} <= set(result.report)
    path = result.save(tmp_path / "mine.pt")
    mine = load_model(path)
    assert mine.card["adaptation"]["frames_sha256"] == card["adaptation"]["frames_sha256"]
    # the student differs from the teacher, and still finds the lattice
    base = load_model("default").net.state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in mine.net.state_dict().items())
    atoms = find_atoms(frames[0].image, PX, model=mine, identify=False)
    s = score(atoms, frames[0].atoms, classes=("lattice",))
    assert s.loc["lattice", "f1"] > 0.95


@pytest.mark.parametrize("bad, match", [
    (dict(images=[]), "at least one frame"),
    (dict(pixel_size=-1.0), "pixel_size"),
    (dict(confidence=1.2), "confidence"),
    (dict(images=np.zeros((2, 2, 8, 8))), "images"),
])
def test_adapt_refuses_bad_input(frames, bad, match):
    kw = dict(images=[frames[0].image], pixel_size=PX, steps=1, progress=False)
    kw.update(bad)
    with pytest.raises(InputError, match=match):
        adapt(kw.pop("images"), **kw)
