"""Automatic augmentation on the host: RandAugment, AutoAugment (ImageNet policy) and the ASL code's Cutout.

This module owns the *policies* (which operations, with which probability and magnitude) that CSSFE's
recipe cites: AutoAugment (Cubuk et al., CVPR 2019; the paper's citation) and RandAugment (Cubuk et
al., 2020; what the ASL / CPRFL training code that CSSFE builds on runs), plus the ASL code's
``CutoutPIL`` that precedes it there.  The image operations themselves are PIL's (``ImageOps``,
``ImageEnhance``, ``Image.transform`` / ``rotate``), the library torchvision's and timm's versions run
on too.  The policies are written here because every maintained implementation of them is tied to a
framework ltjax does not depend on (torchvision and timm import torch, keras-cv TensorFlow; dm-pix and
augmax have the colour operations but neither policy, nor equalize / posterize / autocontrast).

Every random draw comes from the ``numpy.random.Generator`` the caller passes (the training pipeline
seeds one per stream position), so an example's augmentation depends only on the seed and its
position: resume stays exact and the result does not depend on workers or devices.

Definitions (torchvision's, so that numbers are comparable with the PyTorch code of the field):

* magnitude tables, ``bins`` levels each (31 for RandAugment, 10 for AutoAugment): ShearX/Y
  ``linspace(0, 0.3)``, TranslateX/Y ``linspace(0, 150/331 * width or height)`` pixels, Rotate
  ``linspace(0, 30)`` degrees, Brightness / Color / Contrast / Sharpness ``linspace(0, 0.9)`` (the enhance
  factor is 1 + m), Posterize ``8 - round(level / ((bins - 1) / 4))`` bits, Solarize threshold
  ``linspace(255, 0)``; the geometric and enhance magnitudes take a random sign (a fair coin);
* RandAugment(N=2, M=9): N operations drawn uniformly, with replacement, from Identity, ShearX, ShearY,
  TranslateX, TranslateY, Rotate, Brightness, Color, Contrast, Sharpness, Posterize, Solarize,
  AutoContrast, Equalize, each at level M;
* AutoAugment: one of the 25 sub-policies of the ImageNet policy (the AutoAugment paper's appendix),
  uniformly; each of its two operations applied with its probability at its level;
* geometric operations resample with nearest neighbour (torchvision's default) and fill with black;
  shears are about the top-left corner, rotations about the centre; Color is saturation, Contrast is
  blending with the mean of the grayscale image (PIL's and torchvision's definitions);
* Cutout (the ASL code's ``CutoutPIL(cutout_factor)``): one rectangle whose centre is uniform over the
  image, its height and width ``int(factor * side + 0.5)``, clipped at the border, filled with one random
  RGB colour (each channel uniform in 0..255); applied to every image.

The order in the CSSFE / ASL training transform: resize -> Cutout -> RandAugment -> normalise.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

POLICIES = ("", "randaugment", "autoaugment")

RANDAUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)
SIGNED_OPS = frozenset(("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                        "Contrast", "Sharpness"))
RANDAUGMENT_BINS = 31
AUTOAUGMENT_BINS = 10

# AutoAugment's ImageNet policy: 25 sub-policies of (operation, probability, level in 0..9 or None).
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)


def magnitude(op: str, level: int, bins: int, height: int, width: int) -> float:
    """The unsigned magnitude of ``op`` at ``level`` of ``bins`` (module docstring's tables)."""
    if not 0 <= level < bins:
        raise ValueError(f"augmentation level must lie in [0, {bins - 1}], got {level}")
    frac = level / (bins - 1)
    if op in ("ShearX", "ShearY"):
        return 0.3 * frac
    if op == "TranslateX":
        return 150.0 / 331.0 * width * frac
    if op == "TranslateY":
        return 150.0 / 331.0 * height * frac
    if op == "Rotate":
        return 30.0 * frac
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 0.9 * frac
    if op == "Posterize":
        return float(8 - int(np.round(level / ((bins - 1) / 4))))
    if op == "Solarize":
        return 255.0 * (1.0 - frac)
    return 0.0


def apply_op(img: Image.Image, op: str, mag: float) -> Image.Image:
    """One operation on an RGB PIL image with a signed magnitude (module docstring)."""
    fill = (0, 0, 0)
    if op == "Identity":
        return img
    if op == "ShearX":
        return img.transform(img.size, Image.AFFINE, (1, mag, 0, 0, 1, 0), Image.NEAREST, fillcolor=fill)
    if op == "ShearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, mag, 1, 0), Image.NEAREST, fillcolor=fill)
    if op == "TranslateX":  # content moves right by int(mag) pixels
        return img.transform(img.size, Image.AFFINE, (1, 0, -int(mag), 0, 1, 0), Image.NEAREST, fillcolor=fill)
    if op == "TranslateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, -int(mag)), Image.NEAREST, fillcolor=fill)
    if op == "Rotate":
        return img.rotate(mag, resample=Image.NEAREST, fillcolor=fill)
    if op == "Brightness":
        return ImageEnhance.Brightness(img).enhance(1.0 + mag)
    if op == "Color":
        return ImageEnhance.Color(img).enhance(1.0 + mag)
    if op == "Contrast":
        return ImageEnhance.Contrast(img).enhance(1.0 + mag)
    if op == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(1.0 + mag)
    if op == "Posterize":
        return ImageOps.posterize(img, int(mag))
    if op == "Solarize":
        return ImageOps.solarize(img, mag)
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Invert":
        return ImageOps.invert(img)
    raise ValueError(f"unknown augmentation operation {op!r}")


def _signed(op: str, mag: float, rng: np.random.Generator) -> float:
    if op in SIGNED_OPS and rng.integers(2) == 0:
        return -mag
    return mag


def rand_augment(img: Image.Image, rng: np.random.Generator, num_ops: int = 2, level: int = 9,
                 bins: int = RANDAUGMENT_BINS) -> Image.Image:
    """RandAugment(N=num_ops, M=level): draws per operation: op index, then the sign coin."""
    w, h = img.size
    for _ in range(num_ops):
        op = RANDAUGMENT_OPS[int(rng.integers(len(RANDAUGMENT_OPS)))]
        img = apply_op(img, op, _signed(op, magnitude(op, level, bins, h, w), rng))
    return img


def auto_augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """AutoAugment, ImageNet policy: draws: sub-policy index, two probability draws, two sign coins."""
    w, h = img.size
    sub = IMAGENET_POLICY[int(rng.integers(len(IMAGENET_POLICY)))]
    probs = rng.random(2)
    signs = rng.integers(2, size=2)
    for (op, p, level), u, s in zip(sub, probs, signs):
        if u <= p:
            mag = magnitude(op, level, AUTOAUGMENT_BINS, h, w) if level is not None else 0.0
            img = apply_op(img, op, -mag if (op in SIGNED_OPS and s == 0) else mag)
    return img


def cutout(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """The ASL code's Cutout on uint8 [H, W, 3]: one box of ``int(factor * side + 0.5)`` per side centred
    uniformly (clipped at the border), filled with one random colour.  Returns a new array."""
    h, w = img.shape[:2]
    ch, cw = int(factor * h + 0.5), int(factor * w + 0.5)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    colour = rng.integers(0, 256, size=3).astype(np.uint8)
    out = np.array(img, dtype=np.uint8, copy=True)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out[y0:y1, x0:x1] = colour
    return out


def check_fields(policy: str, num_ops: int, level: int, cutout_factor: float) -> None:
    """Clear errors for the ``config.data`` fields this module reads."""
    if policy not in POLICIES:
        raise ValueError(f"data.auto_augment must be one of {', '.join(repr(p) for p in POLICIES)} ('' = off), "
                         f"got {policy!r}")
    if int(num_ops) < 0:
        raise ValueError(f"data.randaugment_ops must be >= 0, got {num_ops}")
    if not 0 <= int(level) < RANDAUGMENT_BINS:
        raise ValueError(f"data.randaugment_magnitude must lie in [0, {RANDAUGMENT_BINS - 1}], got {level}")
    if not 0.0 <= float(cutout_factor) <= 1.0 or math.isnan(float(cutout_factor)):
        raise ValueError(f"data.cutout_factor must lie in [0, 1] (0 = no cutout), got {cutout_factor}")


def augment(img: np.ndarray, rng: np.random.Generator, policy: str, *, num_ops: int = 2, level: int = 9,
            cutout_factor: float = 0.0) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W, 3]: Cutout (when ``cutout_factor`` > 0), then the policy."""
    if cutout_factor > 0:
        img = cutout(img, cutout_factor, rng)
    if not policy:
        return img
    pil = Image.fromarray(np.ascontiguousarray(img))
    pil = rand_augment(pil, rng, num_ops, level) if policy == "randaugment" else auto_augment(pil, rng)
    return np.asarray(pil)


__all__ = ["IMAGENET_POLICY", "POLICIES", "RANDAUGMENT_OPS", "apply_op", "augment", "auto_augment",
           "check_fields", "cutout", "magnitude", "rand_augment"]
