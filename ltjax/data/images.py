"""Image decoding and the DB-loss / HMT-Net image recipe: decode, random crop, resize, flip, colour jitter.

This module owns everything that turns an image example ``{"inputs": <path or encoded bytes>, ...}``
into ``{"inputs": float32 [size, size, 3] normalised, ...}`` (see ``Dataset.train_transform`` /
``eval_transform`` in :mod:`ltjax.data.base`).  It is a re-implementation, from its description, of the
recipe of the DB-loss code (mmdetection v1: PhotoMetricDistortion, a random crop, Resize with
``keep_ratio=False``, RandomFlip).

Decoding (:func:`decode_image`): PIL; the EXIF orientation is applied (as ``cv2.imread``, which the
reference code used, does); grayscale, palette, CMYK, RGBA, ... are converted to RGB (alpha is dropped,
not composited); 16-bit grayscale is reduced to 8 bits by its top byte.  Result: uint8 [H, W, 3] RGB.

Training transform (``ImageTransform(train=True)``), in this exact order, every random draw from the
``numpy.random.Generator`` the pipeline passes (seeded per stream position; no global RNG):

1. decode (or take the cached decoded image, see *Cache*).
2. random crop (``crop_min_ratio`` r, default 0.8; r = 0 or 1 disables it): the crop height is an
   integer drawn uniformly from ``[ceil(r * H), H]``, the width from ``[ceil(r * W), W]``, and its
   top-left corner uniformly among the positions that keep it inside the image.  As in the DB code, a
   crop whose height/width ratio (in pixels) lies outside ``[0.5, 2]`` is redrawn, up to 50 draws in
   all; when all fail (only for images more elongated than about 2.5:1) the image is not cropped.
3. resize to ``size x size`` (aspect ratio NOT kept), PIL bilinear, on uint8.
4. horizontal flip with probability ``flip_prob`` (0.5).
5. automatic augmentation when asked (``auto_augment``, ``cutout_factor``; off by default): the ASL
   code's Cutout, then RandAugment or AutoAugment on the uint8 image (:mod:`ltjax.data.autoaugment`).
6. photometric distortion (``photometric``), on float32 RGB in the 0-255 pixel scale, in mmdetection's
   order, each part applied with probability 1/2 (a fair coin each):

   a. brightness: add ``delta ~ U[-32, 32]``;
   b. a fair coin picks whether contrast comes now (before the HSV part) or after it (step e);
      contrast: multiply by ``alpha ~ U[0.5, 1.5]`` (a plain scaling, as in mmdetection);
   c. saturation (HSV space): multiply S by ``U[0.5, 1.5]``;
   d. hue (HSV space): add ``U[-18, 18]`` degrees to H, modulo 360;
   e. contrast here if the coin of b said "after";
   f. only with ``channel_swap=True`` (off by default): a random permutation of the three channels,
      with probability 1/2 (mmdetection v1's PhotoMetricDistortion, which the DB code used, ends so).

   The image is clipped to ``[0, 255]`` after every part (brightness, contrast, the HSV round trip),
   so each step sees a valid image; values are kept in float32 (no rounding in between).  HSV follows
   OpenCV's float convention: H in degrees [0, 360), S = (V - min) / V in [0, 1], V = max(R, G, B).
7. normalise ``(x - mean) / std`` with the ImageNet RGB statistics (pixel scale 0-255) -> float32.

Evaluation transform (``train=False``, or ``augment=False`` in the config): decode -> resize ->
normalise; deterministic.

Differences from the reference code, all deliberate: it applied the colour jitter to the full-size image
before cropping and resizing and flipped after normalising; here the point-wise colour jitter runs on the
``size x size`` image (about 4x cheaper for VOC/COCO images; the same distribution up to interpolation)
and the flip precedes it.  The reference did not clip; here values are clipped to the 0-255 range.  The
reference resized with OpenCV (bilinear without antialiasing); PIL's bilinear antialiases when it shrinks.

Cache (``cache=True``, config ``cache_images``): an in-memory dict owned by the transform, keyed by the
source (the path string, or the encoded bytes themselves), holding read-only uint8 images, so that after
the first epoch no image is decoded again.  It holds the image at the last deterministic stage:

* decoded, full size, when a random crop follows (training with ``crop_min_ratio`` in (0, 1)), so that
  crops still vary from epoch to epoch: about 0.56 MB per 500x375 VOC image, 0.9 MB per 640x480 COCO
  image (VOC-LT train ~0.65 GB, COCO-LT train ~1.8 GB);
* decoded and resized otherwise (evaluation, or training without crop): 147 KB per image at 224
  (~0.75 GB for the 5,000 COCO or 4,952 VOC test images).

Outputs are identical with and without the cache.  The cache is not shared between processes: each
grain worker process starts with its own empty cache (pickling a transform drops the cache contents),
so memory grows with the number of workers; threads of one process share it.  It is unbounded.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os

import ml_collections
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ltjax.data import autoaugment
from ltjax.errors import ImageDecodeError

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, pixel scale 0-255
IMAGENET_STD = (58.395, 57.12, 57.375)

BRIGHTNESS_DELTA = 32.0  # brightness: + U[-32, 32]
CONTRAST_RANGE = (0.5, 1.5)  # contrast: * U[0.5, 1.5]
SATURATION_RANGE = (0.5, 1.5)  # saturation: S * U[0.5, 1.5]
HUE_DELTA = 18.0  # hue: H + U[-18, 18] degrees
CROP_ASPECT_LIMIT = 2.0  # crops with height/width outside [1/2, 2] are redrawn ...
CROP_TRIES = 50  # ... up to this many draws in all, then the image is left uncropped

_BYTES_TYPES = (bytes, bytearray, memoryview)


def _describe(src) -> str:
    if isinstance(src, _BYTES_TYPES):
        head = bytes(src[:8])
        return f"image bytes ({len(src)} bytes, starting {head!r})"
    return f"image file {os.fspath(src)!r}"


def _check_source(src) -> None:
    if not isinstance(src, (str, os.PathLike) + _BYTES_TYPES):
        raise TypeError(
            f"an image source must be a file path (str / os.PathLike) or the encoded file's bytes, got "
            f"{type(src).__name__}; give the split's 'inputs' as image paths or encoded image bytes"
        )


def decode_image(src) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` from an image file path or the file's encoded bytes (JPEG, PNG, ...).

    The EXIF orientation is applied; any PIL mode is converted to RGB (alpha dropped).
    """
    _check_source(src)
    try:
        if isinstance(src, _BYTES_TYPES):
            img = Image.open(io.BytesIO(src))
        else:
            img = Image.open(os.fspath(src))
        with img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                gray = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"image file {os.fspath(src)!r} does not exist; check the dataset's image directory "
            "(config.data.root) and that the image set is fully extracted"
        ) from None
    except IsADirectoryError:
        raise IsADirectoryError(
            f"{os.fspath(src)!r} is a directory, not an image file; check the split's image paths"
        ) from None
    except PermissionError as e:
        raise PermissionError(
            f"image file {os.fspath(src)!r} cannot be read ({e.strerror}); fix its permissions"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(
            f"{_describe(src)} is not a readable image ({type(e).__name__}: {e}); the file is corrupt or "
            "truncated: re-download or re-extract it"
        ) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{_describe(src)} decoded to an array of shape {arr.shape} {arr.dtype}, not RGB uint8")
    return arr


def unreadable_images(paths) -> list[tuple[str, str]]:
    """``(path, reason)`` for each existing file in ``paths`` that is empty or whose header no image format
    recognises (a cheap scan: PIL reads the first bytes only; a file truncated later in its data passes here
    and fails when decoded)."""
    bad = []
    for path in paths:
        try:
            if os.path.getsize(path) == 0:
                bad.append((path, "the file is empty (0 bytes)"))
                continue
            with Image.open(path):
                pass
        except FileNotFoundError:
            continue  # reported by the existence check
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            bad.append((path, f"not an image file PIL can read ({type(e).__name__})"))
    return bad


def resize(img: np.ndarray, size) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[h, w, 3]`` with PIL bilinear, aspect ratio not kept.

    ``size`` is an int (square) or ``(h, w)``.
    """
    h, w = (size, size) if np.isscalar(size) else size
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((int(w), int(h)), Image.BILINEAR))


def crop_enabled(min_ratio: float) -> bool:
    """Whether ``crop_min_ratio`` asks for a random crop (0 and 1 both mean no crop)."""
    return 0.0 < float(min_ratio) < 1.0


def random_crop_box(height: int, width: int, min_ratio: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of the random crop (see the module docstring).

    Each side is an integer in ``[ceil(min_ratio * side), side]``; a crop whose pixel height/width ratio
    lies outside ``[1/2, 2]`` is redrawn, up to ``CROP_TRIES`` draws; the full image is returned when
    all fail or the crop is disabled.
    """
    if not crop_enabled(min_ratio):
        return 0, 0, height, width
    min_h = min(height, math.ceil(min_ratio * height))
    min_w = min(width, math.ceil(min_ratio * width))
    for _ in range(CROP_TRIES):
        ch = int(rng.integers(min_h, height + 1))
        cw = int(rng.integers(min_w, width + 1))
        if not 1.0 / CROP_ASPECT_LIMIT <= ch / cw <= CROP_ASPECT_LIMIT:
            continue
        top = int(rng.integers(0, height - ch + 1))
        left = int(rng.integers(0, width - cw + 1))
        return top, left, ch, cw
    return 0, 0, height, width


# ----------------------------------------------------------------------------------------------
# colour space and photometric distortion (float RGB in the 0-255 scale)


def _hsv_planes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, g, b = np.moveaxis(np.asarray(x, dtype=np.float32), -1, 0).copy()  # contiguous planes: ~3x faster
    v = np.maximum(np.maximum(r, g), b)
    d = v - np.minimum(np.minimum(r, g), b)
    dd = np.where(d > 0, d, np.float32(1))
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * dd, r - g + 4 * dd))
    h *= np.float32(60)
    h /= dd
    h[d == 0] = 0
    h[h < 0] += 360
    s = np.divide(d, v, out=np.zeros_like(v), where=v > 0)
    return h, s, v


def _rgb_from_planes(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV planes (H already in [0, 360)) -> RGB [..., 3] float32."""
    h6 = h * np.float32(1 / 60)
    vs = v * s
    out = np.empty(h.shape + (3,), np.float32)
    k = np.empty_like(h6)
    w = np.empty_like(h6)
    for c, offset in enumerate((5, 3, 1)):  # R, G, B
        np.add(h6, np.float32(offset), out=k)
        np.subtract(k, 6, out=k, where=k >= 6)  # (offset + H / 60) mod 6
        np.subtract(4, k, out=w)
        np.minimum(w, k, out=w)
        np.clip(w, 0, 1, out=w)
        np.multiply(vs, w, out=w)
        np.subtract(v, w, out=out[..., c])
    return out


def rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """RGB ``[..., 3]`` (any non-negative scale) -> HSV: H degrees in [0, 360), S in [0, 1], V = max.

    OpenCV's float convention (and ``colorsys``'s, with H scaled by 360 and V by the pixel scale);
    a gray pixel has H = 0, a black one S = 0.  Ties for the maximum go to R, then G.
    """
    return np.stack(_hsv_planes(x), axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv` (H taken modulo 360; S is not clipped, so S > 1 can give negatives).

    Channel c = V - V * S * clip(min(k, 4 - k), 0, 1) with k = (n_c + H / 60) mod 6, n = (5, 3, 1).
    """
    h, s, v = np.moveaxis(np.asarray(hsv, dtype=np.float32), -1, 0)
    return _rgb_from_planes(np.mod(h, np.float32(360)), s, v)


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255, out=x)


def adjust_brightness(x: np.ndarray, delta: float) -> np.ndarray:
    """``clip(x + delta, 0, 255)`` in float32."""
    return _clip(np.asarray(x, np.float32) + np.float32(delta))


def adjust_contrast(x: np.ndarray, alpha: float) -> np.ndarray:
    """``clip(x * alpha, 0, 255)`` in float32 (mmdetection's contrast: a scaling, not around the mean)."""
    return _clip(np.asarray(x, np.float32) * np.float32(alpha))


def adjust_hsv(x: np.ndarray, saturation: float = 1.0, hue: float = 0.0) -> np.ndarray:
    """RGB -> HSV, S *= ``saturation``, H += ``hue`` degrees (mod 360), -> RGB, clip to [0, 255]."""
    h, s, v = _hsv_planes(x)
    if saturation != 1.0:
        s *= np.float32(saturation)
    if hue != 0.0:
        h = np.mod(h + np.float32(hue), np.float32(360))
    return _clip(_rgb_from_planes(h, s, v))


def photometric_distort(x: np.ndarray, rng: np.random.Generator, *, channel_swap: bool = False) -> np.ndarray:
    """mmdetection's photometric distortion on a float RGB image in the 0-255 scale (order in the module doc).

    Draws, in order: brightness coin [delta], contrast-position coin, (contrast first:) contrast coin
    [alpha], saturation coin [factor], hue coin [shift], (contrast last:) contrast coin [alpha],
    (``channel_swap``:) swap coin [permutation].  Returns float32 in [0, 255].
    """
    x = _clip(np.array(x, dtype=np.float32))
    if rng.integers(2):
        x = adjust_brightness(x, rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    contrast_first = bool(rng.integers(2))
    if contrast_first and rng.integers(2):
        x = adjust_contrast(x, rng.uniform(*CONTRAST_RANGE))
    saturation = rng.uniform(*SATURATION_RANGE) if rng.integers(2) else 1.0
    hue = rng.uniform(-HUE_DELTA, HUE_DELTA) if rng.integers(2) else 0.0
    if saturation != 1.0 or hue != 0.0:
        x = adjust_hsv(x, saturation, hue)
    if not contrast_first and rng.integers(2):
        x = adjust_contrast(x, rng.uniform(*CONTRAST_RANGE))
    if channel_swap and rng.integers(2):
        x = np.ascontiguousarray(x[..., rng.permutation(3)])
    return x


def normalize(x: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """``(x - mean) / std`` per RGB channel -> float32."""
    out = np.subtract(x, np.asarray(mean, np.float32), dtype=np.float32)
    out /= np.asarray(std, np.float32)
    return out


def denormalize(x, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Inverse of :func:`normalize` for looking at images: float ``[..., 3]`` -> uint8 (rounded, clipped)."""
    x = np.asarray(x, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# the transform


def image_defaults() -> ml_collections.ConfigDict:
    """The image fields of ``config.data`` that :meth:`ImageTransform.from_config` reads."""
    c = ml_collections.ConfigDict()
    c.image_size = 224  # images are resized to image_size x image_size (aspect ratio not kept)
    c.augment = True  # training images get the DB-loss augmentations (crop, flip, photometric)
    c.flip_prob = 0.5  # probability of a horizontal flip
    c.photometric = True  # brightness / contrast / saturation / hue jitter
    c.crop_min_ratio = 0.8  # random crop keeps at least this fraction of each side (0 or 1: no crop)
    c.cache_images = False  # keep decoded images in memory (per process) so later epochs skip decoding
    # The DB-loss code's photometric distortion also permutes the colour channels with probability
    # 1/2; REFERENCE section 2 does not list it, so it is off by default (True = the code's recipe).
    c.channel_swap = False
    # Automatic augmentation (ltjax/data/autoaugment.py), after the flip, before the photometric part:
    # "" (off), "randaugment" (N = randaugment_ops, M = randaugment_magnitude of 31 levels) or
    # "autoaugment" (the ImageNet policy); cutout_factor > 0 adds the ASL code's Cutout before it.
    c.auto_augment = ""
    c.randaugment_ops = 2
    c.randaugment_magnitude = 9
    c.cutout_factor = 0.0
    return c


def _cache_key(src):
    if isinstance(src, str):
        return src
    if isinstance(src, os.PathLike):
        return os.fspath(src)
    if isinstance(src, bytes):
        return src
    if isinstance(src, (bytearray, memoryview)):
        return bytes(src)
    return None


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Example transform ``{"inputs": path | bytes, ...} -> {"inputs": float32 [size, size, 3], ...}``.

    ``t(example, rng)`` for training (``train=True``: ``rng`` is required), ``t(example)`` for
    evaluation; keys other than ``"inputs"`` pass through.  Picklable (grain workers); a pickled copy
    starts with an empty cache.  ``inputs`` may also be an already-decoded uint8 ``[H, W, 3]`` array
    (never cached).
    """

    size: int = 224
    train: bool = False
    flip_prob: float = 0.5
    photometric: bool = True
    crop_min_ratio: float = 0.8
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    cache: bool = False
    channel_swap: bool = False  # mmdetection v1's random channel permutation (photometric part f; needs photometric)
    auto_augment: str = ""  # "" | "randaugment" | "autoaugment" (ltjax/data/autoaugment.py)
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    cutout_factor: float = 0.0  # the ASL code's Cutout (0 = off)

    def __post_init__(self):
        size = self.size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"image size must be a positive integer (data.image_size), got {size!r}")
        if not 0.0 <= float(self.flip_prob) <= 1.0:
            raise ValueError(f"flip_prob must lie in [0, 1] (data.flip_prob), got {self.flip_prob}")
        if not 0.0 <= float(self.crop_min_ratio) <= 1.0:
            raise ValueError(
                f"crop_min_ratio must lie in [0, 1] (data.crop_min_ratio; 0 or 1 disables the crop), "
                f"got {self.crop_min_ratio}"
            )
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need one value per RGB channel, got mean={self.mean} std={self.std}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        autoaugment.check_fields(self.auto_augment, self.randaugment_ops, self.randaugment_magnitude,
                                 self.cutout_factor)
        object.__setattr__(self, "size", int(size))
        object.__setattr__(self, "flip_prob", float(self.flip_prob))
        object.__setattr__(self, "crop_min_ratio", float(self.crop_min_ratio))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "_cache", {} if self.cache else None)

    @classmethod
    def from_config(cls, data_cfg, train: bool, hflip_preserves_labels: bool = True) -> "ImageTransform":
        """The train (``train=True``) or eval transform from ``config.data``; absent fields take
        :func:`image_defaults`.  ``augment=False`` makes the training transform the evaluation one.
        An optional ``channel_swap`` field (not among the defaults) switches on part f.  A dataset whose
        labels a horizontal flip would change (``hflip_preserves_labels=False``) gets ``flip_prob`` 0."""
        defaults = image_defaults()

        def field(key, default=None):
            if key in data_cfg:
                return data_cfg[key]
            return defaults[key] if key in defaults else default

        return cls(
            size=field("image_size"),
            train=bool(train) and bool(field("augment")),
            flip_prob=field("flip_prob") if hflip_preserves_labels else 0.0,
            photometric=bool(field("photometric")),
            crop_min_ratio=field("crop_min_ratio"),
            cache=bool(field("cache_images")),
            channel_swap=bool(field("channel_swap", False)),
            auto_augment=str(field("auto_augment")),
            randaugment_ops=int(field("randaugment_ops")),
            randaugment_magnitude=int(field("randaugment_magnitude")),
            cutout_factor=float(field("cutout_factor")),
        )

    @property
    def automatic(self) -> bool:
        """Whether training images get Cutout or an automatic augmentation policy."""
        return self.train and (bool(self.auto_augment) or self.cutout_factor > 0)

    # -- cache -----------------------------------------------------------------------------

    @property
    def _caches_full_size(self) -> bool:
        """Whether the cached image precedes a random crop (kept full size) or is already resized."""
        return self.train and crop_enabled(self.crop_min_ratio)

    def cache_size(self) -> int:
        """Number of images held in this process's cache (0 without a cache)."""
        return 0 if self._cache is None else len(self._cache)

    def clear_cache(self) -> None:
        if self._cache is not None:
            self._cache.clear()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {} if self.cache else None  # each worker process fills its own
        return state

    # -- the transform ---------------------------------------------------------------------

    def _load(self, src) -> np.ndarray:
        """The image at the cacheable stage: decoded (full size) or decoded + resized."""
        if isinstance(src, np.ndarray):
            if src.ndim == 0:  # a 0-d array holding a path or bytes
                src = src.item()
            elif src.dtype == np.uint8 and src.ndim == 3 and src.shape[2] == 3:
                return src if self._caches_full_size else resize(src, self.size)
            else:
                raise ValueError(
                    f"an array in 'inputs' must be a decoded uint8 [H, W, 3] RGB image, got {src.shape} {src.dtype}; "
                    "otherwise give an image path or the encoded bytes"
                )
        key = _cache_key(src) if self._cache is not None else None
        if key is not None:
            img = self._cache.get(key)
            if img is not None:
                return img
        img = decode_image(src)
        if not self._caches_full_size:
            img = resize(img, self.size)
        if key is not None:
            img.flags.writeable = False
            self._cache[key] = img
        return img

    def image(self, src, rng: np.random.Generator | None = None) -> np.ndarray:
        """One source -> float32 ``[size, size, 3]`` normalised (the body of ``__call__``)."""
        img = self._load(src)
        if not self.train:
            return normalize(img, self.mean, self.std)
        if rng is None:
            raise ValueError(
                "the training ImageTransform needs a numpy Generator: call t(example, rng) (the training "
                "pipeline passes one per stream position), or use train=False for evaluation"
            )
        if crop_enabled(self.crop_min_ratio):
            top, left, ch, cw = random_crop_box(img.shape[0], img.shape[1], self.crop_min_ratio, rng)
            img = img[top : top + ch, left : left + cw]
        img = resize(img, self.size)
        if self.flip_prob > 0 and rng.random() < self.flip_prob:
            img = img[:, ::-1]
        if self.automatic:
            img = autoaugment.augment(img, rng, self.auto_augment, num_ops=self.randaugment_ops,
                                      level=self.randaugment_magnitude, cutout_factor=self.cutout_factor)
        if self.photometric:
            img = photometric_distort(img, rng, channel_swap=self.channel_swap)
        return normalize(img, self.mean, self.std)

    def __call__(self, example: dict, rng: np.random.Generator | None = None) -> dict:
        if "inputs" not in example:
            raise KeyError(f"an image example needs an 'inputs' entry (path or bytes); it has keys {sorted(example)}")
        out = dict(example)
        try:
            out["inputs"] = self.image(example["inputs"], rng)
        except ValueError as e:  # name the example: its source may be bytes (a prepared dataset)
            which = ", ".join(f"{k} {np.asarray(example[k]).item()!r}" for k in ("id", "index") if k in example
                              and np.ndim(example[k]) == 0)
            raise ImageDecodeError(f"example {which or '(no id)'}: {e}") from None
        return out

    def denormalize(self, x) -> np.ndarray:
        """:func:`denormalize` with this transform's mean and std."""
        return denormalize(x, self.mean, self.std)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hsv",
    "decode_image",
    "unreadable_images",
    "denormalize",
    "hsv_to_rgb",
    "image_defaults",
    "normalize",
    "photometric_distort",
    "random_crop_box",
    "resize",
    "rgb_to_hsv",
]
