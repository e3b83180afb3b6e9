"""The fully convolutional network: a small encoder–decoder with a dilated bottleneck.

Four scales (1, 1/2, 1/4, 1/8 of the input), strided convolutions down, bilinear upsampling and
skip connections up, and dilated 3×3 convolutions at 1/8 scale so that the receptive field spans
several lattice spacings (a vacancy is recognised by its neighbours). Widths are kept small at full
resolution, where most pixels are, which is what makes it fast on CPUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AtomNet"]


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class AtomNet(nn.Module):
    """Encoder–decoder FCN: (B, 1, H, W) normalised image → (B, n_classes [+ 2], H, W).

    The first ``n_classes`` output channels are class logits; with ``offsets`` two more give, at
    every pixel of an atom's blob, the sub-pixel vector (dy, dx) from the pixel to the column's
    centre (px). Trained on exact truth, they make positions far finer than the pixel grid.

    Parameters
    ----------
    n_classes : int
        Output classes (background, lattice, dopant, vacancy by default).
    offsets : bool
        Add the two offset channels.
    widths : tuple of 4 ints
        Channels at scales 1, 1/2, 1/4 and 1/8.
    dilations : tuple of int
        Dilation of each bottleneck convolution at 1/8 scale.

    Notes
    -----
    Any input size works: the input is padded (reflect) to a multiple of 8 and the output cropped
    back. The receptive field is :attr:`receptive_field` px (on the network's grid).
    """

    def __init__(self, n_classes: int = 4, widths=(8, 16, 32, 48), dilations=(2, 4), offsets: bool = True):
        super().__init__()
        a, b, c, d = (int(w) for w in widths)
        self.config = {"n_classes": int(n_classes), "widths": [a, b, c, d], "dilations": [int(x) for x in dilations],
                       "offsets": bool(offsets)}
        self.n_classes = int(n_classes)
        self.enc1 = _conv(1, a)
        self.enc2 = nn.Sequential(_conv(a, b, stride=2), _conv(b, b))
        self.enc3 = nn.Sequential(_conv(b, c, stride=2), _conv(c, c))
        self.bottleneck = nn.Sequential(_conv(c, d, stride=2), *[_conv(d, d, dilation=k) for k in dilations])
        self.dec3 = _conv(d + c, c)
        self.dec2 = _conv(c + b, b)
        self.dec1 = _conv(b + a, a)
        self.head = nn.Conv2d(a, n_classes + (2 if offsets else 0), 1)

    @property
    def receptive_field(self) -> int:
        """Receptive field of one output pixel, px (on the network's grid)."""
        rf, jump = 1, 1
        layers = [(3, 1, 1)]  # enc1
        layers += [(3, 2, 1), (3, 1, 1)] * 2  # enc2, enc3
        layers += [(3, 2, 1)] + [(3, 1, k) for k in self.config["dilations"]]
        for k, s, dil in layers:
            rf += (k - 1) * dil * jump
            jump *= s
        # decoder: a bilinear ×2 upsampling (reaching one coarse pixel each side) then a 3 × 3
        # convolution, at 1/4, 1/2 and 1
        for j in (4, 2, 1):
            rf += 2 * (2 * j) + 2 * j
        return rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        z = self.bottleneck(e3)
        z = self.dec3(torch.cat([F.interpolate(z, size=e3.shape[-2:], mode="bilinear", align_corners=False), e3], 1))
        z = self.dec2(torch.cat([F.interpolate(z, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        z = self.dec1(torch.cat([F.interpolate(z, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        out = self.head(z)
        return out[..., :h, :w]
