"""Saving and loading trained networks: a weights file plus a JSON card, loaded safely.

A model is two files side by side: ``NAME.pt`` (a ``state_dict`` of tensors, read with
``torch.load(..., weights_only=True)`` so no code is ever unpickled) and ``NAME.json`` (the card:
classes, the sampling the network works at, its architecture, how it was trained, what it
measured, and the SHA-256 of the weights file, checked on load). Bundled models live in
``stemflow/weights/``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import StemflowError
from .model import AtomNet

__all__ = ["Model", "load_model", "save_model", "bundled_models", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class WeightsError(StemflowError):
    """A weights file or its card is missing, corrupt, or not a stemflow model."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bundled_models() -> list[str]:
    """Names of the models shipped in the package.

    Returns
    -------
    list of str
        Sorted names of the models in ``stemflow/weights/`` that have both their ``NAME.pt`` and
        ``NAME.json``; each can be passed to :func:`load_model`.

    Examples
    --------
    >>> from stemflow.nn import bundled_models
    >>> "default" in bundled_models()
    True
    """
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json") if (WEIGHTS_DIR / f"{p.stem}.pt").exists())


@dataclass
class Model:
    """A trained network with its card, ready to turn images into class probabilities.

    Attributes
    ----------
    net : AtomNet
    card : dict
        ``classes``, ``pixel_size`` (nm/px the network works at), ``architecture``, ``training``,
        ``metrics``, ``sha256``.
    device : torch.device
    """

    net: AtomNet
    card: dict
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_onnx_session", None)      # a runtime session: made again where the model runs
        return state

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card["classes"])

    @property
    def pixel_size(self) -> float:
        """Sampling the network works at, nm/px."""
        return float(self.card["pixel_size"])

    @property
    def receptive_field(self) -> int:
        """px on the network's grid."""
        return self.net.receptive_field

    @property
    def name(self) -> str:
        return str(self.card.get("name", "unnamed"))

    def to(self, device) -> "Model":
        """Move to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``); channels-last on GPUs."""
        self.device = torch.device(device)
        self.net.to(self.device)
        if self.device.type == "cuda":
            self.net.to(memory_format=torch.channels_last)
        return self

    def probabilities(self, images, tile: int = 1024, batch_size: int = 4) -> np.ndarray:
        """Per-pixel class probabilities of normalised images on the network's grid:
        (n_classes, y, x) or (n, n_classes, y, x). See :func:`stemflow.nn.infer.predict`."""
        return self.maps(images, tile=tile, batch_size=batch_size)[0]

    def maps(self, images, tile: int = 1024, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and sub-pixel offsets (None for a model without them)."""
        from .infer import predict

        out = predict(self, images, tile=tile, batch_size=batch_size)
        c = self.net.n_classes
        return out[..., :c, :, :], (out[..., c:, :, :] if out.shape[-3] > c else None)


def save_model(net: AtomNet, card: dict, path) -> Path:
    """Write ``NAME.pt`` and ``NAME.json`` (the card gets the weights' SHA-256); return the .pt path.

    Parameters
    ----------
    net : AtomNet
        The network; its ``state_dict`` is saved from the CPU.
    card : dict
        What :func:`load_model` needs and people want to know: ``classes`` (one per class
        channel), ``pixel_size`` (nm/px the network works at), and optionally ``name``,
        ``training``, ``metrics``. ``architecture``, ``name`` (default: the file's stem),
        ``sha256`` and ``format`` are filled in; numpy scalars and arrays are written as JSON.
    path : str or Path
        Where to write; the suffix is replaced by ``.pt`` (the card goes beside it as ``.json``).
        Missing folders are created; existing files are overwritten.

    Returns
    -------
    Path
        The ``.pt`` path.

    Examples
    --------
    >>> import json, tempfile
    >>> from stemflow.nn import AtomNet, load_model, save_model
    >>> card = {"classes": ["background", "lattice", "dopant", "vacancy"], "pixel_size": 0.02}
    >>> pt = save_model(AtomNet(), card, tempfile.mkdtemp() + "/tiny")
    >>> pt.name, sorted(json.loads(pt.with_suffix(".json").read_text()))
    ('tiny.pt', ['architecture', 'classes', 'format', 'name', 'pixel_size', 'sha256'])
    >>> load_model(pt, device="cpu").pixel_size                     # nm/px
    0.02
    """
    path = Path(path)
    if path.suffix != ".pt":
        path = path.with_suffix(".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    torch.save(state, path)
    card = dict(card)
    card["architecture"] = net.config
    card["name"] = card.get("name", path.stem)
    card["sha256"] = file_sha256(path)
    card["format"] = "stemflow-atomnet-1"
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, default=_json_default))
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _resolve(name_or_path) -> Path:
    p = Path(name_or_path)
    pt = p.with_suffix(".pt") if p.suffix in ("", ".json") else p
    if pt.is_file() and pt.suffix == ".pt":
        return pt
    if isinstance(name_or_path, str) and "/" not in name_or_path and (WEIGHTS_DIR / f"{name_or_path}.pt").exists():
        return WEIGHTS_DIR / f"{name_or_path}.pt"
    raise WeightsError(f"no model {str(name_or_path)!r}: give a bundled name ({', '.join(bundled_models()) or 'none installed'}) "
                       "or the path of a NAME.pt written by `stemflow train` (with NAME.json beside it)")


def load_model(name_or_path="default", device=None, *, trust_unsigned: bool = False) -> Model:
    """Load a trained model safely.

    Parameters
    ----------
    name_or_path : str or Path
        A bundled model's name (see :func:`bundled_models`; ``"default"`` covers graphene, WS2,
        MoS2 and amorphous supports) or the path of a ``NAME.pt`` with ``NAME.json`` beside it.
    device : str, optional
        ``"cpu"``, ``"cuda"``...; default: CUDA when available, else CPU.
    trust_unsigned : bool
        Accept a card without a ``sha256`` (weights nobody can check). Off by default: every card
        ``stemflow train`` and ``stemflow adapt`` write carries it.

    Returns
    -------
    Model
        The network with its card (``name``, ``sha256``, ``pixel_size`` nm/px of its training
        grid, classes); ``model.maps(images)`` gives class probabilities.

    Raises
    ------
    WeightsError
        Missing files, a card that is not a stemflow model card, a card without a checksum (unless
        ``trust_unsigned``), weights whose checksum differs from the card's (corrupt or replaced),
        or tensors that do not fit the architecture.

    Examples
    --------
    >>> import stemflow
    >>> model = stemflow.load_model()                 # the bundled default; no download
    >>> model.name, model.net.n_classes
    ('default', 4)
    """
    pt = _resolve(name_or_path)
    card_path = pt.with_suffix(".json")
    if not card_path.exists():
        raise WeightsError(f"{str(pt)!r} has no card {card_path.name!r} beside it; stemflow models are a .pt and "
                           "a .json written together by `stemflow train`")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"the model card {str(card_path)!r} is not valid JSON ({e}); re-train or reinstall") from None
    return model_from_bytes(pt.read_bytes(), card, source=str(pt), device=device, trust_unsigned=trust_unsigned)


def model_from_bytes(data: bytes, card: dict, *, source: str = "<bytes>", device=None,
                     trust_unsigned: bool = False) -> Model:
    """A model from its weights' bytes and its card, checked as :func:`load_model` checks files.

    Nothing is written to disk: a worker that receives a model's bytes loads it from memory.
    ``source`` names the weights in messages.
    """
    if not isinstance(card, dict) or card.get("format") != "stemflow-atomnet-1":
        raise WeightsError(f"the card of {source!r} is not a stemflow model card (no format 'stemflow-atomnet-1')")
    digest = hashlib.sha256(data).hexdigest()
    if not card.get("sha256"):
        if not trust_unsigned:
            raise WeightsError(f"the card of {source!r} has no sha256, so nothing shows the weights are the ones "
                               "it describes; re-save them with `stemflow train`/`stemflow adapt`, or pass "
                               "trust_unsigned=True if you trust their origin")
    elif digest != card["sha256"]:
        raise WeightsError(f"weights {source!r} do not match their card (SHA-256 {digest[:12]}… ≠ "
                           f"{card['sha256'][:12]}…): the file is corrupt or was replaced; re-train or reinstall stemflow")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad files
        raise WeightsError(f"could not read weights {source!r} ({type(e).__name__}: {e}); the file is corrupt or "
                           "not a torch state_dict") from None
    arch = card.get("architecture", {})
    try:
        net = AtomNet(**arch)
        net.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError, AttributeError) as e:
        raise WeightsError(f"weights {source!r} do not fit the architecture in their card ({e}); "
                           "they belong to another network") from None
    net.eval()
    if not card.get("classes") or len(card["classes"]) != arch.get("n_classes", 4):
        raise WeightsError(f"the card of {source!r} lists classes {card.get('classes')} that do not match "
                           f"the network's {arch.get('n_classes')} outputs")
    if not card.get("pixel_size"):
        raise WeightsError(f"the card of {source!r} does not say the sampling (pixel_size, nm/px) the "
                           "network was trained at")
    model = Model(net=net, card=dict(card, sha256=digest))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device)
