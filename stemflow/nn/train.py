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

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from ..augment import SampleSpec, training_batches
from ..tables import CLASSES
from .model import AtomNet
from .weights import save_model

__all__ = ["train", "validation_set", "pixel_scores"]


class _Stream(IterableDataset):
    def __init__(self, seed: int, batch_size: int, spec: SampleSpec):
        self.seed, self.batch_size, self.spec = seed, batch_size, spec

    def __iter__(self):
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        seed = self.seed if info is None else self.seed * 1000 + info.id
        with threadpool_limits(1):  # one core per worker: BLAS threads would fight the trainer
            for xs, ys, offs in training_batches(seed, self.batch_size, self.spec):
                yield torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(offs)


def validation_set(spec: SampleSpec, n: int = 48, seed: int = 10_000):
    """A fixed set of ``n`` samples from a stream no training seed reaches."""
    gen = training_batches(seed, n, spec, shuffle_buffer=n)
    xs, ys, offs = next(gen)
    return torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(offs)


def pixel_scores(net: AtomNet, xs: torch.Tensor, ys: torch.Tensor, offs: torch.Tensor | None = None,
                 batch: int = 16) -> dict:
    """Per-class intersection over union of the argmax prediction (pixels), and the RMS error of
    the predicted offsets on atom pixels (px)."""
    net.eval()
    preds, offsets = [], []
    c = net.n_classes
    with torch.inference_mode():
        for i in range(0, len(xs), batch):
            o = net(xs[i:i + batch])
            preds.append(o[:, :c].argmax(1))
            offsets.append(o[:, c:])
    pred = torch.cat(preds)
    out = {}
    if offs is not None and net.config.get("offsets"):
        on = (ys > 0).unsqueeze(1).expand_as(offs)
        err = (torch.cat(offsets) - offs)[on]
        out["offset_rmse_px"] = float(torch.sqrt((err**2).mean() * 2)) if err.numel() else float("nan")
    for k, name in enumerate(CLASSES):
        inter = ((pred == k) & (ys == k)).sum().item()
        union = ((pred == k) | (ys == k)).sum().item()
        out[f"iou_{name}"] = inter / union if union else float("nan")
    return out


def _loss(output, target, weights, offsets=None, offset_weight: float = 1.0):
    c = len(weights)
    logits = output[:, :c]
    ce = F.cross_entropy(logits, target, weight=weights)
    prob = torch.softmax(logits, 1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)
    loss = ce + dice[1:].mean()
    if offsets is not None and output.shape[1] > c:
        on = (target > 0).unsqueeze(1).expand_as(offsets)
        if on.any():
            loss = loss + offset_weight * F.smooth_l1_loss(output[:, c:][on], offsets[on], beta=0.5)
    return loss


def train(out, *, lattices=("graphene", "ws2", "mos2", "amorphous"), steps: int = 6000,
          batch_size: int = 16, lr: float = 3e-3, seed: int = 0, widths=(8, 16, 32, 48),
          dilations=(2, 4), threads: int = 1, workers: int = 1, validate_every: int = 500,
          class_weights=(1.0, 1.5, 6.0, 6.0), progress: bool = True, name: str | None = None,
          net: torch.nn.Module | None = None, init=None, checkpoint_every: int = 0,
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
    net : torch.nn.Module, optional
        Train this network instead of a new :class:`AtomNet` (for comparisons; it must output
        class logits then two offset channels and have ``n_classes`` and ``config``). Its weights
        are saved as a plain ``state_dict`` with the card.
    init : Model, str or Path, optional
        Start from these weights (a bundled model's name or a weights path) instead of a random
        initialisation: fine-tuning. Its architecture is kept (``widths`` and ``dilations`` are
        ignored) and recorded in the card with its hash.
    checkpoint_every : int
        Also save the weights and card every this many steps (0: only at the end), so that a
        long run that is stopped still leaves a usable model.
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
    custom = net is not None
    started_from = None
    if init is not None and not custom:
        from .weights import load_model

        base = load_model(init)
        net = base.net
        started_from = {"name": base.name, "sha256": base.card.get("sha256")}
    elif not custom:
        net = AtomNet(len(CLASSES), widths, dilations)
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    weights = torch.tensor(class_weights, dtype=torch.float32)
    loader = DataLoader(_Stream(seed, batch_size, spec), batch_size=None, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    val_x, val_y, val_o = validation_set(spec)
    history = []

    def _card(done: int) -> dict:
        return _training_card(out, name, spec, lattices, done, batch_size, lr, seed, threads, workers,
                              class_weights, time.perf_counter() - t0, history, started_from)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="training", unit="step")
    t0 = time.perf_counter()
    running = None
    it = iter(loader)
    for step in range(1, steps + 1):
        xs, ys, offs = next(it)
        xs = xs.to(memory_format=torch.channels_last)
        net.train()
        loss = _loss(net(xs), ys, weights, offs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}")
        if step % validate_every == 0 or step == steps:
            scores = pixel_scores(net, val_x, val_y, val_o)
            history.append({"step": step, "loss": running, "seconds": time.perf_counter() - t0, **scores})
            if bar is not None:
                bar.write(f"step {step}: loss {running:.3f}, " +
                          ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        if checkpoint_every and step % checkpoint_every == 0 and step < steps and not custom:
            ck = Path(out)
            save_model(_plain(net), _card(step), ck.with_name(ck.stem + f"-step{step}").with_suffix(".pt"))
            net.to(memory_format=torch.channels_last)
    if bar is not None:
        bar.close()
    del it, loader
    net = _plain(net)
    card = _card(steps)
    if custom:
        import json

        out = Path(out).with_suffix(".pt")
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), out)
        card["architecture"] = dict(getattr(net, "config", {}))
        out.with_suffix(".json").write_text(json.dumps(card, indent=2, default=str))
        return out
    return save_model(net, card, out)


def _plain(net):
    net.eval()
    return net.to(memory_format=torch.contiguous_format)


def _training_card(out, name, spec, lattices, steps, batch_size, lr, seed, threads, workers, class_weights,
                   seconds, history, started_from) -> dict:
    return {
        "name": name or Path(out).stem,
        "classes": list(CLASSES),
        "pixel_size": spec.model_pixel_size,
        "lattices": list(lattices),
        "normalization": "stemflow.preprocess.normalize (percentiles 0.5/99.5 of a σ=1 px smoothed copy)",
        "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "threads": threads,
                     "workers": workers, "class_weights": list(class_weights), "seconds": seconds,
                     "torch": torch.__version__, "sample_spec": spec.to_dict(), "started_from": started_from},
        "validation": list(history),
        "metrics": {},
    }
