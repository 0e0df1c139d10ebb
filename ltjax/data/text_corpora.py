"""Multi-label text corpora from the user's files: ``text_lines`` (the AAPD / RCV1 release format) and
``text_jsonl`` (one JSON object per document).

Both read ``data.root`` into a :class:`~ltjax.data.sources.Source` of kind "text" (documents as strings,
labels as names) and hand it to :func:`~ltjax.data.sources.dataset_from_source`, which stores it
(``data.storage``), builds the vocabulary from the training documents and the transforms
(:mod:`ltjax.data.text`: ``data.tokenizer``, ``lowercase``, ``min_freq``, ``max_vocab``, ``max_length``)
and the metadata.  Splits: "train" and "test" are required, "val" is optional (used when its files
exist).

``text_lines`` -- per split a documents file with one document per line and a parallel labels file
whose line i holds document i's label NAMES separated by whitespace (AAPD: ``cs.IT math.IT``).  The file
names are ``data.text_file`` / ``data.label_file`` with ``{split}`` replaced by the split name; the
defaults ``text_{split}`` / ``label_{split}`` are the AAPD release's (``text_train``, ``label_train``,
``text_val``, ...).  Lines end at ``\\n`` only (a trailing ``\\r`` is removed; other unicode line
separators inside a document do not split it), a final newline does not start another line, and the two
files must have the same number of lines (an error names both files and their counts).  An empty label
line is allowed (a document with no positive; counted per split in ``info["documents_without_labels"]``).
Example ids are the 1-based line numbers.

``text_jsonl`` -- per split ``data.jsonl_file`` (default ``{split}.jsonl``) with one object per line,
``{"text": "...", "labels": ["name", ...]}`` (an optional ``"id"`` key gives the example id, else the
line number); blank lines are skipped.  Malformed JSON, a missing key or a wrong type is an error naming
``file:line``.  Errors about file contents are :class:`~ltjax.data.text.TextDataError` (a ``ValueError``).

Classes (both formats): ``data.classes = "all"`` (default) takes every label name that occurs in ANY
split, so the label set is the whole release's (what an HTTN / AAPD / RCV1 user expects; a class that
occurs only in val / test has n_c = 0: it falls into the tail group, and the evaluator's protocol skips a
class without test positives in mAP); ``"train"`` keeps only the names seen in training and drops the
others from val / test (the dropped names and counts are in ``info["dropped_labels"]``).  Class order:
descending training frequency n_c, ties by name, so class 0 is the most frequent training label.  Names
that occur only outside train are listed in ``info["classes_not_in_train"]``.

``data.root`` empty (the default) means ``$LTJAX_DATA_DIR/<dataset name>`` (``text_lines`` or
``text_jsonl``) when ``LTJAX_DATA_DIR`` is set, else ``~/data/<dataset name>``.  A missing folder or file
raises :class:`~ltjax.data.voc_coco.DatasetFilesError` (a ``FileNotFoundError``) naming the path, the
expected layout and how to point ltjax at the data.
"""
from __future__ import annotations

import collections
import json
import os

import ml_collections
import numpy as np

from ltjax.data.base import DATASETS, Dataset
from ltjax.data.sources import Source, SourceSplit, dataset_from_source, source_defaults, with_defaults
from ltjax.data.text import TextDataError
from ltjax.errors import DATA_DIR_ENV as ENV_VAR, DatasetFilesError

LINES_NAME = "text_lines"
JSONL_NAME = "text_jsonl"
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "test")
CLASS_MODES = ("all", "train")


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------


def _common_defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.root = ""  # folder with the split files; "" = $LTJAX_DATA_DIR/<dataset name>, else ~/data/<dataset name>
    c.classes = "all"  # "all": label names of every split | "train": only those seen in training
    c.update(source_defaults("text"))  # storage, prepared_dir, max_length, min_freq, max_vocab, lowercase, tokenizer
    return c


def text_lines_default_config() -> ml_collections.ConfigDict:
    """The ``text_lines`` fields of ``config.data``: root, classes, file patterns, storage and text fields."""
    c = _common_defaults()
    c.text_file = "text_{split}"  # documents, one per line ({split} = train | val | test)
    c.label_file = "label_{split}"  # label names of the same line's document, whitespace-separated
    return c


def text_jsonl_default_config() -> ml_collections.ConfigDict:
    """The ``text_jsonl`` fields of ``config.data``: root, classes, file pattern, storage and text fields."""
    c = _common_defaults()
    c.jsonl_file = "{split}.jsonl"  # one {"text": ..., "labels": [...]} object per line
    return c


# ---------------------------------------------------------------------------------------------------
# files and errors
# ---------------------------------------------------------------------------------------------------


def resolve_root(dataset: str, root: str = "") -> str:
    """The absolute data root: ``root`` if given, else ``$LTJAX_DATA_DIR/<dataset>``, else ``~/data/<dataset>``."""
    if root:
        return os.path.abspath(os.path.expanduser(str(root)))
    base = os.environ.get(ENV_VAR) or os.path.join("~", "data")
    return os.path.abspath(os.path.join(os.path.expanduser(base), dataset))


def _layout(dataset: str, cfg) -> str:
    if dataset == LINES_NAME:
        t, lab = str(cfg.text_file), str(cfg.label_file)
        rows = []
        for split in SPLITS:
            opt = "  (optional, with the next)" if split == "val" else ""
            rows.append(f"|-- {t.format(split=split):<20} one document per line{opt}")
            rows.append(f"|-- {lab.format(split=split):<20} that line's label names, whitespace-separated")
        rows[-1] = "`" + rows[-1][1:]
        return "<root>/\n" + "\n".join(rows)
    j = str(cfg.jsonl_file)
    rows = [
        f"|-- {j.format(split='train'):<20} one {{\"text\": ..., \"labels\": [...]}} object per line",
        f"|-- {j.format(split='val'):<20} (optional)",
        f"`-- {j.format(split='test')}",
    ]
    return "<root>/\n" + "\n".join(rows)


def _files_error(dataset: str, cfg, what: str, path: str) -> DatasetFilesError:
    return DatasetFilesError(
        f"{dataset}: missing {what}: {path}\n{dataset} expects data.root laid out as:\n{_layout(dataset, cfg)}\n"
        f"Point ltjax at it with --config.data.root=/path/to/folder, or set {ENV_VAR}=/path/to/data (a folder "
        f"holding {dataset}/); with data.root empty the root is ${ENV_VAR}/{dataset}, else ~/data/{dataset}."
    )


def _split_file(pattern: str, split: str, field: str) -> str:
    if "{split}" not in pattern:
        raise TextDataError(f"data.{field} must contain '{{split}}' (e.g. 'text_{{split}}'), got {pattern!r}")
    return pattern.format(split=split)


def read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 file, split at ``\\n`` only (a trailing ``\\r`` removed; a final newline does
    not start another line)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TextDataError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# ---------------------------------------------------------------------------------------------------
# readers: split -> (ids, documents, label-name lists)
# ---------------------------------------------------------------------------------------------------


def _read_lines_split(root: str, cfg, split: str) -> tuple[list[str], list[str], list[list[str]], dict] | None:
    text_path = os.path.join(root, _split_file(str(cfg.text_file), split, "text_file"))
    label_path = os.path.join(root, _split_file(str(cfg.label_file), split, "label_file"))
    have_text, have_label = os.path.isfile(text_path), os.path.isfile(label_path)
    if split not in REQUIRED_SPLITS and not have_text and not have_label:
        return None
    if not have_text:
        raise _files_error(LINES_NAME, cfg, f"{split} documents file", text_path)
    if not have_label:
        raise _files_error(LINES_NAME, cfg, f"{split} labels file", label_path)
    docs, label_lines = read_lines(text_path), read_lines(label_path)
    if len(docs) != len(label_lines):
        raise TextDataError(
            f"{LINES_NAME}, {split} split: the documents file and the labels file must have one line per "
            f"document, but {text_path} has {len(docs)} lines and {label_path} has {len(label_lines)}"
        )
    ids = [str(i) for i in range(1, len(docs) + 1)]
    labels = [line.split() for line in label_lines]
    return ids, docs, labels, {"documents": text_path, "labels": label_path}


def _read_jsonl_split(root: str, cfg, split: str) -> tuple[list[str], list[str], list[list[str]], dict] | None:
    path = os.path.join(root, _split_file(str(cfg.jsonl_file), split, "jsonl_file"))
    if not os.path.isfile(path):
        if split not in REQUIRED_SPLITS:
            return None
        raise _files_error(JSONL_NAME, cfg, f"{split} file", path)
    ids, docs, labels, seen = [], [], [], {}
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TextDataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise TextDataError(
                f'{where}: expected an object {{"text": ..., "labels": [...]}}, got {type(obj).__name__}'
            )
        for key in ("text", "labels"):
            if key not in obj:
                raise TextDataError(f'{where}: no {key!r} key (each line must be {{"text": ..., "labels": [...]}})')
        text, names = obj["text"], obj["labels"]
        if not isinstance(text, str):
            raise TextDataError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise TextDataError(f"{where}: 'labels' must be a list of non-empty label-name strings, got {names!r}")
        example_id = str(obj["id"]) if "id" in obj else str(lineno)
        if example_id in seen:
            raise TextDataError(f"{where}: example id {example_id!r} already used at line {seen[example_id]}")
        seen[example_id] = lineno
        ids.append(example_id)
        docs.append(text)
        labels.append([n.strip() for n in names])
    return ids, docs, labels, {"documents": path}


# ---------------------------------------------------------------------------------------------------
# source and builders
# ---------------------------------------------------------------------------------------------------


def build_source(dataset: str, cfg) -> Source:
    """Read ``cfg.root`` in the format of ``dataset`` ("text_lines" | "text_jsonl") into a Source."""
    reader = {LINES_NAME: _read_lines_split, JSONL_NAME: _read_jsonl_split}[dataset]
    mode = str(cfg.classes)
    if mode not in CLASS_MODES:
        raise TextDataError(f"data.classes must be one of {', '.join(CLASS_MODES)}, got {mode!r}")
    root = resolve_root(dataset, cfg.root)
    if not os.path.isdir(root):
        raise _files_error(dataset, cfg, "data root folder", root)
    raw = {}
    for split in SPLITS:
        read = reader(root, cfg, split)
        if read is not None:
            raw[split] = read
    for split, (ids, _, _, files) in raw.items():
        if not ids:
            raise TextDataError(f"{dataset}, {split} split: no documents in {files['documents']}")
    train_counts = collections.Counter(n for names in raw["train"][2] for n in set(names))
    all_names = set(train_counts)
    for split, (_, _, names, _) in raw.items():
        all_names.update(n for row in names for n in row)
    not_in_train = sorted(all_names - set(train_counts))
    keep = all_names if mode == "all" else set(train_counts)
    class_names = sorted(keep, key=lambda n: (-train_counts.get(n, 0), n))
    index = {n: c for c, n in enumerate(class_names)}
    splits, files, no_label, dropped = {}, {}, {}, {}
    for split, (ids, docs, names, split_files) in raw.items():
        labels = np.zeros((len(ids), len(class_names)), np.float32)
        lost: collections.Counter = collections.Counter()
        for r, row in enumerate(names):
            for n in row:
                if n in index:
                    labels[r, index[n]] = 1.0
                else:
                    lost[n] += 1
        splits[split] = SourceSplit(tuple(ids), tuple(docs), labels)
        files[split] = split_files
        no_label[split] = int((labels.sum(axis=1) == 0).sum())
        if lost:
            dropped[split] = dict(sorted(lost.items()))
    info = {
        "root": root,
        "format": dataset,
        "files": files,
        "classes": mode,
        "class_order": "descending training frequency, ties by name",
        "classes_not_in_train": not_in_train,
        "documents_without_labels": no_label,
    }
    if mode == "train":
        info["dropped_labels"] = dropped
    return Source(name=dataset, kind="text", class_names=tuple(class_names), splits=splits, info=info)


@DATASETS.register(LINES_NAME)
def build_text_lines(data_cfg) -> Dataset:
    """Documents and label names in parallel line files per split (AAPD / RCV1 release format)."""
    cfg = with_defaults(data_cfg, text_lines_default_config())
    return dataset_from_source(build_source(LINES_NAME, cfg), cfg)


@DATASETS.register(JSONL_NAME)
def build_text_jsonl(data_cfg) -> Dataset:
    """One ``{"text": ..., "labels": [...]}`` JSON object per line, one file per split."""
    cfg = with_defaults(data_cfg, text_jsonl_default_config())
    return dataset_from_source(build_source(JSONL_NAME, cfg), cfg)


DEFAULT_CONFIGS = {LINES_NAME: text_lines_default_config, JSONL_NAME: text_jsonl_default_config}
