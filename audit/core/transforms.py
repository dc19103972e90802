"""The image transformations a generator's training augmentation produces: a mirror and small
shifts. What a generator memorises can come out mirrored or moved by a pixel or two (nearly every
image generator trains with random flips and crops), and pixel metrics (SSIM, HaarPSI, L2) see
such a copy as a stranger: a 1-px shift of a digit is usually not nearest its own source. So a
released image is compared with each private image under every transformation here, and the
score is the best of them.

A transformation maps a reference image t(m): mirror first (left-right), then shift by (dy, dx)
pixels, the pixels shifted in repeating the edge (a neutral fill: a zero border would favour
generators that reproduce the augmentation's zero padding, a wrapped one invents content).
Exact-copy checks compare only the pixels both images hold (`overlap`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Transform:
    mirror: bool = False
    dy: int = 0  # rows down (negative: up)
    dx: int = 0  # columns right (negative: left)

    @property
    def is_identity(self) -> bool:
        """Whether the transformation leaves an image as it is (no mirror, no shift).

        Returns:
            True when mirror is off and dy == dx == 0.
        """
        return not self.mirror and self.dy == 0 and self.dx == 0

    @property
    def name(self) -> str:
        """The transformation's name: "identity", "mirror", "shift(+1,-2)" (dy, dx) or
        "mirror+shift(+0,+1)".

        Returns:
            The name, shifts signed ("+0" for no shift along an axis).
        """
        if self.is_identity:
            return "identity"
        parts = ["mirror"] if self.mirror else []
        if self.dy or self.dx:
            parts.append(f"shift({self.dy:+d},{self.dx:+d})")
        return "+".join(parts)

    @classmethod
    def from_name(cls, name: str) -> Transform:
        """The inverse of .name (run directories record transformations by name).

        Args:
            name: a transformation's name, as .name writes it.

        Returns:
            The transformation of that name.

        Raises:
            ValueError: the name is empty or not of .name's form.
        """
        found = re.fullmatch(r"(identity)|(mirror)?\+?(?:shift\(([+-]\d+),([+-]\d+)\))?", name)
        if not name or found is None:
            raise ValueError(f"not a transformation name: {name!r}")
        if found.group(1):
            return cls()
        return cls(bool(found.group(2)), int(found.group(3) or 0), int(found.group(4) or 0))


IDENTITY = Transform()


def augmentations(*, max_shift: int, mirror: bool) -> tuple[Transform, ...]:
    """Every shift of at most max_shift px along each axis, each also mirrored when mirror is
    set; the identity first (index 0), then by mirror, |dy| + |dx|, dy, dx.

    Args:
        max_shift: the largest shift along each axis in pixels, >= 0 (0: no shifts).
        mirror: also list every shift mirrored.

    Returns:
        (2 * max_shift + 1)^2 transformations, twice as many with mirror, identity first.

    Raises:
        ValueError: max_shift < 0.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    shifts = range(-max_shift, max_shift + 1)
    found = [
        Transform(flip, dy, dx)
        for flip in ((False, True) if mirror else (False,))
        for dy in shifts
        for dx in shifts
    ]
    return tuple(sorted(found, key=lambda t: (t.mirror, abs(t.dy) + abs(t.dx), t.dy, t.dx)))


def apply(images: torch.Tensor, t: Transform) -> torch.Tensor:
    """t applied to float NCHW images (edge pixels repeated into what the shift uncovers).

    Args:
        images: (N, C, H, W) tensor, float pixels in [0, 1] (apply_uint8 passes uint8).
        t: the transformation.

    Returns:
        (N, C, H, W) transformed images, same dtype and device; `images` itself for the
        identity.

    Raises:
        ValueError: the shift, max(|dy|, |dx|), is not smaller than min(H, W).
    """
    if t.mirror:
        images = images.flip(-1)
    if t.dy == 0 and t.dx == 0:
        return images
    h, w = images.shape[-2:]
    pad = max(abs(t.dy), abs(t.dx))
    if pad >= min(h, w):
        raise ValueError(f"a shift of {pad} px does not fit {h}x{w} images")
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    top, left = pad - t.dy, pad - t.dx
    return padded[..., top : top + h, left : left + w]


def apply_uint8(images: np.ndarray, t: Transform) -> np.ndarray:
    """t applied to uint8 NHWC images (for the gallery and exact-copy checks).

    Args:
        images: (N, H, W, C) uint8, pixels in [0, 255].
        t: the transformation.

    Returns:
        (N, H, W, C) uint8 transformed images (for the identity, possibly sharing `images`'
        memory).

    Raises:
        ValueError: the shift, max(|dy|, |dx|), is not smaller than min(H, W).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return apply(x, t).permute(0, 2, 3, 1).contiguous().numpy()


def overlap(t: Transform, h: int, w: int) -> tuple[slice, slice]:
    """The rows and columns of t(m) that hold m's own pixels (not the repeated edge).

    Args:
        t: the transformation (its mirror moves no pixel out of the image).
        h: image height in pixels.
        w: image width in pixels.

    Returns:
        (rows, cols): slices of t(m)'s rows and columns, (h - |dy|) and (w - |dx|) long.
    """
    rows = slice(max(t.dy, 0), h + min(t.dy, 0))
    cols = slice(max(t.dx, 0), w + min(t.dx, 0))
    return rows, cols
