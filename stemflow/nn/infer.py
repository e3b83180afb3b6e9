"""Running the network: batches, tiles with a halo for large frames, CPU or GPU.

A frame larger than ``tile`` px is cut into tiles whose origins lie on the network's stride grid
(multiples of 8) and that overlap by at least half the receptive field, so each output pixel sees
exactly the input it would see in a whole-frame pass; only the central part of each tile is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError

if TYPE_CHECKING:                      # annotations only: weights imports this module
    from .weights import Model

__all__ = ["predict", "tiles", "check_images"]


def check_images(images) -> np.ndarray:
    """Images as a float32 (n, y, x) array, refusing what the network cannot use."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"expected a 2-D image or a (frame, y, x) stack; got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"empty image of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"image dtype {arr.dtype} is not real numbers; convert (e.g. np.abs for complex)")
    return arr.astype(np.float32, copy=False)


def tiles(n: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Cut ``range(n)`` into tiles: ``(read0, read1, keep0, keep1)`` with reads padded by ``halo``.

    Starts of reads are multiples of 8 so the network's strided grid is the same as in a
    whole-frame pass.
    """
    if n <= tile:
        return [(0, n, 0, n)]
    halo = int(np.ceil(halo / 8) * 8)
    core = max(8, (tile - 2 * halo) // 8 * 8)
    out = []
    for k0 in range(0, n, core):
        k1 = min(n, k0 + core)
        r0 = max(0, k0 - halo)
        r1 = min(n, k1 + halo)
        out.append((r0, r1, k0, k1))
    return out


@torch.inference_mode()
def _run(model: Model, batch: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(batch[:, None])).to(model.device)
    if model.device.type == "cuda":
        x = x.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model.net(x)
        logits = logits.float()
    else:
        logits = model.net(x)
    c = model.net.n_classes
    out = logits.clone()
    out[:, :c] = torch.softmax(logits[:, :c], dim=1)
    return out.cpu().numpy()


def predict(model: Model, images, tile: int = 1024, batch_size: int = 4) -> np.ndarray:
    """Class probabilities (and sub-pixel offsets) of normalised images on the network's grid.

    Parameters
    ----------
    model : stemflow.nn.weights.Model
    images : ndarray, (y, x) or (n, y, x)
        Already resampled to ``model.pixel_size`` and normalised (:mod:`stemflow.preprocess`).
    tile : int
        Largest side run in one pass, px; larger frames are tiled with a halo of half the
        receptive field.
    batch_size : int
        Frames (or tiles) per pass.

    Returns
    -------
    ndarray of float32, (channels, y, x) or (n, channels, y, x)
        The ``n_classes`` class probabilities, then (for models with offsets) the offsets
        ``dy``, ``dx`` in px.

    Examples
    --------
    >>> import numpy as np
    >>> from stemflow.nn import load_model, predict
    >>> model = load_model("default", device="cpu")
    >>> out = predict(model, np.zeros((2, 32, 32), np.float32))
    >>> out.shape                                       # 4 class probabilities + dy, dx
    (2, 6, 32, 32)
    >>> bool(np.allclose(out[:, :4].sum(axis=1), 1, atol=1e-4))
    True
    """
    arr = check_images(images)
    single = np.asarray(images).ndim == 2
    n, h, w = arr.shape
    c = model.net.head.out_channels
    out = np.empty((n, c, h, w), np.float32)
    halo = model.receptive_field // 2 + 1
    ty, tx = tiles(h, tile, halo), tiles(w, tile, halo)
    if len(ty) == 1 and len(tx) == 1:
        for i in range(0, n, batch_size):
            out[i:i + batch_size] = _run(model, arr[i:i + batch_size])
    else:
        for k in range(n):
            for r0, r1, k0, k1 in ty:
                for c0, c1, j0, j1 in tx:
                    p = _run(model, arr[k:k + 1, r0:r1, c0:c1])[0]
                    out[k, :, k0:k1, j0:j1] = p[:, k0 - r0:k1 - r0, j0 - c0:j1 - c0]
    return out[0] if single else out
