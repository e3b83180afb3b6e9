"""The network container: safe loading, clear errors, tiling that equals a whole-frame pass."""

import json

import numpy as np
import pytest
import torch

from stemflow.nn import AtomNet, load_model, predict, save_model
from stemflow.nn.infer import tiles
from stemflow.nn.weights import WeightsError

CARD = {"classes": ["background", "lattice", "dopant", "vacancy"], "pixel_size": 0.02}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = AtomNet()
    # give BatchNorm non-trivial statistics so eval mode differs from identity
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 1, 64, 64))
    net.eval()
    return net, save_model(net, {**CARD, "name": "t"}, tmp_path / "t.pt")


def test_saved_model_loads_to_the_same_outputs(saved):
    net, path = saved
    model = load_model(path, device="cpu")
    x = np.random.default_rng(0).normal(size=(70, 90)).astype(np.float32)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)[None, None])[:, :4], 1)[0].numpy()
    assert np.allclose(model.probabilities(x), ref, atol=1e-6)
    assert model.pixel_size == 0.02 and model.classes[0] == "background"


@pytest.mark.parametrize("shape", [(33, 47), (64, 64), (129, 100)])
def test_any_image_size_gives_same_size_probabilities(saved, shape):
    model = load_model(saved[1], device="cpu")
    p = model.probabilities(np.zeros(shape, np.float32))
    assert p.shape == (4, *shape)
    assert np.allclose(p.sum(0), 1, atol=1e-5)


def test_tiles_equal_the_whole_frame(saved):
    model = load_model(saved[1], device="cpu")
    x = np.random.default_rng(1).normal(size=(2, 300, 280)).astype(np.float32)
    whole = model.probabilities(x, tile=4096)
    tiled = model.probabilities(x, tile=256)
    assert len(tiles(300, 256, model.receptive_field // 2 + 1)) == 4
    assert np.abs(whole - tiled).max() < 1e-5


def test_tiles_of_the_bundled_model_equal_the_whole_frame():
    from stemflow.preprocess import normalize
    from stemflow.simulate import simulate_image

    model = load_model("default", device="cpu")
    x = normalize(simulate_image("graphene", 600, pixel_size=0.02, seed=1).image)[None]
    whole = model.probabilities(x, tile=4096)
    tiled = model.probabilities(x, tile=256)
    assert np.abs(whole - tiled).max() < 1e-4


def _replace_weights(path, state):
    """Swap the weights file and re-sign the card with its checksum, so that loading gets past it."""
    import hashlib

    torch.save(state, path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(card))


def test_a_card_without_a_checksum_is_refused_unless_trusted_explicitly(saved):
    _, path = saved
    card = json.loads(path.with_suffix(".json").read_text())
    card.pop("sha256")
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="no sha256"):
        load_model(path)
    assert load_model(path, device="cpu", trust_unsigned=True).card["sha256"]


def test_a_model_sent_to_a_worker_is_loaded_from_memory_and_checked(saved, tmp_path, monkeypatch):
    import tempfile

    from stemflow.parallel.worker import _MODELS, ModelRef, get_model

    _, path = saved
    shared = tmp_path / "tmp"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))        # where a disk cache would go
    card = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    ref = ModelRef(card["sha256"], "mine", None, data, card)
    _MODELS.pop(ref.sha256, None)
    try:
        assert get_model(ref, device="cpu").card["sha256"] == card["sha256"]
    finally:
        _MODELS.pop(ref.sha256, None)
    assert list(shared.iterdir()) == []                            # nothing written anywhere shared
    bad = ModelRef("0" * 64, "mine", None, data, card)               # bytes that are not what the hash says
    with pytest.raises(WeightsError, match="do not match"):
        get_model(bad, device="cpu")


def test_corrupt_weights_are_refused(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt"):
        load_model(path)


def test_weights_of_another_network_are_refused(saved, tmp_path):
    _, path = saved
    _replace_weights(path, AtomNet(widths=(4, 8, 16, 24)).state_dict())
    with pytest.raises(WeightsError, match="do not fit"):
        load_model(path)


def test_pickled_code_is_never_executed(saved, tmp_path):
    _, path = saved

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled code ran')",))

    _replace_weights(path, {"x": Evil()})
    with pytest.raises(WeightsError, match="could not read weights"):
        load_model(path)


def test_missing_or_foreign_card(saved, tmp_path):
    _, path = saved
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(WeightsError, match="not a stemflow model card"):
        load_model(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match="no card"):
        load_model(path)


def test_unknown_model_name_lists_the_bundled_ones():
    with pytest.raises(WeightsError, match="bundled name"):
        load_model("no-such-model")


def test_bad_images_are_refused(saved):
    model = load_model(saved[1], device="cpu")
    with pytest.raises(ValueError, match="2-D image"):
        predict(model, np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="empty"):
        predict(model, np.zeros((0, 10)))


def test_training_is_deterministic_for_a_seed(tmp_path):
    from stemflow.nn.train import train

    kw = dict(steps=2, batch_size=2, workers=0, validate_every=2, progress=False, patch=64, reuse=1,
              lattices=("graphene",), widths=(4, 8, 8, 8))
    a = load_model(train(tmp_path / "a.pt", seed=3, **kw), device="cpu")
    b = load_model(train(tmp_path / "b.pt", seed=3, **kw), device="cpu")
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(va, vb), k
    card = a.card
    assert card["training"]["seed"] == 3 and card["validation"][-1]["step"] == 2


# ---- the CPU backends: ONNX Runtime (default when installed) and PyTorch


def _backend(monkeypatch, name):
    monkeypatch.setenv("STEMFLOW_CPU_BACKEND", name)


@pytest.mark.parametrize("shape", [(3, 100, 131), (1, 7, 9), (2, 64, 64)])
def test_onnx_and_torch_backends_agree_on_any_frame_size(monkeypatch, shape):
    pytest.importorskip("onnxruntime")
    model = load_model("default", device="cpu")
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    _backend(monkeypatch, "torch")
    ref = predict(model, x)
    _backend(monkeypatch, "onnx")
    got = predict(model, x)
    assert getattr(model, "_onnx_session")[1] is not None          # it did run under ONNX
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


def test_onnx_session_follows_weights_changed_in_place(monkeypatch, saved):
    pytest.importorskip("onnxruntime")
    model = load_model(saved[1], device="cpu")
    x = np.random.default_rng(3).normal(size=(1, 48, 40)).astype(np.float32)
    _backend(monkeypatch, "onnx")
    before = predict(model, x)
    with torch.no_grad():                                 # as fine-tuning does
        model.net.enc1[0].weight.mul_(1.5)
    after = predict(model, x)
    _backend(monkeypatch, "torch")
    ref = predict(model, x)
    assert np.abs(after - before).max() > 1e-3
    assert np.abs(after - ref).max() < 1e-4


def test_a_model_that_ran_under_onnx_still_pickles(monkeypatch, saved):
    import pickle

    pytest.importorskip("onnxruntime")
    model = load_model(saved[1], device="cpu")
    _backend(monkeypatch, "onnx")
    x = np.zeros((1, 32, 32), np.float32)
    a = predict(model, x)
    copy = pickle.loads(pickle.dumps(model))
    assert not hasattr(copy, "_onnx_session")
    assert np.array_equal(predict(copy, x), a)


def test_cpu_backend_errors_name_the_fix(monkeypatch, saved):
    from stemflow.errors import InputError
    from stemflow.nn import onnx_cpu

    model = load_model(saved[1], device="cpu")
    x = np.zeros((1, 16, 16), np.float32)
    _backend(monkeypatch, "tensorrt")
    with pytest.raises(InputError, match="auto, onnx, torch"):
        predict(model, x)
    # ONNX asked for but not installed: an error naming both ways out; auto falls back to torch
    monkeypatch.setattr(onnx_cpu, "_available", lambda: "onnxruntime is not installed (pip install onnxruntime onnx)")
    _backend(monkeypatch, "onnx")
    with pytest.raises(InputError, match="pip install onnxruntime.*STEMFLOW_CPU_BACKEND=torch"):
        predict(model, x)
    _backend(monkeypatch, "auto")
    assert predict(model, x).shape == (1, 6, 16, 16)
    assert getattr(model, "_onnx_session", None) is None
