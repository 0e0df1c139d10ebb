"""VOC-LT and COCO-LT: the long-tailed multi-label image benchmarks of the DB-loss protocol (ECCV 2020).

Protocol (REFERENCE section 1):

* ``voc_lt`` -- train: the 1,142 VOC2012 trainval images of the published VOC-LT list, with the list's
  labels; test: VOC2007 test (4,952 images), ids from ``VOC2007/ImageSets/Main/test.txt`` in file order,
  labels from ``VOC2007/Annotations/<id>.xml``: every ``<object><name>`` is a positive, "difficult"
  objects included.  20 classes in alphabetical order.
* ``coco_lt`` -- train: the 1,909 COCO train2017 images of the published COCO-LT list, with the list's
  labels; test: val2017 (5,000 images), in increasing image id, labels from
  ``annotations/instances_val2017.json``: every annotation is a positive, ``iscrowd`` ones included; an
  image without annotations stays in the split with no positive (it only adds negatives).  80 classes;
  class index = position of the category id in the sorted list of category ids, and the category names
  must equal the names of ``coco_lt_meta.json`` (an error otherwise).

The two training lists and their metadata ship with ltjax in ``ltjax/data/lists/`` (from the release of
Wu et al., "Distribution-Balanced Loss for Multi-Label Classification in Long-Tailed Datasets", ECCV 2020;
see the README there); line format ``<image id> <class index> ...``.  The image files and the test
annotations are the user's own copies of the official releases, laid out as::

    voc_lt: data.root = a VOCdevkit folder     coco_lt: data.root = a COCO folder
    VOCdevkit/                                 coco/
    |-- VOC2007/                               |-- train2017/<12-digit id>.jpg
    |   |-- Annotations/<id>.xml               |-- val2017/<file_name in the json>
    |   |-- ImageSets/Main/test.txt            `-- annotations/instances_val2017.json
    |   `-- JPEGImages/<id>.jpg
    `-- VOC2012/
        `-- JPEGImages/<id>.jpg

``data.root`` empty (the default) means ``$LTJAX_DATA_DIR/VOCdevkit`` or ``$LTJAX_DATA_DIR/coco`` when
the environment variable ``LTJAX_DATA_DIR`` is set, else ``~/data/VOCdevkit`` or ``~/data/coco``.
Missing files raise :class:`DatasetFilesError` (a ``FileNotFoundError``) naming the exact path, the
dataset, the expected layout and how to point ltjax at the data.  With ``data.verify_files`` (default)
every image of both splits is checked to exist at build time (``os.path.isfile`` only; no decoding).

The two builders read the lists and annotations into a :class:`~ltjax.data.sources.Source` (ids, image
paths, labels) and :func:`~ltjax.data.sources.dataset_from_source` does the rest: with
``data.storage="array_record"`` (default) the images (encoded, as on disk) and labels are written once by
a tensorflow-datasets builder into array_record files (:mod:`ltjax.data.prepared`) and read from there;
with ``data.storage="files"`` the splits read the JPEGs in place (``split[i]["inputs"]`` is the absolute
path).  ``Dataset.train_transform`` / ``eval_transform`` (from :mod:`ltjax.data.images`) decode, resize
and augment.  Class counts n_c and the head/medium/tail groups
come from the TRAINING labels, so the default thresholds reproduce the published splits (VOC-LT 6/6/8,
COCO-LT 22/33/25).  Dataset fields (``voc_lt_default_config()`` / ``coco_lt_default_config()``) are read
from ``config.data``; a field that is absent there takes its default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from importlib import resources

import ml_collections
import numpy as np

from ltjax.data.base import DATASETS, Dataset
from ltjax.data.sources import with_defaults
from ltjax.errors import DATA_DIR_ENV, DatasetFilesError  # noqa: F401 (re-exported)

VOC_NAME = "voc_lt"
COCO_NAME = "coco_lt"
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
LIST_ORIGIN = (
    'release of "Distribution-Balanced Loss for Multi-Label Classification in Long-Tailed Datasets" '
    "(Wu et al., ECCV 2020), converted to plain text and JSON; shipped in ltjax/data/lists/"
)
ENV_VAR = DATA_DIR_ENV
_DEFAULT_SUBDIR = {VOC_NAME: "VOCdevkit", COCO_NAME: "coco"}
_MAX_LISTED_MISSING = 5

_LAYOUT = {
    VOC_NAME: (
        "<root>/                       a VOCdevkit folder\n"
        "|-- VOC2007/\n"
        "|   |-- Annotations/<id>.xml        (test labels)\n"
        "|   |-- ImageSets/Main/test.txt     (test image ids)\n"
        "|   `-- JPEGImages/<id>.jpg         (test images)\n"
        "`-- VOC2012/\n"
        "    `-- JPEGImages/<id>.jpg         (the 1,142 VOC-LT training images, e.g. 2008_000023.jpg)"
    ),
    COCO_NAME: (
        "<root>/                       a COCO 2017 folder\n"
        "|-- train2017/<id>.jpg              (the 1,909 COCO-LT training images, e.g. 000000554625.jpg)\n"
        "|-- val2017/<file_name>.jpg         (test images, names from the json)\n"
        "`-- annotations/\n"
        "    `-- instances_val2017.json      (test labels)"
    ),
}


def _files_error(dataset: str, what: str, paths, total: int | None = None) -> DatasetFilesError:
    paths = list(paths)
    total = len(paths) if total is None else total
    if total == 1:
        head = f"{dataset}: missing {what}: {paths[0]}"
    else:
        shown = "\n".join(f"  {p}" for p in paths[:_MAX_LISTED_MISSING])
        more = f"\n  ... and {total - _MAX_LISTED_MISSING} more" if total > _MAX_LISTED_MISSING else ""
        head = f"{dataset}: {total} {what} missing, e.g.:\n{shown}{more}"
    sub = _DEFAULT_SUBDIR[dataset]
    return DatasetFilesError(
        f"{head}\n{dataset} expects data.root laid out as:\n{_LAYOUT[dataset]}\n"
        f"Point ltjax at it with --config.data.root=/path/to/{sub}, or set {ENV_VAR}=/path/to/data "
        f"(a folder holding {sub}/); with data.root empty the root is ${ENV_VAR}/{sub}, else ~/data/{sub}."
    )


# ---------------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ImageListSplit:
    """A random-access split of image files: ``split[i] = {"inputs": path, "labels": float32 [C]}``.

    ``paths`` are absolute file paths; ``labels`` is the read-only [N, C] multi-hot float32 matrix.
    """

    paths: tuple[str, ...]
    labels: np.ndarray

    def __post_init__(self):
        labels = np.array(self.labels, dtype=np.float32, copy=True)
        if labels.ndim != 2:
            raise ValueError(f"labels must be a [N, C] multi-hot matrix, got shape {labels.shape}")
        if len(self.paths) != len(labels):
            raise ValueError(f"paths and labels disagree on the number of examples: {len(self.paths)} vs {len(labels)}")
        if not np.isin(labels, (0.0, 1.0)).all():
            raise ValueError("labels must be multi-hot (only 0 and 1)")
        labels.setflags(write=False)
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        return {"inputs": self.paths[index], "labels": self.labels[index]}


# ---------------------------------------------------------------------------------------------------
# the shipped long-tail lists
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LongTailList:
    """One published training list with its metadata (``ltjax/data/lists/<name>_{train.txt,meta.json}``)."""

    name: str
    ids: tuple[str, ...]  # image ids as written in the list
    labels: np.ndarray  # float32 [N, C]
    class_names: tuple[str, ...]
    class_freq: np.ndarray  # int64 [C], the meta's n_c
    class_split: dict  # the published {"head": [...], "middle": [...], "tail": [...]}
    sha256: str  # of the list file


def _list_file(filename: str):
    return resources.files("ltjax.data").joinpath("lists", filename)


def parse_label_list(text: str, num_classes: int, source: str) -> tuple[tuple[str, ...], np.ndarray]:
    """``<image id> <class index> ...`` lines -> (ids, float32 [N, C] multi-hot).  Blank lines are skipped."""
    ids, rows = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            classes = [int(p) for p in parts[1:]]
        except ValueError:
            raise ValueError(f"{source}:{lineno}: class indices must be integers, got {line!r}") from None
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"{source}:{lineno}: class index {bad[0]} outside 0..{num_classes - 1}")
        ids.append(parts[0])
        rows.append(classes)
    if len(set(ids)) != len(ids):
        seen, dup = set(), None
        for i in ids:
            if i in seen:
                dup = i
                break
            seen.add(i)
        raise ValueError(f"{source}: image id {dup!r} is listed more than once")
    labels = np.zeros((len(ids), num_classes), np.float32)
    for r, classes in enumerate(rows):
        labels[r, classes] = 1.0
    return tuple(ids), labels


def load_list(name: str) -> LongTailList:
    """The shipped VOC-LT (``"voc_lt"``) or COCO-LT (``"coco_lt"``) training list, checked against its meta."""
    if name not in _DEFAULT_SUBDIR:
        raise ValueError(f"unknown long-tail list {name!r}; choose one of {', '.join(_DEFAULT_SUBDIR)}")
    meta = json.loads(_list_file(f"{name}_meta.json").read_text(encoding="utf-8"))
    raw = _list_file(f"{name}_train.txt").read_bytes()
    source = f"ltjax/data/lists/{name}_train.txt"
    classes = tuple(meta["classes"])
    ids, labels = parse_label_list(raw.decode("utf-8"), len(classes), source)
    freq = np.asarray(meta["class_freq"], np.int64)
    if len(ids) != meta["num_train_images"] or not np.array_equal(labels.sum(axis=0).astype(np.int64), freq):
        raise ValueError(
            f"{source} disagrees with {name}_meta.json (num_train_images / class_freq): the shipped list is damaged"
        )
    return LongTailList(name, ids, labels, classes, freq, dict(meta["class_split"]), hashlib.sha256(raw).hexdigest())


# ---------------------------------------------------------------------------------------------------
# roots and files
# ---------------------------------------------------------------------------------------------------


def resolve_root(dataset: str, root: str = "") -> str:
    """The absolute data root: ``root`` if given, else ``$LTJAX_DATA_DIR/<sub>``, else ``~/data/<sub>``."""
    if root:
        return os.path.abspath(os.path.expanduser(str(root)))
    base = os.environ.get(ENV_VAR) or os.path.join("~", "data")
    return os.path.abspath(os.path.join(os.path.expanduser(base), _DEFAULT_SUBDIR[dataset]))


def _require_dir(dataset: str, path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise _files_error(dataset, what, [path])


def _require_file(dataset: str, path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise _files_error(dataset, what, [path])


def _verify_images(dataset: str, split: str, paths) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise _files_error(
            dataset, f"{split} image file" + ("" if len(missing) == 1 else "s"), missing[:_MAX_LISTED_MISSING],
            total=len(missing),
        )


# ---------------------------------------------------------------------------------------------------
# test labels
# ---------------------------------------------------------------------------------------------------


def voc_annotation_classes(xml_path: str, class_index: dict[str, int]) -> list[int]:
    """Class index of every ``<object>`` of a VOC annotation file (difficult ones included, repeats kept)."""
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as e:
        raise ValueError(f"{xml_path}: not a valid VOC annotation XML ({e})") from None
    out = []
    for obj in tree.getroot().findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_index:
            raise ValueError(f"{xml_path}: unknown VOC class {name!r}; expected one of {', '.join(class_index)}")
        out.append(class_index[name])
    return out


def voc2007_test(root: str, class_names=VOC_CLASSES, dataset: str = VOC_NAME) -> tuple[list[str], np.ndarray]:
    """VOC2007 test: (ids in ``test.txt`` order, float32 [N, 20] labels from the annotation XMLs)."""
    ids_file = os.path.join(root, "VOC2007", "ImageSets", "Main", "test.txt")
    _require_file(dataset, ids_file, "VOC2007 test image list")
    with open(ids_file, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{ids_file}: no image ids (expected one VOC2007 test id per line, e.g. 000001)")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{ids_file}: an image id is listed more than once")
    ann_dir = os.path.join(root, "VOC2007", "Annotations")
    _require_dir(dataset, ann_dir, "VOC2007 annotation folder")
    xmls = [os.path.join(ann_dir, f"{i}.xml") for i in ids]
    missing = [p for p in xmls if not os.path.isfile(p)]
    if missing:
        raise _files_error(
            dataset, "VOC2007 annotation XML" + ("" if len(missing) == 1 else "s"), missing[:_MAX_LISTED_MISSING],
            total=len(missing),
        )
    class_index = {n: c for c, n in enumerate(class_names)}
    labels = np.zeros((len(ids), len(class_names)), np.float32)
    for r, path in enumerate(xmls):
        labels[r, voc_annotation_classes(path, class_index)] = 1.0
    return ids, labels


def coco_val(annotation_file: str, class_names, dataset: str = COCO_NAME) -> tuple[list[str], np.ndarray]:
    """COCO instances json -> (image file names in increasing image id, float32 [N, C] labels).

    Class index = position of the category id in the sorted category ids; the category names must equal
    ``class_names`` in that order.  Every annotation counts (crowd included).
    """
    _require_file(dataset, annotation_file, "COCO val2017 annotation file")
    with open(annotation_file, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{annotation_file}: not a COCO instances file (no {key!r} field)")
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    names = [c["name"] for c in cats]
    if names != list(class_names):
        diffs = [
            f"position {i}: category id {cats[i]['id']} is {names[i]!r}, expected {class_names[i]!r}"
            for i in range(min(len(names), len(class_names)))
            if names[i] != class_names[i]
        ][:_MAX_LISTED_MISSING]
        raise ValueError(
            f"{annotation_file}: the categories, sorted by id, do not match the {len(class_names)} COCO-LT classes "
            f"({len(names)} categories found)" + ("; " + "; ".join(diffs) if diffs else "")
        )
    cat_index = {int(c["id"]): k for k, c in enumerate(cats)}
    images = sorted(data["images"], key=lambda im: int(im["id"]))
    row = {}
    for r, im in enumerate(images):
        if int(im["id"]) in row:
            raise ValueError(f"{annotation_file}: image id {im['id']} appears twice")
        row[int(im["id"])] = r
    labels = np.zeros((len(images), len(cats)), np.float32)
    for ann in data["annotations"]:
        img, cat = int(ann["image_id"]), int(ann["category_id"])
        if img not in row:
            raise ValueError(f"{annotation_file}: annotation {ann.get('id')} refers to unknown image id {img}")
        if cat not in cat_index:
            raise ValueError(f"{annotation_file}: annotation {ann.get('id')} refers to unknown category id {cat}")
        labels[row[img], cat_index[cat]] = 1.0
    return [im["file_name"] for im in images], labels


def coco_train_file_name(image_id: str) -> str:
    """A COCO-LT list id (an integer COCO image id) -> its train2017 file name, ``%012d.jpg``."""
    if not image_id.isdigit():
        raise ValueError(f"COCO-LT list: image id {image_id!r} is not an integer COCO image id")
    return f"{int(image_id):012d}.jpg"


# ---------------------------------------------------------------------------------------------------
# configs and builders
# ---------------------------------------------------------------------------------------------------


def _default_config() -> ml_collections.ConfigDict:
    from ltjax.data.sources import source_defaults

    c = ml_collections.ConfigDict()
    c.root = ""  # data root; "" = $LTJAX_DATA_DIR/<VOCdevkit|coco>, else ~/data/<VOCdevkit|coco>
    c.update(source_defaults("image"))  # storage, prepared_dir and the image fields
    c.verify_files = True  # check at build time that every image of both splits exists
    return c


def voc_lt_default_config() -> ml_collections.ConfigDict:
    """The ``voc_lt`` fields of ``config.data``: root (a VOCdevkit folder), storage, the image fields, verify_files."""
    return _default_config()


def coco_lt_default_config() -> ml_collections.ConfigDict:
    """The ``coco_lt`` fields of ``config.data``: root (a COCO 2017 folder), storage, the image fields, verify_files."""
    return _default_config()


def _finish(name: str, cfg, root: str, lt: LongTailList, train: ImageListSplit, test: ImageListSplit, extra: dict):
    from ltjax.data.sources import Source, SourceSplit, dataset_from_source

    info = {
        "root": root,
        "train_list": f"ltjax/data/lists/{name}_train.txt (sha256 {lt.sha256})",
        "list_origin": LIST_ORIGIN,
        "test_images_without_labels": int((test.labels.sum(axis=1) == 0).sum()),
        **extra,
    }
    test_ids = tuple(os.path.splitext(os.path.basename(p))[0] for p in test.paths)
    source = Source(
        name=name,
        kind="image",
        class_names=lt.class_names,
        splits={
            "train": SourceSplit(lt.ids, train.paths, train.labels),
            "test": SourceSplit(test_ids, test.paths, test.labels),
        },
        info=info,
    )
    return dataset_from_source(source, cfg)


@DATASETS.register(VOC_NAME)
def build_voc_lt(data_cfg) -> Dataset:
    """VOC-LT: the 1,142-image VOC2012 list for training, VOC2007 test for testing (module docstring)."""
    cfg = with_defaults(data_cfg, voc_lt_default_config())
    root = resolve_root(VOC_NAME, cfg.root)
    _require_dir(VOC_NAME, root, "data root (a VOCdevkit folder)")
    lt = load_list(VOC_NAME)
    if lt.class_names != VOC_CLASSES:
        raise ValueError("ltjax/data/lists/voc_lt_meta.json: classes are not the 20 VOC classes in alphabetical order")
    test_ids, test_labels = voc2007_test(root, lt.class_names)
    train_dir = os.path.join(root, "VOC2012", "JPEGImages")
    test_dir = os.path.join(root, "VOC2007", "JPEGImages")
    train = ImageListSplit(tuple(os.path.join(train_dir, f"{i}.jpg") for i in lt.ids), lt.labels)
    test = ImageListSplit(tuple(os.path.join(test_dir, f"{i}.jpg") for i in test_ids), test_labels)
    if cfg.verify_files:
        _verify_splits(VOC_NAME, (train_dir, "VOC2012 image folder", train), (test_dir, "VOC2007 image folder", test))
    extra = {
        "protocol": "DB-loss VOC-LT: train = VOC-LT list (VOC2012 trainval), test = VOC2007 test; every object "
        "is a positive, difficult ones included; classes alphabetical",
        "test_source": "VOC2007/ImageSets/Main/test.txt + VOC2007/Annotations/<id>.xml",
    }
    return _finish(VOC_NAME, cfg, root, lt, train, test, extra)


def _verify_splits(dataset: str, train: tuple, test: tuple) -> None:
    """Both image folders exist and every listed image is there ((folder, what, split) per split)."""
    for folder, what, _ in (train, test):
        _require_dir(dataset, folder, what)
    for split_name, (_, _, split) in (("train", train), ("test", test)):
        _verify_images(dataset, split_name, split.paths)


@DATASETS.register(COCO_NAME)
def build_coco_lt(data_cfg) -> Dataset:
    """COCO-LT: the 1,909-image train2017 list for training, val2017 for testing (module docstring)."""
    cfg = with_defaults(data_cfg, coco_lt_default_config())
    root = resolve_root(COCO_NAME, cfg.root)
    _require_dir(COCO_NAME, root, "data root (a COCO 2017 folder)")
    lt = load_list(COCO_NAME)
    ann_file = os.path.join(root, "annotations", "instances_val2017.json")
    test_files, test_labels = coco_val(ann_file, lt.class_names)
    train_dir = os.path.join(root, "train2017")
    test_dir = os.path.join(root, "val2017")
    train = ImageListSplit(tuple(os.path.join(train_dir, coco_train_file_name(i)) for i in lt.ids), lt.labels)
    test = ImageListSplit(tuple(os.path.join(test_dir, f) for f in test_files), test_labels)
    if cfg.verify_files:
        _verify_splits(COCO_NAME, (train_dir, "COCO train2017 image folder", train),
                       (test_dir, "COCO val2017 image folder", test))
    extra = {
        "protocol": "DB-loss COCO-LT: train = COCO-LT list (train2017), test = val2017; every annotation is a "
        "positive, crowd included; classes in sorted category-id order",
        "test_source": "annotations/instances_val2017.json",
    }
    return _finish(COCO_NAME, cfg, root, lt, train, test, extra)


DEFAULT_CONFIGS = {VOC_NAME: voc_lt_default_config, COCO_NAME: coco_lt_default_config}
