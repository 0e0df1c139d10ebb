"""Device-resident datasets: a small split lives on the accelerators and the DB augmentations run there.

With ``data.on_device = True`` the host no longer decodes, crops, jitters and normalises images every
step (a 2-core host gives ~200-350 images/s at 224 px through :mod:`ltjax.data.images`, far below what a
GPU ResNet-50 step consumes).  Instead, once before training:

* images: every image of the split is decoded (PIL, EXIF orientation applied, as
  :func:`ltjax.data.images.decode_image`) and resized to the *store* size, kept as uint8
  ``[N, Hs, Ws, 3]``; its original ``(H, W)`` is kept too.  The training store is

  - ``S x S`` with ``S = data.device_store_size`` or, when that is 0, ``ceil(image_size /
    crop_min_ratio)`` with the random crop (so the smallest crop still holds ``image_size`` pixels per
    side) and ``image_size`` without it;
  - but the native size when every training image has the same size, no larger than ``S`` per side
    (e.g. ``tiles_voc_lt``): nothing is resampled before the crop, as in the host pipeline.

  The evaluation store is the evaluation transform's image exactly (decode -> resize to ``image_size``,
  PIL bilinear), so device evaluation gives the host evaluation's scores.
* features (``ArraySplit`` datasets such as ``synthetic_lt`` / ``yeast``): the float inputs themselves;
* text: the token ids of every document, from the dataset's deterministic transform (tokenise, look up,
  pad / cut to ``max_length``) applied once, instead of every time a document is drawn.

The stores are placed replicated on every device of the mesh (``jax.make_array_from_callback``, so the
same code runs multi-host; each process reads the split itself).  The grain pipeline then carries only
``index`` (example), ``position`` (global stream position), ``labels`` and, for images, ``size``; the
jitted train step gathers ``store[index]`` and, for images, applies :func:`augment_batch`:

1. random crop of the ORIGINAL image's pixel grid, as :func:`ltjax.data.images.random_crop_box`: height
   an integer in ``[ceil(r H), H]``, width in ``[ceil(r W), W]``, redrawn (50 draws in all, here drawn at
   once and the first acceptable one taken) while the pixel height/width ratio is outside ``[1/2, 2]``,
   the full image when all fail; top-left uniform.  The box is mapped to the store's grid and resampled
   to ``image_size x image_size`` in one step with ``jax.image.scale_and_translate`` (bilinear with
   antialiasing, the filter PIL's bilinear uses; near the crop border the filter may read pixels just
   outside the box, where PIL's cropped image clamps);
2. horizontal flip with probability ``flip_prob`` (never for a dataset whose meta says flips change its labels);
3. the photometric distortion of :func:`ltjax.data.images.photometric_distort`, parts a-f with the same
   probabilities and ranges (brightness, contrast before or after the HSV part, saturation, hue, the
   optional channel permutation), clipped to [0, 255] after each part;
4. normalisation with the ImageNet statistics.

Every draw of example ``i`` comes from ``fold_in(fold_in(rng, AUGMENT_TAG), position_i)``: an example's
augmentation depends only on the seed and its stream position, not on the device count, the batch it
sits in or a resume, so a killed run resumes exactly and a sharded step equals a one-device step.  The
random numbers differ from the host pipeline's numpy ones, so the two modes give the same distribution
of augmented images, not the same images.

Memory: the stores must fit in every device's memory; :func:`check_budget` refuses stores larger than
``data.device_max_gb`` with a message that names the sizes and the fix.  A dataset whose host transform
is random and not the image recipe cannot be kept on the devices (a clear error says so), nor can one
whose training images get the automatic augmentation of :mod:`ltjax.data.autoaugment` (host only).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.data import images as host_images

AUGMENT_TAG = 0x61756700  # folded into the step's rng for the augmentation stream ("aug")


# ----------------------------------------------------------------------------------------------
# host side: building the stores


def _exif_swaps(img) -> bool:
    try:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a broken EXIF block: decode_image will decide
        return False


def image_size_of(src) -> tuple[int, int]:
    """``(H, W)`` of an image source after EXIF orientation, from its header (no decoding)."""
    import io

    from PIL import Image

    if isinstance(src, np.ndarray) and src.ndim == 3:
        return int(src.shape[0]), int(src.shape[1])
    if isinstance(src, np.ndarray) and src.ndim == 0:
        src = src.item()
    host_images._check_source(src)
    try:
        img = Image.open(io.BytesIO(src)) if isinstance(src, (bytes, bytearray, memoryview)) else Image.open(src)
        with img:
            w, h = img.size
            swap = _exif_swaps(img)
    except Exception:  # noqa: BLE001 - let the decoder give the clear error
        h, w = host_images.decode_image(src).shape[:2]
        return int(h), int(w)
    return (int(w), int(h)) if swap else (int(h), int(w))


def _decode(src) -> np.ndarray:
    if isinstance(src, np.ndarray) and src.ndim == 0:
        src = src.item()
    return src if isinstance(src, np.ndarray) else host_images.decode_image(src)


def _parallel_map(fn, items, threads: int):
    if threads <= 1 or len(items) < 16:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # PIL releases the GIL while decoding
        return list(pool.map(fn, items, chunksize=16))


def split_items(split) -> list:
    """The raw ``inputs`` of every example of a split (paths, encoded bytes or arrays)."""
    return [split[int(i)]["inputs"] for i in range(len(split))]


@dataclasses.dataclass(frozen=True)
class HostStore:
    """A split's inputs as one host array, ready to be placed on the devices."""

    inputs: np.ndarray  # uint8 [N, Hs, Ws, 3] (images) or the feature array [N, ...]
    sizes: np.ndarray | None  # int32 [N, 2]: the original (H, W) of each image (images only)
    seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        return int(self.inputs.nbytes)

    def describe(self) -> str:
        shape = "x".join(str(d) for d in self.inputs.shape[1:])
        return f"{len(self.inputs)} x {shape} {self.inputs.dtype} ({self.nbytes / 2**20:.1f} MiB, built in {self.seconds:.1f} s)"


def train_store_size(sizes: np.ndarray, image_size: int, crop_min_ratio: float, requested: int = 0) -> tuple[int, int]:
    """The ``(Hs, Ws)`` training images are stored at (module doc)."""
    if requested:
        return int(requested), int(requested)
    side = int(image_size)
    if host_images.crop_enabled(crop_min_ratio):
        side = math.ceil(image_size / float(crop_min_ratio) - 1e-9)
    if len(sizes) and (sizes == sizes[0]).all() and sizes[0][0] <= side and sizes[0][1] <= side:
        return int(sizes[0][0]), int(sizes[0][1])  # one small native size: nothing resampled before the crop
    return side, side


def image_store(split, size_hw=None, *, image_size: int = 224, crop_min_ratio: float = 0.0,
                requested: int = 0, threads: int | None = None, max_gb: float = 8.0) -> HostStore:
    """Decode and resize every image of ``split``.  ``size_hw`` fixes the stored size (evaluation:
    ``(image_size, image_size)``); else :func:`train_store_size` chooses it."""
    t0 = time.perf_counter()
    threads = threads or min(16, os.cpu_count() or 1)
    items = split_items(split)
    if size_hw is None:  # the rule needs every image's size first: read the headers only
        headers = np.asarray(_parallel_map(image_size_of, items, threads), np.int32).reshape(-1, 2)
        size_hw = train_store_size(headers, image_size, crop_min_ratio, requested)
    check_budget(len(items) * size_hw[0] * size_hw[1] * 3, f"{len(items)} images at {size_hw[0]}x{size_hw[1]}", max_gb)
    out = np.empty((len(items), size_hw[0], size_hw[1], 3), np.uint8)
    sizes = np.empty((len(items), 2), np.int32)

    def fill(i):
        img = _decode(items[i])
        sizes[i] = img.shape[:2]
        out[i] = host_images.resize(img, size_hw)

    _parallel_map(fill, list(range(len(items))), threads)
    return HostStore(out, sizes, time.perf_counter() - t0)


def features_store(split, transform=None) -> HostStore:
    """A split's inputs as one array: as held (``ArraySplit``), or each example through a deterministic
    ``transform`` (e.g. text -> token ids), applied once here instead of every time it is drawn."""
    t0 = time.perf_counter()
    if transform is not None:
        inputs = np.stack([np.asarray(transform(split[int(i)])["inputs"]) for i in range(len(split))])
    elif hasattr(split, "inputs"):
        inputs = np.asarray(split.inputs)
    else:
        inputs = np.stack([np.asarray(x) for x in split_items(split)])
    if not (np.issubdtype(inputs.dtype, np.number) or inputs.dtype == np.bool_):
        raise ValueError(
            f"data.on_device: the split's inputs are {inputs.dtype} (e.g. paths or documents), not numeric arrays, "
            "and the dataset has no deterministic transform that makes them so; set data.on_device=false"
        )
    return HostStore(inputs, None, time.perf_counter() - t0)


def check_budget(nbytes: int, what: str, max_gb: float) -> None:
    """Refuse a device store of ``nbytes`` above ``max_gb`` GiB (``data.device_max_gb``)."""
    limit = float(max_gb)
    if nbytes > limit * 2**30:
        raise ValueError(
            f"data.on_device: {what} take {nbytes / 2**30:.2f} GiB per device, above data.device_max_gb={limit:g}; "
            "this dataset is too large to keep on the devices: set data.on_device=false (host pipeline), "
            "lower data.image_size / data.device_store_size, or raise data.device_max_gb if the devices have "
            "the memory"
        )


# ----------------------------------------------------------------------------------------------
# device side: colour space, photometric distortion, crop + resize (pure jnp, per example)


def rgb_to_hsv(x):
    """jnp version of :func:`ltjax.data.images.rgb_to_hsv` (H degrees [0, 360), S [0, 1], V = max)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = jnp.maximum(jnp.maximum(r, g), b)
    d = v - jnp.minimum(jnp.minimum(r, g), b)
    dd = jnp.where(d > 0, d, 1.0)
    h = jnp.where(v == r, g - b, jnp.where(v == g, b - r + 2 * dd, r - g + 4 * dd)) * 60.0 / dd
    h = jnp.where(d == 0, 0.0, h)
    h = jnp.where(h < 0, h + 360.0, h)
    s = jnp.where(v > 0, d / jnp.where(v > 0, v, 1.0), 0.0)
    return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv):
    """jnp version of :func:`ltjax.data.images.hsv_to_rgb` (H taken modulo 360)."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    h6 = jnp.mod(h, 360.0) / 60.0
    vs = v * s
    chans = []
    for offset in (5.0, 3.0, 1.0):
        k = h6 + offset
        k = jnp.where(k >= 6, k - 6, k)
        w = jnp.clip(jnp.minimum(4.0 - k, k), 0.0, 1.0)
        chans.append(v - vs * w)
    return jnp.stack(chans, axis=-1)


def _clip(x):
    return jnp.clip(x, 0.0, 255.0)


def photometric_params(key, channel_swap: bool = False) -> dict:
    """The random parameters of one photometric distortion (coins as bools, values, a permutation)."""
    ks = jax.random.split(key, 10)
    u = lambda k, lo, hi: jax.random.uniform(k, (), jnp.float32, lo, hi)  # noqa: E731
    coin = lambda k: jax.random.bernoulli(k)  # noqa: E731
    p = {
        "brightness_on": coin(ks[0]),
        "brightness": u(ks[1], -host_images.BRIGHTNESS_DELTA, host_images.BRIGHTNESS_DELTA),
        "contrast_first": coin(ks[2]),
        # one contrast coin and factor: only one of the two contrast slots can be active, so this has the
        # host pipeline's distribution (which draws a coin in whichever slot the position coin chose)
        "contrast_on": coin(ks[3]),
        "contrast": u(ks[4], *host_images.CONTRAST_RANGE),
        "saturation_on": coin(ks[5]),
        "saturation": u(ks[6], *host_images.SATURATION_RANGE),
        "hue_on": coin(ks[7]),
        "hue": u(ks[8], -host_images.HUE_DELTA, host_images.HUE_DELTA),
    }
    if channel_swap:
        k_on, k_perm = jax.random.split(ks[9])
        p["swap_on"] = coin(k_on)
        p["permutation"] = jax.random.permutation(k_perm, 3)
    return p


def photometric_apply(x, p: dict):
    """The photometric distortion with given parameters (see :func:`photometric_params`) on float RGB
    in the 0-255 scale, ``[H, W, 3]``; each part is applied where its coin is on."""
    x = _clip(x)
    x = jnp.where(p["brightness_on"], _clip(x + p["brightness"]), x)
    x = jnp.where(p["contrast_first"] & p["contrast_on"], _clip(x * p["contrast"]), x)
    sat = jnp.where(p["saturation_on"], p["saturation"], 1.0)
    hue = jnp.where(p["hue_on"], p["hue"], 0.0)
    hsv = rgb_to_hsv(x)
    hsv = jnp.stack([jnp.mod(hsv[..., 0] + hue, 360.0), hsv[..., 1] * sat, hsv[..., 2]], axis=-1)
    x = jnp.where(p["saturation_on"] | p["hue_on"], _clip(hsv_to_rgb(hsv)), x)
    x = jnp.where(~p["contrast_first"] & p["contrast_on"], _clip(x * p["contrast"]), x)
    if "swap_on" in p:
        x = jnp.where(p["swap_on"], x[..., p["permutation"]], x)
    return x


def crop_box(key, height, width, min_ratio: float):
    """``(top, left, crop_h, crop_w)`` float32 for an original image of ``height x width`` pixels (traced
    ints), the rule of :func:`ltjax.data.images.random_crop_box` with its 50 draws made at once."""
    height = jnp.asarray(height, jnp.int32)
    width = jnp.asarray(width, jnp.int32)
    if not host_images.crop_enabled(min_ratio):
        z = jnp.zeros((), jnp.float32)
        return z, z, height.astype(jnp.float32), width.astype(jnp.float32)
    tries = host_images.CROP_TRIES
    k_h, k_w, k_t, k_l = jax.random.split(key, 4)
    min_h = jnp.minimum(height, jnp.ceil(min_ratio * height.astype(jnp.float32) - 1e-6).astype(jnp.int32))
    min_w = jnp.minimum(width, jnp.ceil(min_ratio * width.astype(jnp.float32) - 1e-6).astype(jnp.int32))
    ch = jax.random.randint(k_h, (tries,), min_h, height + 1)
    cw = jax.random.randint(k_w, (tries,), min_w, width + 1)
    ratio = ch.astype(jnp.float32) / cw.astype(jnp.float32)
    ok = (ratio >= 1.0 / host_images.CROP_ASPECT_LIMIT) & (ratio <= host_images.CROP_ASPECT_LIMIT)
    first = jnp.argmax(ok)
    found = ok.any()
    ch = jnp.where(found, ch[first], height)
    cw = jnp.where(found, cw[first], width)
    top = jax.random.randint(k_t, (), 0, height - ch + 1)
    left = jax.random.randint(k_l, (), 0, width - cw + 1)
    f = lambda v: v.astype(jnp.float32)  # noqa: E731
    return f(top), f(left), f(ch), f(cw)


def crop_resize(img, box, original_hw, size: int):
    """Resample the crop ``box`` (in the original image's pixels) of ``img`` (a stored ``[Hs, Ws, C]``
    float image, a resize of the original) to ``size x size``: bilinear, antialiased when shrinking."""
    top, left, ch, cw = box
    hs, ws = img.shape[0], img.shape[1]
    sy = hs / original_hw[0].astype(jnp.float32)
    sx = ws / original_hw[1].astype(jnp.float32)
    scale = jnp.stack([size / (ch * sy), size / (cw * sx)])
    translation = -jnp.stack([top * sy, left * sx]) * scale
    return jax.image.scale_and_translate(
        img, (size, size, img.shape[2]), (0, 1), scale, translation, method="linear", antialias=True
    )


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """The static part of the on-device training transform (from ``config.data``)."""

    size: int
    augment: bool = True
    flip_prob: float = 0.5
    photometric: bool = True
    crop_min_ratio: float = 0.8
    channel_swap: bool = False
    mean: tuple = host_images.IMAGENET_MEAN
    std: tuple = host_images.IMAGENET_STD

    @classmethod
    def from_transform(cls, t: host_images.ImageTransform) -> "AugmentSpec":
        return cls(
            size=t.size, augment=t.train, flip_prob=t.flip_prob, photometric=t.photometric,
            crop_min_ratio=t.crop_min_ratio, channel_swap=t.channel_swap, mean=t.mean, std=t.std,
        )


def normalize(x, mean=host_images.IMAGENET_MEAN, std=host_images.IMAGENET_STD):
    return (x.astype(jnp.float32) - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment_one(img_u8, original_hw, key, spec: AugmentSpec):
    """One stored uint8 image -> float32 ``[size, size, 3]`` normalised (the training transform)."""
    x = img_u8.astype(jnp.float32)
    k_crop, k_flip, k_photo = jax.random.split(key, 3)
    if not spec.augment:
        if x.shape[:2] != (spec.size, spec.size):
            x = crop_resize(x, crop_box(k_crop, original_hw[0], original_hw[1], 1.0), original_hw, spec.size)
        return normalize(x, spec.mean, spec.std)
    box = crop_box(k_crop, original_hw[0], original_hw[1], spec.crop_min_ratio)
    x = crop_resize(x, box, original_hw, spec.size)
    if spec.flip_prob > 0:
        x = jnp.where(jax.random.uniform(k_flip) < spec.flip_prob, x[:, ::-1], x)
    if spec.photometric:
        x = photometric_apply(x, photometric_params(k_photo, spec.channel_swap))
    return normalize(x, spec.mean, spec.std)


def example_keys(rng, positions, stream_tag: int = 0):
    """Per-example keys: ``fold_in(fold_in(rng, AUGMENT_TAG), position)`` (a stream other than the first
    phase's first one, ``stream_tag`` > 0, folds its tag in after ``AUGMENT_TAG``)."""
    base = jax.random.fold_in(rng, AUGMENT_TAG)
    if stream_tag:
        base = jax.random.fold_in(base, int(stream_tag))
    return jax.vmap(lambda p: jax.random.fold_in(base, p))(positions.astype(jnp.uint32))


def augment_batch(images_u8, original_hw, positions, rng, spec: AugmentSpec, stream_tag: int = 0):
    """uint8 ``[B, Hs, Ws, 3]`` -> float32 ``[B, size, size, 3]``, each example keyed by its position."""
    keys = example_keys(rng, positions, stream_tag)
    return jax.vmap(lambda im, hw, k: augment_one(im, hw, k, spec))(images_u8, original_hw, keys)


# ----------------------------------------------------------------------------------------------
# the experiment-facing object


def _place_replicated(array: np.ndarray, sharding) -> jax.Array:
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


class DeviceData:
    """The stores of one dataset on the mesh and the functions the jitted steps call on them.

    ``batch_inputs(batch, rng)`` -> model inputs for a training batch ``{"store", "index", "labels"}``
    (+ ``"position"`` and ``"size"`` for images); ``eval_inputs(store, index)`` -> the evaluation inputs.
    """

    def __init__(self, dataset, data_cfg, replicated_sharding):
        kind = dataset.meta.input_kind
        t = dataset.train_transform
        if t is None:  # inputs held as arrays (features, or images already decoded): gathered as they are
            kind = "features"
        self.precompute = None  # a deterministic transform applied once per example (text: token ids)
        if kind != "image" and t is not None:
            if not getattr(t, "deterministic", False) or not getattr(dataset.eval_transform, "deterministic", False):
                raise ValueError(
                    f"data.on_device: {dataset.meta.name} has a random per-example host transform "
                    f"({type(t).__name__}) that the device pipeline cannot run; set data.on_device=false"
                )
            self.precompute = {"train": t, "eval": dataset.eval_transform}
            kind = "features"
        self.kind = kind
        self.dataset = dataset
        self.replicated = replicated_sharding
        self.max_gb = float(data_cfg.get("device_max_gb", 8.0))
        self._eval = {}
        train = dataset.split("train")
        if kind == "image":
            if not isinstance(t, host_images.ImageTransform):
                raise ValueError(
                    f"data.on_device needs the image transform of ltjax.data.images for {dataset.meta.name}; "
                    "this dataset brings its own: set data.on_device=false"
                )
            if t.automatic:
                raise ValueError(
                    f"data.auto_augment={t.auto_augment!r} / data.cutout_factor={t.cutout_factor:g}: the automatic "
                    "augmentation (ltjax/data/autoaugment.py) runs in the host pipeline only; set "
                    "data.on_device=false, or data.auto_augment='' and data.cutout_factor=0 for the DB recipe's "
                    "augmentation on the devices"
                )
            self.spec = AugmentSpec.from_transform(t)
            if not dataset.meta.hflip_preserves_labels:  # flips would change this dataset's labels
                self.spec = dataclasses.replace(self.spec, flip_prob=0.0)
            host = image_store(
                train, image_size=self.spec.size, crop_min_ratio=self.spec.crop_min_ratio if self.spec.augment else 0.0,
                requested=int(data_cfg.get("device_store_size", 0)), max_gb=self.max_gb,
            )
        else:
            self.spec = None
            host = features_store(train, None if self.precompute is None else self.precompute["train"])
            check_budget(host.nbytes, f"the {len(host.inputs)} training examples", self.max_gb)
        self.train_sizes = host.sizes
        self.train_store = _place_replicated(host.inputs, replicated_sharding)
        self.messages = [f"on_device: train store {host.describe()}"]

    # -- training ------------------------------------------------------------------------------

    def batch_inputs(self, batch, rng, stream_tag: int = 0):
        images = jnp.take(batch["store"], batch["index"], axis=0)
        if self.kind == "features":
            return images
        return augment_batch(images, batch["size"], batch["position"], rng, self.spec, stream_tag)

    def host_extras(self):
        """Per-example host arrays the index pipeline adds to each batch (gathered by index)."""
        extras = {"size": self.train_sizes} if self.kind == "image" else {}
        hidden = getattr(self.dataset.split("train"), "hidden_mask", None)
        if hidden is not None:  # partial labels (ltjax/data/partial.py): which positives were hidden
            extras["hidden"] = hidden
        return extras

    @property
    def uses_positions(self) -> bool:
        """Whether batches carry stream positions (the augmentation keys; features need none)."""
        return self.kind == "image"

    def batch_keys(self) -> tuple[str, ...]:
        """The per-example entries of a training batch (all split over the data axis)."""
        return ("index", "labels", *(("position",) if self.uses_positions else ()), *self.host_extras())

    # -- evaluation ----------------------------------------------------------------------------

    def eval_store(self, split_name: str) -> jax.Array:
        if split_name not in self._eval:
            split = self.dataset.split(split_name)
            if self.kind == "image":
                host = image_store(split, (self.spec.size, self.spec.size), max_gb=self.max_gb)
            else:
                host = features_store(split, None if self.precompute is None else self.precompute["eval"])
                check_budget(host.nbytes, f"the {len(host.inputs)} {split_name} examples", self.max_gb)
            self.messages.append(f"on_device: {split_name} store {host.describe()}")
            self._eval[split_name] = _place_replicated(host.inputs, self.replicated)
        return self._eval[split_name]

    def eval_inputs(self, store, index):
        x = jnp.take(store, index, axis=0)
        if self.kind == "features":
            return x
        return normalize(x, self.spec.mean, self.spec.std)
