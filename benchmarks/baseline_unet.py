"""The comparison network: a U-Net of the size AtomAI uses by default (16 base filters, 4 levels,
two 3×3 convolutions per level, max-pooling down, bilinear up), written here for the benchmark.

It gets the same output head as stemflow's network (class logits + two sub-pixel offset channels)
and is trained by the same streamed pipeline for the same number of steps, so the comparison is of
architectures only. Train it with ``python benchmarks/baseline_unet.py --steps N``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CACHE = Path(__file__).parent / "_cache"


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet16(nn.Module):
    """16-32-64-128 U-Net (4 levels), 2 convolutions per level; any input size (padded to 8)."""

    def __init__(self, n_classes: int = 4, nf: int = 16):
        super().__init__()
        self.n_classes = n_classes
        self.config = {"name": "UNet16", "n_classes": n_classes, "nf": nf}
        self.e1, self.e2, self.e3 = _block(1, nf), _block(nf, 2 * nf), _block(2 * nf, 4 * nf)
        self.b = _block(4 * nf, 8 * nf)
        self.d3, self.d2, self.d1 = _block(12 * nf, 4 * nf), _block(6 * nf, 2 * nf), _block(3 * nf, nf)
        self.head = nn.Conv2d(nf, n_classes + 2, 1)

    @property
    def receptive_field(self) -> int:
        return 92

    def forward(self, x):
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        b = self.b(F.max_pool2d(e3, 2))

        def up(t, ref):
            return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)

        d3 = self.d3(torch.cat([up(b, e3), e3], 1))
        d2 = self.d2(torch.cat([up(d3, e2), e2], 1))
        d1 = self.d1(torch.cat([up(d2, e1), e1], 1))
        return self.head(d1)[..., :h, :w]


def load(path=CACHE / "unet16.pt"):
    """The trained baseline wrapped as a stemflow Model (so find_atoms can run it)."""
    import json

    from stemflow.nn.weights import Model

    net = UNet16()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    card = json.loads(Path(path).with_suffix(".json").read_text())
    return Model(net=net, card=card)


if __name__ == "__main__":
    from stemflow.nn.train import train

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    train(CACHE / "unet16.pt", steps=a.steps, workers=a.workers, net=UNet16(), name="unet16-baseline")
