"""Adaptation without labels: fine-tune a model on a user's own, unlabelled frames.

Self-training with a frozen teacher. The teacher (the model to adapt) looks at each frame under
the eight flips and quarter-turns and averages its class probabilities (test-time
augmentation); the blobs of the averaged maps (:func:`stemflow.locating.locate`) whose mean class
probability is at least ``confidence`` become pseudo-labels — disks of their class, exactly as
the simulator's truth is drawn — and pixels that the teacher is sure are background become
background. Everything else (uncertain blobs and their surroundings, uncertain pixels) is
ignored by the loss. A student, initialised as the teacher, is then trained on random crops of
the frames under flips, turns, contrast, blur and added noise (so that its answer must not
depend on them: consistency under augmentation), with a share of simulated samples in every
batch so that it does not forget what the simulator taught it. Batch-norm statistics follow the
user's frames, which alone removes much of a change of domain.

Pure torch/numpy: it runs wherever the model runs. Units: pixel sizes in nm/px; crops and
disks on the network's grid (``model.pixel_size``).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError, check_positive
from ..locating import locate
from ..preprocess import normalize, resample
from .weights import Model, load_model

__all__ = ["adapt", "AdaptResult", "pseudo_labels", "tta_maps"]

IGNORE = -100   # target code of pixels the loss ignores


@dataclass
class AdaptResult:
    """What :func:`adapt` made.

    Attributes
    ----------
    model : Model
        The adapted model (in memory; ``save`` writes it with its card).
    report : DataFrame
        One row per frame: rows found per class by the model before and after, and the share of
        the frame's pixels that carried a pseudo-label.
    card : dict
        The adapted model's card (the teacher's, plus an ``adaptation`` entry).
    """

    model: Model
    report: pd.DataFrame
    card: dict

    def save(self, path):
        """Write ``NAME.pt`` and ``NAME.json``; return the ``.pt`` path."""
        from .weights import save_model

        return save_model(self.model.net, self.card, path)


def _dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Apply a flip of the last axis (x) then ``np.rot90(·, k)`` to the last two axes."""
    if flip:
        x = x[..., ::-1]
    return np.rot90(x, k, axes=(-2, -1))


def _undihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    x = np.rot90(x, -k, axes=(-2, -1))
    if flip:
        x = x[..., ::-1]
    return x


def tta_maps(model: Model, small: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities averaged over the eight flips and quarter-turns of a normalised frame
    on the network's grid, and the offsets of the untransformed pass.

    Returns
    -------
    probs : ndarray (n_classes, H, W)
    offsets : ndarray (2, H, W) or None
    """
    variants = [(k, f) for f in (False, True) for k in range(4)]
    c = model.net.n_classes
    acc = None
    offsets = None
    for k, f in variants:
        x = np.ascontiguousarray(_dihedral(small, k, f))
        p, off = model.maps(x[None], batch_size=1)
        p = np.ascontiguousarray(_undihedral(p[0], k, f))
        acc = p if acc is None else acc + p
        if k == 0 and not f and off is not None:
            offsets = off[0]
    return (acc / len(variants)).astype(np.float32)[:c], offsets


def pseudo_labels(model: Model, small: np.ndarray, confidence: float = 0.9) -> dict:
    """Pseudo-labels of one normalised frame on the network's grid.

    Returns
    -------
    dict
        ``yx`` (n, 2) px and ``codes`` (n,) of the confident blobs; ``ignore`` (H, W) bool —
        pixels the loss skips; ``table`` the teacher's blobs (:func:`stemflow.locating.locate`).
    """
    probs, offsets = tta_maps(model, small)
    classes = model.classes
    t = locate(probs, small, classes=classes, offsets=offsets)
    code = {c: i for i, c in enumerate(classes)}
    sure = t["prob"].to_numpy() >= confidence
    radius = float(model.card.get("training", {}).get("sample_spec", {}).get("mask_radius", 0.5)) / (10 * model.pixel_size)
    h, w = small.shape
    ignore = probs[0] < confidence          # not sure it is background
    from ..simulate.imaging import class_mask

    # every blob's surroundings are ignored, then the confident blobs' own disks are labelled
    if len(t):
        near = class_mask(t[["y", "x"]].to_numpy(), np.ones(len(t), np.uint8), (h, w), 1.3 * radius) > 0
        ignore |= near
    yx = t.loc[sure, ["y", "x"]].to_numpy()
    codes = t.loc[sure, "label"].astype(str).map(code).to_numpy(np.uint8)
    return {"yx": yx, "codes": codes, "ignore": ignore, "table": t, "radius": radius}


def _crop(small, lab, p, rng):
    """A random crop of side ``p`` under a random flip and quarter-turn, with its targets."""
    from ..augment import targets, transform_points

    h, w = small.shape
    y0 = int(rng.integers(0, h - p + 1))
    x0 = int(rng.integers(0, w - p + 1))
    img = small[y0:y0 + p, x0:x0 + p]
    ign = lab["ignore"][y0:y0 + p, x0:x0 + p]
    fy, fx, k = bool(rng.random() < 0.5), bool(rng.random() < 0.5), int(rng.integers(4))
    if fy:
        img, ign = img[::-1], ign[::-1]
    if fx:
        img, ign = img[:, ::-1], ign[:, ::-1]
    img = np.ascontiguousarray(np.rot90(img, k))
    ign = np.ascontiguousarray(np.rot90(ign, k))
    yx = lab["yx"] - [y0, x0]
    mask, off = targets(transform_points(yx, p, fy, fx, k), lab["codes"], (p, p), lab["radius"])
    target = mask.astype(np.int64)
    target[ign & (mask == 0)] = IGNORE
    return img, target, off


def _photometric(img: np.ndarray, rng) -> np.ndarray:
    """Contrast, blur and noise that must not change the answer."""
    from scipy import ndimage

    x = img.astype(np.float32)
    lo = float(x.min())
    if rng.random() < 0.5:
        x = (x - lo) ** np.float32(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))) + lo
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, rng.uniform(0.3, 0.8))
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(0.01, 0.06), x.shape).astype(np.float32)
    return x.astype(np.float32)


def _loss(output, target, offsets, weights):
    c = len(weights)
    loss = F.cross_entropy(output[:, :c], target, weight=weights, ignore_index=IGNORE)
    if output.shape[1] > c:
        on = (target > 0).unsqueeze(1).expand_as(offsets)
        if on.any():
            loss = loss + F.smooth_l1_loss(output[:, c:][on], offsets[on], beta=0.5)
    return loss


def _frames(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim == 3:
            return list(images)
        raise InputError(f"adapt takes images (y, x), stacks (frame, y, x) or a list of images; got shape {images.shape}")
    out = []
    for im in images:
        out += _frames(np.asarray(im))
    return out


def adapt(images, pixel_size, model=None, *, steps: int = 150, batch_size: int = 8, lr: float = 3e-4,
          confidence: float = 0.7, sim_share: float = 0.25, patch: int = 128, seed: int = 0,
          progress: bool = True) -> AdaptResult:
    """Fine-tune a model on unlabelled frames by self-training on its confident answers.

    Parameters
    ----------
    images : ndarray or sequence of ndarray
        The user's frames: (y, x), (frame, y, x), or a list of either (counts, any real dtype).
    pixel_size : float or sequence of float
        Sampling of the frames, nm/px (one value, or one per frame).
    model : Model, str or Path, optional
        The model to adapt (default: the bundled ``"default"``); it is not changed.
    steps, batch_size, lr : int, int, float
        Optimisation (AdamW, cosine decay from ``lr``).
    confidence : float
        Teacher blobs whose mean class probability (averaged over eight flips and turns) is at
        least this become pseudo-labels (0.7 and 150 steps were chosen on the real dev sets:
        0.9 and 200 steps left too few heavy-atom pseudo-labels and lowered F1, see
        ``benchmarks/results/adapt_real*.md``); pixels whose background probability is below it, and
        the surroundings of every other blob, are ignored.
    sim_share : float
        Share of each batch drawn from simulated samples with exact truth (0 turns it off).
    patch : int
        Side of the training crops on the network's grid, px.
    seed : int
        Makes the run repeatable.

    Returns
    -------
    AdaptResult
        ``.model`` (use it as ``find_atoms(..., model=result.model)``), ``.report`` (per-frame rows
        per class before and after, pseudo-labelled share), ``.save(path)``.

    Examples
    --------
    >>> from stemflow.nn.adapt import adapt
    >>> result = adapt(frames, pixel_size=0.0078, steps=200)          # doctest: +SKIP
    >>> result.report[["rows_before", "rows_after"]]                   # doctest: +SKIP
    >>> result.save("my_microscope.pt")                                # doctest: +SKIP
    """
    frames = _frames(images)
    if not frames:
        raise InputError("adapt needs at least one frame")
    sizes = np.broadcast_to(np.asarray(pixel_size, dtype=np.float64), (len(frames),))
    for v in sizes:
        check_positive(v, "pixel_size", "nm/px")
    check_positive(steps, "steps", "optimisation steps")
    if not 0.5 <= confidence < 1:
        raise InputError(f"confidence={confidence} must lie in [0.5, 1)")
    if not 0 <= sim_share < 1:
        raise InputError(f"sim_share={sim_share} must lie in [0, 1)")
    teacher = model if isinstance(model, Model) else load_model(model or "default")
    teacher.net.eval()
    rng = np.random.default_rng([seed, 31])
    torch.manual_seed(seed)

    smalls, labels = [], []
    digest = hashlib.sha256()
    for f, px in zip(frames, sizes):
        f = np.asarray(f, np.float32)
        digest.update(np.ascontiguousarray(f).tobytes())
        small = normalize(resample(f, px / teacher.pixel_size))
        if min(small.shape) < patch:
            pad = [(0, max(0, patch - small.shape[0])), (0, max(0, patch - small.shape[1]))]
            small = np.pad(small, pad, mode="reflect")
        smalls.append(small)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(smalls) + steps, desc="adapting", unit="step")
    for s in smalls:
        labels.append(pseudo_labels(teacher, s, confidence))
        if bar is not None:
            bar.update(1)

    n_sim = int(round(batch_size * sim_share))
    sim_pool = []
    if n_sim:
        from ..augment import SampleSpec, training_batches

        spec = SampleSpec(patch=patch, model_pixel_size=teacher.pixel_size)
        gen = training_batches(seed + 7, 16, spec)
        for _ in range(max(1, (4 * n_sim + 15) // 16)):
            xs, ys, offs = next(gen)
            sim_pool += list(zip(xs[:, 0], ys, offs))

    student = copy.deepcopy(teacher.net)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(steps))
    cw = teacher.card.get("training", {}).get("class_weights", [1.0, 1.5, 6.0, 6.0])
    weights = torch.tensor(cw[:student.n_classes], dtype=torch.float32)
    t0 = time.perf_counter()
    losses = []
    for step in range(int(steps)):
        xs, ys, offs = [], [], []
        for _ in range(batch_size - n_sim):
            i = int(rng.integers(len(smalls)))
            img, target, off = _crop(smalls[i], labels[i], patch, rng)
            xs.append(_photometric(img, rng))
            ys.append(target)
            offs.append(off)
        for j in rng.choice(len(sim_pool), n_sim, replace=len(sim_pool) < n_sim) if n_sim else []:
            x, y, o = sim_pool[j]
            xs.append(x)
            ys.append(y)
            offs.append(o)
        x = torch.from_numpy(np.stack(xs)[:, None])
        y = torch.from_numpy(np.stack(ys).astype(np.int64))
        o = torch.from_numpy(np.stack(offs))
        loss = _loss(student(x), y, o, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    if bar is not None:
        bar.close()
    student.eval()
    card = copy.deepcopy(teacher.card)
    card.pop("sha256", None)
    card["name"] = f"{teacher.name}-adapted"
    card["adaptation"] = {
        "from": {"name": teacher.name, "sha256": teacher.card.get("sha256")},
        "frames": len(frames), "frames_sha256": digest.hexdigest(), "pixel_sizes": sorted(set(map(float, sizes))),
        "steps": int(steps), "batch_size": batch_size, "lr": lr, "confidence": confidence,
        "sim_share": sim_share, "patch": patch, "seed": seed, "seconds": time.perf_counter() - t0,
        "loss_first_last": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        "method": "self-training on test-time-augmented confident pseudo-labels, consistency under "
                  "flips/turns/contrast/blur/noise, simulated samples mixed in",
    }
    adapted = Model(student, card)
    report = _report(teacher, adapted, smalls, labels)
    card["adaptation"]["report"] = report.drop(columns=["frame"]).sum().to_dict()
    return AdaptResult(adapted, report, card)


def _report(teacher: Model, student: Model, smalls, labels) -> pd.DataFrame:
    rows = []
    for i, (s, lab) in enumerate(zip(smalls, labels)):
        row = {"frame": i, "pseudo_labelled_share": float(1 - lab["ignore"].mean()),
               "pseudo_labels": int(len(lab["yx"]))}
        for tag, m in (("before", teacher), ("after", student)):
            p, off = m.maps(s[None], batch_size=1)
            t = locate(p[0], s, classes=m.classes, offsets=None if off is None else off[0])
            row[f"rows_{tag}"] = len(t)
            for c in m.classes[1:]:
                row[f"{c}_{tag}"] = int((t["label"].astype(str) == c).sum())
        rows.append(row)
    return pd.DataFrame(rows)
