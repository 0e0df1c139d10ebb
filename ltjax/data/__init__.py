"""Data core: the dataset registry, class groups, samplers and grain pipelines.

``build_dataset(config.data)`` returns a ``Dataset`` (named splits + metadata: class names, n_c, N,
head/medium/tail groups).  Built-in datasets register themselves on import below.
"""
from __future__ import annotations

import ml_collections

from ltjax.data.base import DATASETS, ArraySplit, Dataset, DatasetMeta, make_meta
from ltjax.data.groups import ClassGroups, class_groups
from ltjax.data import medical, synthetic, voc_coco, yeast  # noqa: F401  (registration)
from ltjax.data import text_corpora  # noqa: F401  (registration)
from ltjax.data import custom  # noqa: F401  (registration)
from ltjax.data import tiles  # noqa: F401  (registration)
from ltjax.data import reports  # noqa: F401  (registration)

# name -> function returning the dataset's own config fields (merged into config.data)
_DEFAULTS = {
    "yeast": yeast.default_config,
    "synthetic_lt": synthetic.default_config,
    "voc_lt": voc_coco.voc_lt_default_config,
    "coco_lt": voc_coco.coco_lt_default_config,
    "chestxray14": medical.chestxray14_default_config,
    "odir5k": medical.odir5k_default_config,
    "custom": custom.default_config,
    "tiles_voc_lt": tiles.default_config,
    "text_lines": text_corpora.text_lines_default_config,
    "text_jsonl": text_corpora.text_jsonl_default_config,
    "padchest_reports": reports.padchest_default_config,
    "iu_xray_reports": reports.iu_xray_default_config,
}


def dataset_defaults(name: str) -> ml_collections.ConfigDict:
    DATASETS.get(name)  # raises, listing the registered datasets, for an unknown name
    return _DEFAULTS[name]() if name in _DEFAULTS else ml_collections.ConfigDict()


def register_defaults(name: str, fn) -> None:
    """Declare the config fields of a dataset registered outside this package."""
    _DEFAULTS[name] = fn


def build_dataset(data_cfg) -> Dataset:
    """The dataset ``data_cfg.name``, with a validation split carved from its training split when
    ``data.val_from_train`` > 0 (:mod:`ltjax.data.stratify`), then ``data.missing_ratio`` of its (remaining)
    training positives hidden (:mod:`ltjax.data.partial`); neither by default."""
    from ltjax.data.partial import apply_missing_labels
    from ltjax.data.stratify import carve_validation

    return apply_missing_labels(carve_validation(DATASETS.get(data_cfg.name)(data_cfg), data_cfg), data_cfg)


__all__ = [
    "DATASETS",
    "ArraySplit",
    "ClassGroups",
    "Dataset",
    "DatasetMeta",
    "build_dataset",
    "class_groups",
    "dataset_defaults",
    "make_meta",
    "register_defaults",
]
