"""Training on streamed simulated data: no dataset on disk, deterministic for a seed.

A worker process simulates and degrades batches (:mod:`stemflow.augment`) while the main
process trains; the loss is class-weighted cross-entropy plus a soft Dice term (dopants and
vacancies are under 1 % of pixels). A fixed, seeded validation set drawn from a separate stream
scores the network as it trains (per-class pixel IoU); the final card records the training
settings and those scores. Atom-level metrics come from :mod:`stemflow.evaluate`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from ..augment import SampleSpec, training_batches
from ..simulate.imaging import CLASSES
from .model import AtomNet
from .weights import save_model

__all__ = ["train", "validation_set", "pixel_scores"]


class _Stream(IterableDataset):
    def __init__(self, seed: int, batch_size: int, spec: SampleSpec):
        self.seed, self.batch_size, self.spec = seed, batch_size, spec

    def __iter__(self):
        torch.set_num_threads(1)
        for xs, ys in training_batches(self.seed, self.batch_size, self.spec):
            yield torch.from_numpy(xs), torch.from_numpy(ys)


def validation_set(spec: SampleSpec, n: int = 48, seed: int = 10_000):
    """A fixed set of ``n`` samples from a stream no training seed reaches."""
    gen = training_batches(seed, n, spec, shuffle_buffer=n)
    xs, ys = next(gen)
    return torch.from_numpy(xs), torch.from_numpy(ys)


def pixel_scores(net: AtomNet, xs: torch.Tensor, ys: torch.Tensor, batch: int = 16) -> dict:
    """Per-class intersection over union of the argmax prediction (pixels)."""
    net.eval()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(xs), batch):
            preds.append(net(xs[i:i + batch]).argmax(1))
    pred = torch.cat(preds)
    out = {}
    for k, name in enumerate(CLASSES):
        inter = ((pred == k) & (ys == k)).sum().item()
        union = ((pred == k) | (ys == k)).sum().item()
        out[f"iou_{name}"] = inter / union if union else float("nan")
    return out


def _loss(logits, target, weights):
    ce = F.cross_entropy(logits, target, weight=weights)
    prob = torch.softmax(logits, 1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)
    return ce + dice[1:].mean()


def train(out, *, lattices=("graphene", "ws2", "mos2", "amorphous"), steps: int = 6000,
          batch_size: int = 16, lr: float = 3e-3, seed: int = 0, widths=(8, 16, 32, 48),
          dilations=(2, 4), threads: int = 1, workers: int = 1, validate_every: int = 500,
          class_weights=(1.0, 1.5, 6.0, 6.0), progress: bool = True, name: str | None = None,
          **spec_options) -> Path:
    """Train an :class:`AtomNet` on streamed simulated data and save it with its card.

    Parameters
    ----------
    out : str or Path
        Where to write ``NAME.pt`` and ``NAME.json``.
    lattices : sequence of str
        Lattices to train on (``graphene``, ``ws2``, ``mos2``, ``amorphous``).
    steps, batch_size, lr : int, int, float
        Optimisation: AdamW with a one-cycle schedule peaking at ``lr``.
    seed : int
        Makes the run repeatable (data stream, initialisation).
    widths, dilations :
        Architecture (see :class:`AtomNet`).
    threads, workers : int
        Torch threads for the training step, and data-simulating worker processes (0 = inline).
    validate_every : int
        Steps between scores on the fixed validation set.
    spec_options :
        Fields of :class:`~stemflow.augment.SampleSpec` (``patch``, ``model_pixel_size``,
        ``dose_range``, ...).

    Returns
    -------
    Path of the saved weights.
    """
    spec = dataclasses.replace(SampleSpec(), lattices=tuple(lattices), **spec_options)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    net = AtomNet(len(CLASSES), widths, dilations).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    weights = torch.tensor(class_weights, dtype=torch.float32)
    loader = DataLoader(_Stream(seed, batch_size, spec), batch_size=None, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    val_x, val_y = validation_set(spec)
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="training", unit="step")
    t0 = time.perf_counter()
    running = None
    it = iter(loader)
    for step in range(1, steps + 1):
        xs, ys = next(it)
        xs = xs.to(memory_format=torch.channels_last)
        net.train()
        loss = _loss(net(xs), ys, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
        if step % validate_every == 0 or step == steps:
            scores = pixel_scores(net, val_x, val_y)
            history.append({"step": step, "loss": running, "seconds": time.perf_counter() - t0, **scores})
            if bar is not None:
                bar.write(f"step {step}: loss {running:.3f}, IoU " +
                          ", ".join(f"{k[4:]} {v:.3f}" for k, v in scores.items()))
    if bar is not None:
        bar.close()
    del it, loader
    net.eval()
    net = net.to(memory_format=torch.contiguous_format)
    card = {
        "name": name or Path(out).stem,
        "classes": list(CLASSES),
        "pixel_size": spec.model_pixel_size,
        "lattices": list(lattices),
        "normalization": "stemflow.preprocess.normalize (percentiles 0.5/99.5 of a σ=1 px smoothed copy)",
        "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "threads": threads,
                     "workers": workers, "class_weights": list(class_weights), "seconds": time.perf_counter() - t0,
                     "torch": torch.__version__, "sample_spec": spec.to_dict()},
        "validation": history,
        "metrics": {},
    }
    return save_model(net, card, out)
