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
from .onnx_cpu import onnx_session, run_onnx

if TYPE_CHECKING:                      # annotations only: weights imports this module
    from .weights import Model

__all__ = ["predict", "tiles", "check_images", "fold_batchnorm"]


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


def fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` in eval mode with every ``Conv2d`` followed by a ``BatchNorm2d`` (in a
    ``Sequential``) replaced by one convolution with the normalisation folded into its weights.

    Parameters
    ----------
    module : torch.nn.Module
        A network in eval mode (its BatchNorm running statistics are used).

    Returns
    -------
    torch.nn.Module
        The folded copy (the original is left as it is, so it can still be trained).

    Examples
    --------
    >>> import torch
    >>> block = lambda: torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU())
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2),
    ...                           torch.nn.Sequential(block(), block())).eval()   # nested, as AtomNet's
    >>> folded = fold_batchnorm(net)
    >>> sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    0
    >>> x = torch.randn(1, 1, 8, 8)
    >>> bool(torch.allclose(net(x), folded(x), atol=1e-6))
    True
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold_sequence(seq: torch.nn.Sequential) -> torch.nn.Sequential:
        layers, out, i = list(seq), [], 0
        while i < len(layers):
            layer = layers[i]
            if (isinstance(layer, torch.nn.Conv2d) and i + 1 < len(layers)
                    and isinstance(layers[i + 1], torch.nn.BatchNorm2d)):
                out.append(fuse_conv_bn_eval(layer, layers[i + 1]))
                i += 2
                continue
            out.append(fold_sequence(layer) if isinstance(layer, torch.nn.Sequential) else fold(layer))
            i += 1
        return torch.nn.Sequential(*out)

    def fold(m):
        for name, child in list(m.named_children()):
            setattr(m, name, fold_sequence(child) if isinstance(child, torch.nn.Sequential) else fold(child))
        return m

    import copy

    module = copy.deepcopy(module).eval()
    return fold_sequence(module) if isinstance(module, torch.nn.Sequential) else fold(module)


def _weights_key(model: Model) -> tuple:
    """Changes whenever the network's weights do (fine-tuning updates them in place)."""
    return tuple(p._version for p in model.net.parameters()) + tuple(id(p) for p in model.net.parameters())


def _cpu_net(model: Model, key: tuple) -> torch.nn.Module:
    """The network as it runs fastest in PyTorch on CPU: BatchNorm folded into the convolutions
    and channels-last memory (1.5× the plain module on 4 × 512² frames, 2 threads: measured in
    ``benchmarks/results/inference.md``); rebuilt whenever the weights change (fine-tuning)."""
    cached = getattr(model, "_cpu_inference", None)
    if cached is None or cached[0] != key or model.net.training:
        if model.net.training:       # a network being trained: run it as it is
            return model.net
        net = fold_batchnorm(model.net).to(memory_format=torch.channels_last)
        object.__setattr__(model, "_cpu_inference", (key, net))
        return net
    return cached[1]


@torch.inference_mode()
def _run(model: Model, batch: np.ndarray) -> np.ndarray:
    if model.device.type == "cuda":
        x = torch.from_numpy(np.ascontiguousarray(batch[:, None])).to(model.device, memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model.net(x)
        logits = logits.float()
    else:
        key = _weights_key(model)
        net = _cpu_net(model, key)
        session = None if net.training or model.device.type != "cpu" else onnx_session(model, net, key)
        if session is not None:
            logits = torch.from_numpy(run_onnx(session, batch))
        else:
            x = torch.from_numpy(np.ascontiguousarray(batch[:, None])).to(model.device)
            logits = net(x.contiguous(memory_format=torch.channels_last)).contiguous()
    c = model.net.n_classes
    # every path's output is a fresh tensor of this batch: the softmax goes in place
    logits[:, :c] = torch.softmax(logits[:, :c], dim=1)
    return logits.cpu().numpy()


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
