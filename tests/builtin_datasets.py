"""Small copies of every registered dataset, made from the fixture trees and files of each dataset's own
tests, for the tests that check a method runs on all of them (CSSFE on the image datasets, COMIC on every
dataset, HTTN on the text datasets).

A builder takes ``(tmp_path, request)`` and returns ``(config.data, number of classes, expected groups or
None)``; ``request`` reaches the fixtures some of them need (``voc_lt_meta`` / ``coco_lt_meta`` from
conftest, ``cache`` from test_tiles: a module using the tiles builder imports ``cache, mnist`` from
test_tiles).  The lists of registered names come from the registry, so a new dataset without a builder
here fails those tests.  ``tiny_run_config`` puts a method with a tiny model on one of these copies.
"""
from __future__ import annotations

from test_custom import _image_bytes


def _published_split(meta):  # tests/data/*_lt_meta.json "class_split" -> head / medium / tail
    return {"head": meta["class_split"]["head"], "medium": meta["class_split"]["middle"],
            "tail": meta["class_split"]["tail"]}


def _voc_lt(tmp_path, request):
    from test_voc_coco import data_config, make_voc

    root = make_voc(tmp_path / "VOCdevkit", _image_bytes("JPEG"))
    return data_config("voc_lt", root), 20, _published_split(request.getfixturevalue("voc_lt_meta"))


def _coco_lt(tmp_path, request):
    from test_voc_coco import data_config, make_coco

    meta = request.getfixturevalue("coco_lt_meta")
    root = make_coco(tmp_path / "coco", _image_bytes("JPEG"), meta["classes"])
    return data_config("coco_lt", root), 80, _published_split(meta)


def _chestxray14(tmp_path, request):
    from test_medical import data_config, make_nih

    c = data_config("chestxray14", make_nih(tmp_path / "chestxray14"))
    c.groups.mode = "quantile"
    return c, 14, None


def _odir5k(tmp_path, request):
    from test_medical import data_config, make_odir

    c = data_config("odir5k", make_odir(tmp_path / "odir5k", fmt="csv"))
    c.groups.mode = "quantile"
    return c, 8, None


def _custom(tmp_path, request):
    # the rows of test_custom.test_train_and_evaluate_through_the_cli: with head_min 10 and tail_max 5 the
    # classes bird, cat, dog, eel, fish fall in tail, head, medium, tail, tail
    from test_custom import cfg, write_e2e

    c = cfg(write_e2e(tmp_path / "custom"), split_column="split")
    c.groups.head_min, c.groups.tail_max = 10, 5
    return c, 5, {"head": [1], "medium": [2], "tail": [0, 3, 4]}


def _tiles_voc_lt(tmp_path, request):
    from test_tiles import data_config

    request.getfixturevalue("cache")  # a temporary LTJAX_CACHE_DIR holding MNIST (test_tiles)
    # VOC-LT's label sets: the published VOC-LT groups (test_tiles.test_counts_and_groups_equal_voc_lt)
    return data_config(), 20, _published_split(request.getfixturevalue("voc_lt_meta"))


IMAGE_BUILDERS = {"voc_lt": _voc_lt, "coco_lt": _coco_lt, "chestxray14": _chestxray14,
                           "odir5k": _odir5k, "custom": _custom, "tiles_voc_lt": _tiles_voc_lt}


def registered_image_datasets():
    """The registered datasets with image fields in their config (each is checked to build as an image dataset)."""
    from ltjax.data import DATASETS, dataset_defaults

    return [n for n in DATASETS.names() if "image_size" in dataset_defaults(n)]


def registered_text_datasets():
    """The registered datasets with text fields in their config, and ``custom`` (``data.kind=text``)."""
    from ltjax.data import DATASETS, dataset_defaults

    return [n for n in DATASETS.names() if "max_length" in dataset_defaults(n) or n == "custom"]


def _corpus(tmp_path):
    """test_text.write_corpus's learnable corpus (6 classes, 96 train / 48 test documents) as rows."""
    from test_text import write_corpus

    root = write_corpus(tmp_path / "corpus")
    read = lambda f: (root / f).read_text().splitlines()
    return root, {s: list(zip(read(f"text_{s}"), read(f"label_{s}"))) for s in ("train", "test")}


def _text_fields(c):
    c.min_freq, c.max_length = 1, 16
    c.groups.mode = "quantile"
    return c


def _text_lines(tmp_path, request):
    from test_text import data_config

    root, _ = _corpus(tmp_path)
    return _text_fields(data_config("text_lines", root)), 6, None


def _text_jsonl(tmp_path, request):
    from test_text import data_config, write_jsonl

    _, rows = _corpus(tmp_path)
    return _text_fields(data_config("text_jsonl", write_jsonl(tmp_path / "jsonl", rows))), 6, None


def _custom_text(tmp_path, request):
    import csv

    from test_custom import cfg

    _, rows = _corpus(tmp_path)
    manifest = tmp_path / "docs.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "labels", "split"])
        for split, docs in rows.items():
            w.writerows([d, "|".join(labels.split()), split] for d, labels in docs)
    return _text_fields(cfg(manifest, kind="text", split_column="split")), 6, None


def _reports(name, **fields):
    from ltjax import assets
    from ltjax.data import dataset_defaults
    from ltjax.data import reports as R
    from ltjax.defaults import base_config

    def build(tmp_path, request):
        assets.fetch(R.PADCHEST_ASSET if name == "padchest_reports" else R.IU_XRAY_ASSET)  # missing: a failure
        c = base_config().data
        c.update(dataset_defaults(name))
        c.name = name
        c.prepared_dir = str(tmp_path / "prepared")
        c.update(fields)
        return _text_fields(c), None, None

    return build


TEXT_BUILDERS = {"text_lines": _text_lines, "text_jsonl": _text_jsonl, "custom": _custom_text,
                 "iu_xray_reports": _reports("iu_xray_reports", max_records=600),
                 "padchest_reports": _reports("padchest_reports", max_records=3000, min_count=10)}


def _synthetic_lt(tmp_path, request):
    from helpers import small_synthetic_config

    return small_synthetic_config().data, None, None


def _yeast(tmp_path, request):
    from ltjax.data import dataset_defaults
    from ltjax.defaults import base_config

    c = base_config().data
    c.update(dataset_defaults("yeast"))
    c.name = "yeast"
    return c, 14, None


FEATURE_BUILDERS = {"synthetic_lt": _synthetic_lt, "yeast": _yeast}


def every_dataset_case():
    """``(name, kind)`` for every registered dataset and input kind it has (``custom`` twice)."""
    from ltjax.data import DATASETS

    cases = []
    for name in DATASETS.names():
        kinds = [k for k, names in (("image", registered_image_datasets()), ("text", registered_text_datasets()))
                 if name in names] or ["features"]
        cases += [(name, k) for k in kinds]
    return cases


def builder(name, kind):
    """The builder of ``name`` as a ``kind`` dataset; a clear failure for a registered dataset without one."""
    table = {"image": IMAGE_BUILDERS, "text": TEXT_BUILDERS, "features": FEATURE_BUILDERS}[kind]
    if name not in table:
        raise LookupError(f"{kind} dataset {name!r} has no builder in tests/builtin_datasets.py; add one")
    return table[name]


_MODELS = {"image": "glyphnet", "text": "text_pool", "features": "mlp"}


def tiny_run_config(name, kind, tmp_path, request, method):
    """``method`` with a tiny model of ``kind`` on the small copy of dataset ``name`` (above),
    one short epoch, one device."""
    from ltjax.defaults import experiment_config

    data, num_classes, _ = builder(name, kind)(tmp_path, request)
    c = experiment_config(name, _MODELS[kind], method)
    if kind == "image":
        c.model.widths, c.model.convs = (8, 8, 16), 1
        c.model.frozen_stages, c.model.norm_eval = -1, False
        data.image_size, data.augment = 32, False
    elif kind == "text":
        c.model.embed_dim, c.model.hidden = 16, (16,)
    else:
        c.model.hidden = (16,)
    data.batch_size = data.eval_batch_size = 8
    data.prepared_dir = str(tmp_path / "prepared")
    c.data = data
    c.mesh.data = 1
    c.optimizer.name, c.optimizer.lr = "adam", 1e-3
    c.schedule.warmup_steps = 0
    c.train.num_epochs, c.train.steps_per_epoch = 1, 3
    c.train.progress_bar = "off"
    c.eval.top_k = (1, 3)
    return c, num_classes
