"""Bring your own data: the dataset ``custom`` reads a manifest (CSV or JSONL) of images or documents.

A manifest lists every example with its labels.  ltjax reads it into a :class:`~ltjax.data.sources.Source`
and from there everything is the same as for the built-in datasets: class names, n_c, N and the
head/medium/tail groups from the TRAINING labels, storage (``data.storage``: array_record by default,
or ``files``), the image / text transforms, training and the group-wise evaluation.

Manifest formats
----------------
**CSV** (``.csv``, UTF-8, header row required; extra columns are allowed and ignored)::

    path,labels,patient
    img/0001.jpg,cat|dog,p17
    img/0002.png,dog,p17
    img/0003.jpg,,p42              <- an empty labels cell: an example with no positive label

* ``path`` (``data.kind = "image"``, the default): the image file, relative to ``data.root`` (default:
  the manifest's own folder) or absolute.  ``text`` (``data.kind = "text"``): the document itself.
* ``labels``: class names separated by ``data.label_separator`` (default ``|``).  An empty cell is an
  example without any positive label (allowed; counted in ``meta.info["examples_without_labels"]``); an
  empty name between separators (``cat||dog``, ``cat|``) or a bracketed list (``['cat', 'dog']``) is an
  error.
* Instead of ``labels``: one 0/1 column per class, ``data.label_columns = "all"`` (every column except
  ``id``, ``path``/``text`` and the split/group columns is a class; the column name is the class name) or
  a comma list of the columns (``"cat,dog,bird"``; other columns are ignored).  Cells are ``0``/``1``
  (``0.0``/``1.0``, ``true``/``false`` also accepted); anything else, an empty cell included, is an error.
* ``id`` (optional): a unique example id; without it the id is the image path (relative to the main
  manifest's root) or, for text, ``<manifest file name>:<line>``.

**JSONL** (``.jsonl``): one JSON object per line (blank lines skipped)::

    {"path": "img/0001.jpg", "labels": ["cat", "dog"], "id": "a1", "patient": "p17"}
    {"text": "a document ...", "labels": [], "split": "test"}

``labels`` is a list of class names (``[]``: no positive); ``id``, the split key and the group key are
optional as in the CSV; ``data.label_columns`` works the same way with 0/1 (or true/false) values.

Splits (``train`` and ``test`` are required, ``val`` is optional), in this order of precedence:

1. ``data.split_column`` (e.g. ``"split"``): every row says its split: ``train``, ``val`` or ``test``
   (case and surrounding spaces ignored; anything else is an error).  Not combinable with the manifests
   below.
2. ``data.test_manifest`` / ``data.val_manifest``: further manifests (same format rules) holding the
   test / validation examples; ``data.manifest`` then holds the training examples.
3. A seeded split of ``data.manifest`` for each split without its own manifest: ``data.test_fraction``
   (default 0.2) and ``data.val_fraction`` (default 0: no val split), over *units* (rows, or groups of
   rows when ``data.group_column`` is set), by ``data.split_method``:

   * ``"stratified"`` (default): iterative stratification of the units on their label sets
     (:func:`ltjax.data.stratify.stratified_partition`, the ``iterative-stratification`` package): test is
     cut first, then val from the rest, and each cut leaves every label name with at least 2 units in its
     pool on both sides.  The fractions are of units (groups where there are groups), met to within the
     few units the stratification moves.
   * ``"random"``: the units in the order of ``numpy.random.default_rng(data.split_seed).permutation``;
     the test split takes units from the front until it holds at least ``round(test_fraction * N)`` rows,
     then val the same way, and train the rest.  Labels play no part.

   Each split keeps the manifest's row order.  Same manifest + same seed = same split.

``data.group_column`` (e.g. a patient id): no group may span two splits.  The random split assigns whole
groups; with a split column or separate manifests a group found in two splits is an error.

Classes: ``data.class_names`` (a comma list, e.g. ``"cat,dog,bird"``) fixes the classes and their order;
a class that no example uses is allowed (n_c = 0), a label not in the list is an error.  Without it the
classes are every label name found in any manifest (or the label columns), ordered by
``data.class_order``: ``"sorted"`` (default, by name) or ``"frequency"`` (most frequent in the training
split first, ties by name).

Every other field: ``data.kind``, ``data.root``, ``data.verify_files`` (check that every image exists, is
not empty and has a header PIL recognises, before anything else happens; default on), ``data.display_name`` (the dataset name in reports and
``eval.json``; default ``custom``), plus the fields of :func:`ltjax.data.sources.source_defaults` for
BOTH kinds (storage and prepared_dir; the image fields ``image_size``, ``augment``, ...; the text
fields), because a config's fields are fixed when it is built, before ``kind`` is known; the fields of
the other kind are simply unused.

Errors: a missing manifest or image file raises :class:`~ltjax.data.voc_coco.DatasetFilesError` (a
``FileNotFoundError``) naming the file, the root used and how to point ltjax at the data; every mistake
in a manifest's content raises :class:`ManifestError` (a :class:`~ltjax.config.ConfigError`, so the
command lines print it without a traceback) naming the file, the line and the fix.

Example::

    python -m ltjax.train --config configs/custom.py:db_focal --workdir runs/mine \\
        --config.data.manifest=/data/mine/labels.csv --config.data.group_column=patient \\
        --config.data.test_fraction=0.25
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import re

import ml_collections
import numpy as np

from ltjax.data.base import DATASETS, Dataset
from ltjax.data.sources import KINDS, Source, SourceSplit, dataset_from_source, source_defaults, with_defaults
from ltjax.data.splits import group_split
from ltjax.errors import DATA_DIR_ENV as ENV_VAR, ConfigError, DatasetFilesError
from ltjax.errors import ManifestError  # noqa: F401 (re-exported)

NAME = "custom"
SPLITS = ("train", "val", "test")
CLASS_ORDERS = ("sorted", "frequency")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
ITEM_KEY = {"image": "path", "text": "text"}
_MAX_LISTED = 5
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}
_DISPLAY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

_FORMAT_HELP = (
    "a manifest is a .csv with a header row and the columns 'path' (images; 'text' for documents) and "
    "'labels' (class names separated by '|', e.g. cat|dog), or a .jsonl with one object per line, "
    'e.g. {"path": "img/1.jpg", "labels": ["cat", "dog"]}'
)


def default_config() -> ml_collections.ConfigDict:
    """The ``custom`` fields of ``config.data`` (module docstring): manifests, splits, classes, both kinds' fields."""
    c = ml_collections.ConfigDict()
    c.manifest = ""  # .csv or .jsonl listing the examples (required)
    c.root = ""  # folder image paths are relative to; "" = each manifest's own folder
    c.kind = "image"  # "image" (path column: image files) | "text" (text column: the documents)
    c.test_manifest = ""  # optional manifest of the test split (data.manifest is then the training set)
    c.val_manifest = ""  # optional manifest of the validation split
    c.split_column = ""  # optional column / key holding train, val or test per row
    c.test_fraction = 0.2  # seeded split: fraction of the units (rows / groups) for test ...
    c.val_fraction = 0.0  # ... and for val (0: no val split)
    c.split_seed = 0  # seed of the split (independent of config.seed)
    c.split_method = "stratified"  # "stratified" (iterative stratification of the units) | "random" (permutation)
    c.group_column = ""  # optional column / key (e.g. patient id): a group never spans two splits
    c.label_separator = "|"  # separates the class names in a CSV labels cell
    c.label_columns = ""  # "" = a labels column; "all" or "a,b,c" = one 0/1 column per class
    c.class_names = ""  # optional comma list fixing the classes and their order
    c.class_order = "sorted"  # without class_names: "sorted" (by name) | "frequency" (training counts)
    c.display_name = NAME  # the dataset's name in reports and eval.json
    c.verify_files = True  # check at build time that every image file exists, is not empty and has an image header
    # images: False when a horizontal flip changes what an image shows (text, digits, laterality that a
    # label names); then no pipeline flips, whatever flip_prob says
    c.hflip_preserves_labels = True
    c.update(source_defaults("image"))
    try:
        text_fields = source_defaults("text")
    except ImportError:  # pragma: no cover - ltjax.data.text not present
        text_fields = {}
    for key, value in text_fields.items():
        if key not in c:
            c[key] = value
    return c


# ---------------------------------------------------------------------------------------------------
# reading one manifest
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One manifest row, parsed: where it came from, its item, label names, optional id/split/group."""

    file: str
    line: int
    item: str  # image path as written, or the document
    labels: tuple[str, ...]
    id: str | None = None
    split: str | None = None
    group: str | None = None
    blank_labels: bool = False  # a labels cell of only spaces (read as no labels; warned about)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass(frozen=True)
class _Format:
    kind: str
    label_separator: str
    label_columns: str
    split_column: str
    group_column: str

    @property
    def item_key(self) -> str:
        return ITEM_KEY[self.kind]

    def reserved(self) -> set[str]:
        return {"id", self.item_key} | {k for k in (self.split_column, self.group_column) if k}


def _label_column_names(fmt: _Format, header: list[str], file: str) -> list[str] | None:
    """The label columns of this manifest (None: a ``labels`` column is used)."""
    spec = fmt.label_columns.strip()
    if not spec:
        return None
    if spec == "all":
        cols = [h for h in header if h not in fmt.reserved()]
        if "labels" in cols:
            raise ManifestError(
                f"{file}: data.label_columns='all' makes every column a class, but there is a 'labels' column; "
                "give the 0/1 class columns as a comma list (--config.data.label_columns=cat,dog,...) or drop "
                "label_columns to use the 'labels' column"
            )
        if not cols:
            raise ManifestError(
                f"{file}: data.label_columns='all' but there is no column besides "
                f"{', '.join(sorted(fmt.reserved()))}; add one 0/1 column per class"
            )
        return cols
    cols = [c.strip() for c in spec.split(",")]
    if any(not c for c in cols) or len(set(cols)) != len(cols):
        raise ManifestError(
            f"data.label_columns={spec!r}: give distinct, non-empty column names separated by commas, or 'all'"
        )
    return cols


def _unknown_column(file: str, what: str, column: str, available, fix: str) -> ManifestError:
    return ManifestError(
        f"{file}: no {column!r} {what}; {what}s found: {', '.join(available) or '(none)'}. {fix}"
    )


def _check_columns(fmt: _Format, file: str, available: list[str], label_cols, what: str) -> None:
    """Required columns (CSV header) / keys (first JSONL object) exist; names the fix otherwise."""
    key = fmt.item_key
    if key not in available:
        other = ITEM_KEY["text" if fmt.kind == "image" else "image"]
        hint = (
            f" (there is a {other!r} {what}: for {'documents' if other == 'text' else 'images'} set "
            f"--config.data.kind={'text' if other == 'text' else 'image'})" if other in available else ""
        )
        raise _unknown_column(
            file, what, key, available,
            f"data.kind={fmt.kind!r} needs a {key!r} {what} holding "
            f"{'the image file of each example' if fmt.kind == 'image' else 'the document of each example'}{hint}.",
        )
    if label_cols is None:
        if "labels" not in available:
            raise _unknown_column(
                file, what, "labels", available,
                "Add a 'labels' column (class names separated by data.label_separator, e.g. cat|dog), or give "
                "one 0/1 column per class with --config.data.label_columns=all (or a comma list of them).",
            )
    else:
        missing = [c for c in label_cols if c not in available]
        if missing:
            raise _unknown_column(
                file, what, missing[0], available,
                f"data.label_columns={fmt.label_columns!r} names it; fix the list or the manifest.",
            )
    for field_name, col in (("split_column", fmt.split_column), ("group_column", fmt.group_column)):
        if col and col not in available:
            raise _unknown_column(
                file, what, col, available,
                f"data.{field_name}={col!r} names it; give the right {what} name or set --config.data.{field_name}=",
            )


def _parse_label_cell(cell: str, sep: str, where: str) -> tuple[str, ...]:
    text = cell.strip()
    if not text:
        return ()
    if text[0] in "[{(" and text[-1] in "]})":
        raise ManifestError(
            f"{where}: labels cell {cell!r} looks like a list; in a CSV write the class names separated by "
            f"{sep!r}, e.g. cat{sep}dog (or use a .jsonl manifest for JSON lists)"
        )
    names = [p.strip() for p in text.split(sep)]
    if any(not n for n in names):
        raise ManifestError(
            f"{where}: malformed labels cell {cell!r}: an empty class name between {sep!r} separators; write "
            f"e.g. cat{sep}dog, or leave the cell empty for an example without labels"
        )
    return tuple(dict.fromkeys(names))


def _parse_flag(value, column: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ManifestError(
        f"{where}: label column {column!r} holds {value!r}; each label column cell must be 0 or 1 "
        "(an example has the class or not; write 0 for unknown/uncertain labels)"
    )


def _parse_split(value, column: str, where: str) -> str:
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in SPLITS:
        raise ManifestError(
            f"{where}: split column {column!r} holds {value!r}; allowed values: train, val, test (one per row)"
        )
    return text


def _parse_scalar(value, what: str, where: str, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ManifestError(f"{where}: the {what} must be a string or an integer, got {value!r}")
    text = str(value).strip()
    if not text and not allow_empty:
        raise ManifestError(f"{where}: empty {what}; every row needs one")
    return text


def _make_row(fmt: _Format, record: dict, label_cols, file: str, line: int, json_values: bool) -> Row:
    where = f"{file}:{line}"
    item = record[fmt.item_key]
    if not isinstance(item, str):
        raise ManifestError(f"{where}: {fmt.item_key!r} must be a string, got {item!r}")
    if fmt.kind == "image" and not item.strip():
        raise ManifestError(f"{where}: empty 'path'; every row needs its image file")
    if fmt.kind == "image":
        item = item.strip()
    if label_cols is None:
        raw = record["labels"]
        if json_values:
            if not isinstance(raw, list):
                raise ManifestError(
                    f"{where}: 'labels' must be a JSON list of class names, e.g. [\"cat\", \"dog\"] ([] for none), "
                    f"got {raw!r}"
                )
            bad = [x for x in raw if not isinstance(x, str) or not x.strip()]
            if bad:
                hint = " (class indices? write the class names instead)" if isinstance(bad[0], int) else ""
                raise ManifestError(f"{where}: 'labels' holds {bad[0]!r}; class names are non-empty strings{hint}")
            labels = tuple(dict.fromkeys(x.strip() for x in raw))
        else:
            labels = _parse_label_cell(raw, fmt.label_separator, where)
    else:
        labels = tuple(c for c in label_cols if _parse_flag(record[c], c, where))
    blank = label_cols is None and isinstance(record["labels"], str) and record["labels"] != "" \
        and not record["labels"].strip()
    row = Row(file=file, line=line, item=item, labels=labels, blank_labels=blank)
    if record.get("id") is not None:
        row.id = _parse_scalar(record["id"], "id", where)
    if fmt.split_column:
        row.split = _parse_split(record[fmt.split_column], fmt.split_column, where)
    if fmt.group_column:
        row.group = _parse_scalar(record[fmt.group_column], f"group ({fmt.group_column!r})", where)
    return row


def _read_csv(fmt: _Format, path: str) -> tuple[list[Row], list[str] | None]:
    rows, label_cols, header = [], None, None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for fields in reader:
                if not any(x.strip() for x in fields):
                    continue
                if header is None:
                    header = [h.strip() for h in fields]
                    dup = sorted({h for h in header if header.count(h) > 1})
                    if dup or any(not h for h in header):
                        raise ManifestError(
                            f"{path}:{reader.line_num}: the header row needs distinct, non-empty column names "
                            f"(got {', '.join(map(repr, header))})"
                        )
                    label_cols = _label_column_names(fmt, header, path)
                    _check_columns(fmt, path, header, label_cols, "column")
                    continue
                if len(fields) != len(header):
                    raise ManifestError(
                        f"{path}:{reader.line_num}: {len(fields)} fields but the header has {len(header)} columns "
                        f"({', '.join(header)}); quote cells that contain commas, e.g. \"a, b\""
                    )
                rows.append(_make_row(fmt, dict(zip(header, fields)), label_cols, path, reader.line_num, False))
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e}); save the manifest as UTF-8") from None
    except csv.Error as e:
        raise ManifestError(f"{path}: not a valid CSV file ({e})") from None
    if header is None:
        raise ManifestError(f"{path}: the manifest is empty; {_FORMAT_HELP}")
    return rows, label_cols


def _read_jsonl(fmt: _Format, path: str) -> tuple[list[Row], list[str] | None]:
    rows, label_cols, checked = [], None, False
    try:
        with open(path, encoding="utf-8-sig") as f:
            for lineno, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg}); {_FORMAT_HELP}") from None
                if not isinstance(obj, dict):
                    raise ManifestError(
                        f"{path}:{lineno}: each line must be a JSON object, got {type(obj).__name__}; {_FORMAT_HELP}"
                    )
                if not checked:
                    label_cols = _label_column_names(fmt, list(obj), path)
                    checked = True
                needed = [fmt.item_key, *(label_cols if label_cols is not None else ["labels"])]
                needed += [k for k in (fmt.split_column, fmt.group_column) if k]
                missing = [k for k in needed if k not in obj]
                if missing:
                    _check_columns(fmt, f"{path}:{lineno}", list(obj), label_cols, "key")
                rows.append(_make_row(fmt, obj, label_cols, path, lineno, True))
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e}); save the manifest as UTF-8") from None
    if not checked:
        raise ManifestError(f"{path}: the manifest is empty; {_FORMAT_HELP}")
    return rows, label_cols


def read_manifest(path: str, *, kind: str = "image", label_separator: str = "|", label_columns: str = "",
                  split_column: str = "", group_column: str = "") -> tuple[list[Row], list[str] | None]:
    """The rows of one manifest (``.csv`` or ``.jsonl``) and its label columns (None: a labels column)."""
    fmt = _Format(kind, label_separator, label_columns, split_column, group_column)
    if not label_separator:
        raise ManifestError("data.label_separator is empty; give the character between class names, e.g. '|'")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".csv":
        return _read_csv(fmt, path)
    if suffix == ".jsonl":
        return _read_jsonl(fmt, path)
    raise ManifestError(f"{path}: unsupported manifest type {suffix or '(no suffix)'!r}; {_FORMAT_HELP}")


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------


def _locate_manifest(field_name: str, value: str) -> str:
    """The absolute path of a manifest field: as given (``~`` expanded, relative to the current directory),
    else relative to ``$LTJAX_DATA_DIR``."""
    path = os.path.expanduser(value)
    tried = [os.path.abspath(path)]
    if os.path.isfile(path):
        return os.path.abspath(path)
    if not os.path.isabs(path) and os.environ.get(ENV_VAR):
        candidate = os.path.abspath(os.path.join(os.path.expanduser(os.environ[ENV_VAR]), path))
        tried.append(candidate)
        if os.path.isfile(candidate):
            return candidate
    raise DatasetFilesError(
        f"{NAME}: missing {field_name.replace('_', ' ')}: {tried[0]}"
        + (f" (also looked for {tried[1]})" if len(tried) > 1 else "")
        + f"\n{NAME} reads a manifest listing your examples; {_FORMAT_HELP}.\n"
        f"Point ltjax at it with --config.data.{field_name}=/path/to/labels.csv (a relative path is taken from "
        f"the current directory, then from ${ENV_VAR}); image paths in it are relative to --config.data.root "
        "(default: the manifest's folder)."
    )


def _missing_images_error(missing: list[tuple[str, Row]], roots: dict[str, str]) -> DatasetFilesError:
    total = len(missing)
    shown = "\n".join(f"  {p}  ({row.where})" for p, row in missing[:_MAX_LISTED])
    more = f"\n  ... and {total - _MAX_LISTED} more" if total > _MAX_LISTED else ""
    root_lines = "\n".join(f"  {os.path.basename(m)}: {r}" for m, r in roots.items())
    head = f"{NAME}: missing image file: {missing[0][0]}" if total == 1 else \
        f"{NAME}: {total} image files missing, e.g.:\n{shown}{more}"
    if total == 1:
        head += f"  ({missing[0][1].where})"
    return DatasetFilesError(
        f"{head}\nRelative paths were resolved against the root:\n{root_lines}\n"
        "Point ltjax at the folder the manifest's paths are relative to with --config.data.root=/path/to/images "
        "(default: the manifest's own folder), or fix the paths in the manifest; "
        "--config.data.verify_files=false skips this check."
    )


# ---------------------------------------------------------------------------------------------------
# splits and classes
# ---------------------------------------------------------------------------------------------------


SPLIT_METHODS = ("stratified", "random")


def stratified_rows_split(rows: list[Row], fractions: dict[str, float], seed: int,
                          group_column: str = "") -> dict[str, list[int]]:
    """Row indices per split for the ``"stratified"`` split of the module docstring (``fractions`` as
    :func:`random_split`'s, of units), on the rows' label names."""
    from ltjax.data.stratify import name_matrix, stratified_partition

    y = name_matrix([row.labels for row in rows])
    groups = [row.group for row in rows] if group_column else None
    try:
        out = stratified_partition(y, list(fractions.items()), "train", int(seed), groups,
                                   field="data.test_fraction / data.val_fraction")
    except ConfigError as e:
        raise ManifestError(str(e)) from None
    return {name: [int(i) for i in idx] for name, idx in out.items()}


def random_split(rows: list[Row], fractions: dict[str, float], seed: int,
                 group_column: str = "") -> dict[str, list[int]]:
    """Row indices per split for the seeded (group-level) random split described in the module docstring
    (the splitter of :mod:`ltjax.data.splits` with numpy's permutation order and quotas in rows).

    ``fractions`` maps split names (taken in that order, e.g. test then val) to fractions of the rows;
    "train" gets the rest.  Each list is in increasing row order.
    """
    units = [("group", row.group) if group_column else ("row", i) for i, row in enumerate(rows)]
    n = len(rows)
    quotas = [(name, max(1, int(np.floor(frac * n + 0.5)))) for name, frac in fractions.items() if frac > 0]
    out = group_split(units, quotas, "train", int(seed), order="permutation", count="rows")
    return {name: [int(i) for i in idx] for name, idx in out.items()}


def _fraction(cfg, field_name: str, low_open: bool) -> float:
    value = float(cfg[field_name])
    ok = (0.0 < value < 1.0) if low_open else (0.0 <= value < 1.0)
    if not ok:
        bound = "0 < x < 1" if low_open else "0 <= x < 1"
        raise ManifestError(f"data.{field_name} = {value} must satisfy {bound}")
    return value


def _class_names_field(value: str) -> tuple[str, ...] | None:
    if not value.strip():
        return None
    names = [n.strip() for n in value.split(",")]
    if any(not n for n in names):
        raise ManifestError(f"data.class_names={value!r} has an empty name; give names separated by commas")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ManifestError(f"data.class_names lists {', '.join(map(repr, dup))} more than once")
    return tuple(names)


def _label_matrix(rows: list[Row], index: dict[str, int]) -> np.ndarray:
    labels = np.zeros((len(rows), len(index)), np.float32)
    for r, row in enumerate(rows):
        labels[r, [index[n] for n in row.labels]] = 1.0
    return labels


# ---------------------------------------------------------------------------------------------------
# the source and the builder
# ---------------------------------------------------------------------------------------------------


def _check_fields(cfg) -> None:
    if str(cfg.kind) not in KINDS:
        raise ManifestError(f"data.kind = {cfg.kind!r} is not valid; choose one of: {', '.join(KINDS)}")
    if str(cfg.class_order) not in CLASS_ORDERS:
        raise ManifestError(
            f"data.class_order = {cfg.class_order!r} is not valid; choose one of: {', '.join(CLASS_ORDERS)}"
        )
    if not _DISPLAY_NAME_RE.fullmatch(str(cfg.display_name)):
        raise ManifestError(
            f"data.display_name = {cfg.display_name!r}: use letters, digits, '_', '-' and '.' only (e.g. chest_xray)"
        )
    if not str(cfg.manifest).strip():
        raise ManifestError(
            f"data.manifest is empty: the {NAME} dataset needs --config.data.manifest=/path/to/labels.csv "
            f"(or .jsonl); {_FORMAT_HELP}"
        )
    if str(cfg.split_column) and (str(cfg.test_manifest) or str(cfg.val_manifest)):
        raise ManifestError(
            "data.split_column and data.test_manifest/val_manifest both say where the splits are; give one of them"
        )


def _resolve_items(cfg, manifests: dict[str, list[Row]], paths: dict[str, str]) -> dict[int, str]:
    """Absolute image path (or the document) per row (keyed by ``id(row)``); sets every row's id and checks,
    in manifest order, that ids (and image files) are unique."""
    main_root = os.path.dirname(paths["manifest"])
    root_field = os.path.abspath(os.path.expanduser(str(cfg.root))) if str(cfg.root) else ""
    resolved: dict[int, str] = {}
    seen_ids: dict[str, Row] = {}
    seen_paths: dict[str, Row] = {}
    for role, rows in manifests.items():
        root = root_field or os.path.dirname(paths[role])
        for row in rows:
            if cfg.kind == "image":
                p = os.path.normpath(os.path.join(root, os.path.expanduser(row.item)))
                if p in seen_paths:
                    raise ManifestError(
                        f"{row.where}: image {row.item!r} is already listed at {seen_paths[p].where}; list each "
                        "image once, with all its labels in one row"
                    )
                seen_paths[p] = row
                resolved[id(row)] = p
                default_id = os.path.relpath(p, root_field or main_root)
            else:
                resolved[id(row)] = row.item
                default_id = f"{os.path.basename(row.file)}:{row.line}"
            ex_id = row.id if row.id is not None else default_id
            if ex_id in seen_ids:
                raise ManifestError(
                    f"{row.where}: duplicate id {ex_id!r} (already used at {seen_ids[ex_id].where}); every example "
                    "needs a unique id (one row per example, with all its labels)"
                )
            seen_ids[ex_id] = row
            row.id = ex_id
    return resolved


def _assign_splits(cfg, manifests: dict[str, list[Row]], paths: dict[str, str]) -> tuple[dict, str]:
    """split name -> rows (manifest order), and a one-line description of the rule used."""
    main_rows = manifests["manifest"]
    split_column, group_column = str(cfg.split_column), str(cfg.group_column)
    if split_column:
        by_split = {s: [r for r in main_rows if r.split == s] for s in SPLITS}
        rule = f"split column {split_column!r} of the manifest"
    else:
        fractions = {}
        if "test_manifest" not in manifests:
            fractions["test"] = _fraction(cfg, "test_fraction", low_open=True)
        if "val_manifest" not in manifests:
            fractions["val"] = _fraction(cfg, "val_fraction", low_open=False)
        if sum(fractions.values()) >= 1.0:
            raise ManifestError(f"data.test_fraction + data.val_fraction = {sum(fractions.values())} must be < 1")
        method = str(cfg.get("split_method", "stratified"))
        if method not in SPLIT_METHODS:
            raise ManifestError(f"data.split_method must be one of {', '.join(SPLIT_METHODS)}, got {method!r}")
        splitter = stratified_rows_split if method == "stratified" else random_split
        picked = splitter(main_rows, fractions, int(cfg.split_seed), group_column)
        by_split = {s: [main_rows[i] for i in picked.get(s, [])] for s in SPLITS}
        parts = []
        if any(f > 0 for f in fractions.values()):
            unit = f"groups of {group_column!r}" if group_column else "rows"
            fr = ", ".join(f"{s} {f:g}" for s, f in fractions.items() if f > 0)
            how = "stratified (iterative stratification)" if method == "stratified" else "random"
            parts.append(f"seeded {how} split of the manifest's {unit} (split_seed {int(cfg.split_seed)}; {fr})")
        for s in ("test", "val"):
            if f"{s}_manifest" in manifests:
                by_split[s] = manifests[f"{s}_manifest"]
                parts.append(f"{s} = data.{s}_manifest")
        rule = "; ".join(parts)
    for required in ("train", "test"):
        if not by_split[required]:
            how = (f"no row has {required!r} in the split column {split_column!r}" if split_column else
                   f"too few rows/groups in {paths['manifest']} to leave a non-empty {required} split")
            raise ManifestError(f"{NAME}: the {required} split is empty: {how}")
    if not by_split["val"]:
        del by_split["val"]
    if group_column:
        first: dict[str, tuple[str, Row]] = {}
        for s, rows in by_split.items():
            for row in rows:
                s0, row0 = first.setdefault(row.group, (s, row))
                if s0 != s:
                    raise ManifestError(
                        f"{row.where}: group {row.group!r} (column {group_column!r}) is in the {s} split but also "
                        f"in the {s0} split ({row0.where}); a group must stay in one split (fix the split column / "
                        "manifests, or leave the split to ltjax, which splits by group)"
                    )
    return by_split, rule


def _classes(cfg, by_split: dict, label_cols) -> tuple[tuple[str, ...], bool]:
    """The class names in order, and whether they came from ``data.class_names``."""
    fixed = _class_names_field(str(cfg.class_names))
    if fixed is not None:
        known = set(fixed)
        for rows in by_split.values():
            for row in rows:
                for name in row.labels:
                    if name not in known:
                        hint = ""
                        if any(ch in name for ch in ",;|/"):
                            hint = (f"; if {name!r} holds several class names, set --config.data.label_separator "
                                    "to the character between them")
                        raise ManifestError(
                            f"{row.where}: label {name!r} is not in data.class_names "
                            f"({len(fixed)} classes: {', '.join(fixed)}); add it to --config.data.class_names "
                            f"or fix the row{hint}"
                        )
        return fixed, True
    names = set(label_cols or ())
    for rows in by_split.values():
        for row in rows:
            names.update(row.labels)
    if not names:
        raise ManifestError(f"{cfg.manifest}: no example has any label, so there are no classes")
    if cfg.class_order == "frequency":
        counts = dict.fromkeys(names, 0)
        for row in by_split["train"]:
            for name in row.labels:
                counts[name] += 1
        return tuple(sorted(names, key=lambda n: (-counts[n], n))), False
    return tuple(sorted(names)), False


def _warn_suspicious_rows(manifests: dict[str, list[Row]], kind: str) -> None:
    """Rows that are accepted but probably not what the user meant: a labels cell of only spaces (read as
    no labels) and, for text, an empty document.  One warning line each kind, with the file:line of each."""
    import jax

    rows = [r for rs in manifests.values() for r in rs]
    groups = [("a labels cell of only spaces, read as no labels", [r for r in rows if r.blank_labels])]
    if kind == "text":
        groups.append(("an empty document", [r for r in rows if not r.item.strip()]))
    for what, found in groups:
        if found and jax.process_index() == 0:
            shown = ", ".join(r.where for r in found[:_MAX_LISTED])
            more = f" and {len(found) - _MAX_LISTED} more" if len(found) > _MAX_LISTED else ""
            print(f"warning: {NAME}: {len(found)} row{'s' if len(found) > 1 else ''} with {what}: {shown}{more}",
                  file=sys.stderr, flush=True)


def build_source(data_cfg) -> Source:
    """The :class:`Source` of a custom dataset (``config.data`` with any absent field at its default)."""
    cfg = with_defaults(data_cfg, default_config())
    _check_fields(cfg)
    kind = str(cfg.kind)
    fmt = dict(kind=kind, label_separator=str(cfg.label_separator), label_columns=str(cfg.label_columns),
               split_column=str(cfg.split_column), group_column=str(cfg.group_column))
    roles = [(r, str(cfg[r])) for r in ("manifest", "test_manifest", "val_manifest")]
    paths = {role: _locate_manifest(role, value) for role, value in roles if value}
    manifests, label_cols = {}, {}
    for role, path in paths.items():
        manifests[role], label_cols[role] = read_manifest(path, **fmt)
        if not manifests[role]:
            raise ManifestError(f"{path}: the manifest has no examples (data.{role}); {_FORMAT_HELP}")
    _warn_suspicious_rows(manifests, kind)
    main_cols = label_cols["manifest"]
    for role, cols in label_cols.items():
        if cols != main_cols:
            raise ManifestError(
                f"{paths[role]}: its label columns ({', '.join(cols or ['labels'])}) differ from those of "
                f"{paths['manifest']} ({', '.join(main_cols or ['labels'])}); every manifest needs the same "
                "class columns in the same order"
            )

    resolved = _resolve_items(cfg, manifests, paths)
    by_split, rule = _assign_splits(cfg, manifests, paths)
    if kind == "image" and bool(cfg.verify_files):
        missing = [(resolved[id(r)], r) for rows in manifests.values() for r in rows
                   if not os.path.isfile(resolved[id(r)])]
        if missing:
            roots = {p: os.path.abspath(os.path.expanduser(str(cfg.root))) if str(cfg.root) else os.path.dirname(p)
                     for p in paths.values()}
            raise _missing_images_error(missing, roots)
        from ltjax.data.images import unreadable_images

        rows = {resolved[id(r)]: r for rows in manifests.values() for r in rows}
        bad = unreadable_images(rows)
        if bad:
            shown = "\n".join(f"  {p}  ({rows[p].where}): {why}" for p, why in bad[:_MAX_LISTED])
            more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
            raise DatasetFilesError(
                f"{NAME}: {len(bad)} image file{'s' if len(bad) > 1 else ''} cannot be read:\n{shown}{more}\n"
                "Replace them with the intact files, or remove their rows from the manifest; "
                "--config.data.verify_files=false skips this check (training then stops at the first one)."
            )
    class_names, fixed = _classes(cfg, by_split, main_cols)
    index = {n: c for c, n in enumerate(class_names)}
    splits = {
        s: SourceSplit(tuple(r.id for r in rows), tuple(resolved[id(r)] for r in rows), _label_matrix(rows, index),
                       groups=tuple(r.group for r in rows) if cfg.group_column else None)
        for s, rows in by_split.items()
    }
    train_counts = splits["train"].labels.sum(axis=0)
    info = {
        "manifest": paths["manifest"],
        **{f"{s}_manifest": paths[f"{s}_manifest"] for s in ("test", "val") if f"{s}_manifest" in paths},
        "kind": kind,
        "split_rule": rule,
        "label_format": (f"labels column, separator {fmt['label_separator']!r}" if main_cols is None
                         else f"0/1 label columns: {', '.join(main_cols)}"),
        "class_order": "data.class_names" if fixed else str(cfg.class_order),
        "examples_without_labels": {s: int((sp.labels.sum(axis=1) == 0).sum()) for s, sp in splits.items()},
        "classes_without_training_examples": [n for n, c in zip(class_names, train_counts) if c == 0],
    }
    if kind == "image":
        info["root"] = os.path.abspath(os.path.expanduser(str(cfg.root))) if str(cfg.root) else \
            os.path.dirname(paths["manifest"])
    if fmt["group_column"]:
        info["group_column"] = fmt["group_column"]
        info["groups_per_split"] = {s: len({r.group for r in rows}) for s, rows in by_split.items()}
    return Source(name=str(cfg.display_name), kind=kind, class_names=class_names, splits=splits, info=info,
                  hflip_preserves_labels=bool(cfg.hflip_preserves_labels))


@DATASETS.register(NAME)
def build(data_cfg) -> Dataset:
    """The ``custom`` dataset: a manifest of your images or documents (module docstring)."""
    cfg = with_defaults(data_cfg, default_config())
    return dataset_from_source(build_source(cfg), cfg)
