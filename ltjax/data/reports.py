"""Radiology-report text classification on real data: ``padchest_reports`` (Spanish, stemmed) and
``iu_xray_reports`` (English), both read from files inside the pinned ``torchxrayvision==1.5.7`` wheel.

The files come through :mod:`ltjax.assets` (the wheel is downloaded once with pip, never imported):
asset ``padchest_labels_csv`` = ``torchxrayvision/data/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz``
and asset ``iu_xray_reports_tgz`` = ``torchxrayvision/data/NLMCXR_reports.tgz``.  ``data.file`` points
at another copy instead (PadChest: the CSV, plain or ``.gz``; IU X-ray: the ``.tgz`` / ``.tar`` or a
folder holding the XML files).  Each builder reads the file into a :class:`~ltjax.data.sources.Source`
of kind "text" (documents as strings) and hands it to :func:`~ltjax.data.sources.dataset_from_source`
(storage, vocabulary from the training documents, ``data.tokenizer`` / ``max_length`` / ``min_freq``...,
metadata).  Both take ``data.split_seed`` (0), ``data.test_fraction`` (0.2), ``data.min_count``,
``data.drop_labels``, ``data.exclude_labels`` and ``data.max_records`` (0 = all; a quick slice for tests
and smoke runs).  Class order: descending training count, ties by name; a report whose labels all
dropped out (``drop_labels``, ``min_count``) stays, as a document with no positive.

Label names are normalised: ``" ".join(name.split()).lower()`` (strip, collapse white space,
lower-case); an empty name is dropped.

``padchest_reports`` -- PadChest (Bustos et al., 2020): 160,861 image rows (one per radiograph) with
the study's report, already stemmed and lower-cased by the release (``"sin hallazg patolog edad
pacient ."``, no accents), and its labels.  Columns used: ``Report``, ``Labels`` (a Python list literal,
parsed with ``ast.literal_eval``; ``nan`` = no labels), ``MethodLabel`` ("Physician" | "RNN_model"),
``PatientID``, ``ReportID``.

* Report text: white space collapsed; a report with no word character or the literal ``nan`` (the
  release's missing value) is empty, and its rows are dropped (156 rows).
* One example per DISTINCT report text.  The rows of one report (the PA and lateral images of a study,
  and the many studies whose report is the same template, e.g. "sin alter radiolog significacion ."
  written for 3,740 patients) are merged: labels = the UNION of the rows' labels (1,031 texts carry
  different label lists on different rows, nearly all the same set written in another order or
  spacing); id = the ``ReportID`` of its first row in file order; the report's patient = the
  ``PatientID`` of that first row (its *owner*).
* ``exclude_labels`` (default ``("exclude",)``): a report with such a label on any row is dropped
  whole -- the release's flag for texts that are not reports ("interpretacion", "control", ...; 1,312
  rows, 317 texts).
* ``drop_labels`` (default ``("normal",)``): names removed from the labels.  'normal' means "no finding"
  (never a finding of its own), so a normal report becomes a document with no positive, as ChestX-ray14's
  'No Finding'.  'unchanged' (comparison with a previous study) and 'suboptimal study' (image quality)
  are statements the report makes, so they stay classes; add them to ``drop_labels`` to remove them.
* ``physician_only`` (default False): only rows with ``MethodLabel == "Physician"`` (39,053 rows, the
  manually labelled part) are read, so a report is kept when at least one of its rows was labelled by
  a physician, with the union of those rows' labels only (the RNN-labelled rows' labels are ignored).
* Split, patient level: the owners are ordered by ``sha256("<split_seed>:<PatientID>")``
  (:func:`ltjax.data.splits.hashed_order`) and the last ``round(test_fraction * owners)`` owners are
  the test patients; a report is in test iff its owner is.  So no patient owns reports in both splits
  and no text is in both.  A report shared by several patients (3,524 texts, mostly templated normal
  or near-normal reports) follows its owner; such a text is not patient-specific, and another patient
  sharing it may own other reports in the other split (``info["reports_shared_by_patients"]``).  The
  owner is the first row's patient, not the first patient in the seeded order, so shared reports are
  not biased towards either split.
* ``min_count`` (default 5): a class needs at least this many TRAINING reports, else it is dropped
  (names and training counts in ``info["classes_dropped"]``); 5 keeps a class learnable and gives it a
  handful of test positives.
* ``max_records`` > 0: only the first that many CSV rows are read.

Full data, default config (split_seed 0; :func:`dataset_statistics`): 160,861 rows -> 66,158 distinct
non-empty reports -> 65,841 after 'exclude': 52,773 train / 13,068 test (32,297 / 8,074 owners);
183 classes (191 names, 8 with < 5 training reports dropped); training counts n_c 8,097 ('copd signs')
.. 5, quantiles 25 / 50 / 75% = 60.5 / 212 / 697.5; groups under the DB thresholds (head n_c >= 100,
tail n_c < 20): head 123, medium 40, tail 20.  3,715 training reports (7%) have no positive (the
'normal' reports are few once merged: templates).  4 classes have no test positive (the evaluator skips
them).  ``physician_only``: 13,617 train / 3,407 test reports, 174 classes, n_c 2,043 .. 5, quantiles
19 / 60 / 185, head 65 / medium 64 / tail 45.  Parsing the 160,861 rows takes ~7 s (one core, busy
machine); no parse cache is kept.  Words per report: mean 17, 99% <= 49 (``max_length`` 128).
Tokens: the release's text is lower-case ASCII, stemmed Spanish ("sin hallazg patolog edad pacient ."),
which the default ``words`` tokenizer splits into stems; negations ("no", "sin") stay tokens.

``iu_xray_reports`` -- the Indiana University chest X-ray collection (Open-i; Demner-Fushman et al.,
2016): 3,955 XML reports ``ecgen-radiology/<n>.xml``, one per patient.

* Text = the ``FINDINGS`` then the ``IMPRESSION`` section (``Abstract/AbstractText[@Label]``), white space
  collapsed, joined by one space; the anonymisation tokens ``XXXX`` are kept (the words tokenizer
  gives the token ``xxxx``).  A report with both sections empty (28) is dropped.
* Labels = the ``MeSH/major`` headings, each cut before its first '/' (``Opacity/lung/base/left`` ->
  ``opacity``) and normalised.  ``drop_labels`` (default ``("normal",)``): 'normal' (1,391 reports, never
  combined with another heading) means no finding, so those reports have no positive.
  ``exclude_labels`` (default ``("no indexing",)``): 'No Indexing' marks the 95 reports that were never
  indexed (unknown labels, not normal), and they are dropped.
* One example per XML report, id = its ``uId`` (``CXR1000``); split by report (one report per patient):
  ids ordered by ``sha256("<split_seed>:<id>")``, the last ``round(test_fraction * N)`` are test.
  Identical texts are NOT merged (707 kept reports repeat another's text, mostly normal templates);
  ``deduplicate=True`` merges them as for PadChest (union of labels, first report's id and owner).
* ``min_count`` (default 5): classes with fewer training reports are dropped.  ``max_records`` > 0:
  only the first that many XML files in id order are read.

Full data, default config: 3,955 files -> 3,832 reports (28 empty, 95 'No Indexing'): 3,066 train /
766 test; 74 classes (117 names, 43 with < 5 training reports dropped); n_c 444 ('lung') .. 5,
quantiles 25 / 50 / 75% = 14 / 34.5 / 89; groups (100 / 20): head 16, medium 32, tail 26.  1,106
training reports (36%) have no positive ('normal'); 707 reports repeat the text of another (not
merged by default).  Words per report: mean 38, 99% <= 110.  Parsing takes ~2 s.
"""
from __future__ import annotations

import ast
import collections
import csv
import gzip
import hashlib
import os
import re
import tarfile
import xml.etree.ElementTree as ET

import ml_collections
import numpy as np

from ltjax import assets
from ltjax.data.base import DATASETS, Dataset
from ltjax.data.splits import group_split
from ltjax.data.sources import Source, SourceSplit, dataset_from_source, source_defaults, with_defaults
from ltjax.data.text import TextDataError

PADCHEST = "padchest_reports"
IU_XRAY = "iu_xray_reports"
PADCHEST_ASSET = "padchest_labels_csv"
IU_XRAY_ASSET = "iu_xray_reports_tgz"
PADCHEST_COLUMNS = ("Report", "Labels", "MethodLabel", "PatientID", "ReportID")
PHYSICIAN = "Physician"
IU_SECTIONS = ("FINDINGS", "IMPRESSION")
_WORD_RE = re.compile(r"\w")

_WHEEL = dict(
    package="torchxrayvision",
    version="1.5.7",
    wheel="torchxrayvision-1.5.7-py3-none-any.whl",
    wheel_sha256="95f6c3475661f3515d4258deb0855bd5d1b1a56e0b65384251d3dd3fa61fac41",
)
assets.register_asset(
    assets.Asset(
        name=PADCHEST_ASSET,
        member="torchxrayvision/data/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
        member_sha256="34a10144a87fe00c176f23f9aa174a10137fd425882b09d8fb012ab817d99d65",
        description="PadChest label table: 160,861 image rows with the (stemmed Spanish) report and its labels",
        **_WHEEL,
    )
)
assets.register_asset(
    assets.Asset(
        name=IU_XRAY_ASSET,
        member="torchxrayvision/data/NLMCXR_reports.tgz",
        member_sha256="8fb6de7eec73d8c3665067ad4bb003ccd57f971ae316d2642e1627ac7268667a",
        description="IU X-ray (Open-i) reports: 3,955 XML files with findings, impression and MeSH terms",
        **_WHEEL,
    )
)


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------


def _common_defaults() -> ml_collections.ConfigDict:
    c = source_defaults("text")  # storage, prepared_dir, tokenizer, lowercase, min_freq, max_vocab, max_length
    c.max_length = 128  # reports are short (PadChest: 99% <= 49 words; IU: 99% <= 110)
    c.file = ""  # "" = the file fetched by ltjax.assets; else a path to your own copy
    c.split_seed = 0  # seeds the split (sha256 order of "<seed>:<patient or report id>")
    c.test_fraction = 0.2  # fraction of the patients (PadChest) / reports (IU) held out as test
    # "hash": the seeded sha256 owner order (every published table); "stratified": iterative stratification of
    # the owners on their label sets (ltjax/data/stratify.py): every label with >= 2 owners on both sides
    c.split_method = "hash"
    c.min_count = 5  # a class needs this many TRAINING reports, else it is dropped
    c.max_records = 0  # > 0: read only the first that many CSV rows / XML files (quick runs, tests)
    return c


def padchest_default_config() -> ml_collections.ConfigDict:
    """The ``padchest_reports`` fields of ``config.data`` (module docstring)."""
    c = _common_defaults()
    c.physician_only = False  # keep only the rows labelled by a physician (MethodLabel == "Physician")
    c.drop_labels = ("normal",)  # label names removed (a report may be left with no positive)
    c.exclude_labels = ("exclude",)  # a report with one of these labels is dropped whole
    return c


def iu_xray_default_config() -> ml_collections.ConfigDict:
    """The ``iu_xray_reports`` fields of ``config.data`` (module docstring)."""
    c = _common_defaults()
    c.deduplicate = False  # merge reports with identical text (union of labels)
    c.drop_labels = ("normal",)  # label names removed (a report may be left with no positive)
    c.exclude_labels = ("no indexing",)  # a report with one of these labels is dropped whole
    return c


# ---------------------------------------------------------------------------------------------------
# normalisation
# ---------------------------------------------------------------------------------------------------


def normalise_label(name) -> str:
    """``"  COPD  signs "`` -> ``"copd signs"``: strip, collapse white space, lower-case."""
    return " ".join(str(name).split()).lower()


def normalise_report(text) -> str:
    """White space collapsed; ``""`` for a report with no word character or the literal ``nan``."""
    text = " ".join(str(text).split())
    if text.lower() == "nan" or not _WORD_RE.search(text):
        return ""
    return text


def parse_label_list(literal: str, where: str = "") -> tuple[str, ...]:
    """A PadChest ``Labels`` cell (``"['COPD signs', ' air trapping', '']"``) -> normalised, non-empty,
    de-duplicated names in their order; ``""`` / ``"nan"`` (missing) -> ``()``."""
    text = str(literal).strip()
    if text in ("", "nan", "[]"):
        return ()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise TextDataError(f"{where}: Labels is not a Python list literal: {text[:80]!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TextDataError(f"{where}: Labels must be a list of strings, got {text[:80]!r}")
    out = []
    for v in value:
        name = normalise_label(v)
        if name and name not in out:
            out.append(name)
    return tuple(out)


def _names(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    return tuple(n for n in (normalise_label(v) for v in value) if n)


# ---------------------------------------------------------------------------------------------------
# shared: reports -> split -> classes -> Source
# ---------------------------------------------------------------------------------------------------


class Report:
    """One example before the split: id, text, owner (patient or report id), label names, patients."""

    __slots__ = ("id", "text", "owner", "labels", "patients")

    def __init__(self, id_, text, owner, labels=(), patients=()):
        self.id, self.text, self.owner = str(id_), text, str(owner)
        self.labels = list(labels)
        self.patients = set(patients) or {self.owner}

    def add_labels(self, names) -> None:
        for n in names:
            if n not in self.labels:
                self.labels.append(n)


def _check_fraction(test_fraction) -> float:
    f = float(test_fraction)
    if not 0.0 < f < 1.0:
        raise TextDataError(f"data.test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    return f


def split_owners(owners, test_fraction: float, split_seed: int) -> set:
    """The test owners: the last ``round(test_fraction * n)`` of the hashed owner order (the seeded
    group-level splitter of :mod:`ltjax.data.splits`)."""
    unique = sorted(set(str(o) for o in owners))
    n_test = int(np.floor(_check_fraction(test_fraction) * len(unique) + 0.5))
    if not 0 < n_test < len(unique):
        raise TextDataError(
            f"{len(unique)} patients / reports are too few for data.test_fraction={test_fraction}: "
            f"the {'test' if n_test == 0 else 'train'} split would be empty"
        )
    rows = group_split(unique, [("train", len(unique) - n_test)], "test", int(split_seed))
    return {unique[i] for i in rows["test"]}


def build_report_source(name: str, reports: list, cfg, info: dict) -> Source:
    """Split ``reports`` by owner, pick the classes by training count, and make the Source."""
    drop = set(_names(cfg.drop_labels))
    dropped = collections.Counter(n for r in reports for n in r.labels if n in drop)
    method = str(cfg.get("split_method", "hash"))
    if method == "hash":
        test_owners = split_owners([r.owner for r in reports], cfg.test_fraction, cfg.split_seed)
    elif method == "stratified":  # on the raw label names (the class list is decided on train counts later)
        from ltjax.data.stratify import name_matrix, stratified_split

        y = name_matrix([[n for n in r.labels if n not in drop] for r in reports])
        _, test_rows = stratified_split(y, _check_fraction(cfg.test_fraction), int(cfg.split_seed),
                                        [str(r.owner) for r in reports])
        test_owners = {str(reports[i].owner) for i in test_rows}
        info = {**info, "split_method": "stratified (iterative stratification of the owners' label sets)"}
    else:
        raise TextDataError(f"data.split_method = {method!r} is not valid; choose 'hash' or 'stratified'")
    rows = {"train": [r for r in reports if str(r.owner) not in test_owners],
            "test": [r for r in reports if str(r.owner) in test_owners]}
    min_count = int(cfg.min_count)
    if min_count < 1:
        raise TextDataError(f"data.min_count must be an integer >= 1, got {cfg.min_count}")
    train_counts = collections.Counter(n for r in rows["train"] for n in r.labels if n not in drop)
    all_names = {n for r in reports for n in r.labels if n not in drop}
    class_names = sorted((n for n, c in train_counts.items() if c >= min_count), key=lambda n: (-train_counts[n], n))
    if not class_names:
        raise TextDataError(f"{name}: no label has {min_count} training reports; lower data.min_count")
    index = {n: c for c, n in enumerate(class_names)}
    splits, no_label = {}, {}
    for split, members in rows.items():
        labels = np.zeros((len(members), len(class_names)), np.float32)
        for i, r in enumerate(members):
            for n in r.labels:
                if n in index:
                    labels[i, index[n]] = 1.0
        splits[split] = SourceSplit(tuple(r.id for r in members), tuple(r.text for r in members), labels,
                                    groups=tuple(str(r.owner) for r in members))
        no_label[split] = int((labels.sum(axis=1) == 0).sum())
    info = dict(info)
    info.update(
        split_seed=int(cfg.split_seed),
        test_fraction=float(cfg.test_fraction),
        min_count=min_count,
        drop_labels=sorted(drop),
        dropped_label_counts=dict(sorted(dropped.items())),
        label_names=len(all_names),
        classes_dropped={n: train_counts.get(n, 0) for n in sorted(all_names - set(index))},
        class_order="descending training count, ties by name",
        documents_without_labels=no_label,
        owners={split: len({r.owner for r in members}) for split, members in rows.items()},
    )
    return Source(name=name, kind="text", class_names=tuple(class_names), splits=splits, info=info)


def _asset_or_file(cfg, asset_name: str) -> tuple[str, str]:
    """(path, provenance) of ``data.file`` or, when empty, of the fetched asset."""
    if str(cfg.file):
        path = os.path.abspath(os.path.expanduser(str(cfg.file)))
        if not os.path.exists(path):
            raise TextDataError(f"data.file {path} does not exist")
        return path, path
    asset = assets.ASSETS.get(asset_name)
    path = str(assets.fetch(asset))
    return path, f"{asset.member} of {asset.requirement} (sha256 {asset.member_sha256})"


def _max_records(cfg) -> int:
    n = int(cfg.max_records)
    if n < 0:
        raise TextDataError(f"data.max_records must be >= 0 (0 = all), got {cfg.max_records}")
    return n


# ---------------------------------------------------------------------------------------------------
# PadChest
# ---------------------------------------------------------------------------------------------------


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def read_padchest_rows(path: str, max_records: int = 0) -> list[tuple[int, str, str, str, str, str]]:
    """``(line, Report, Labels, MethodLabel, PatientID, ReportID)`` of every row (the first ``max_records``)."""
    out = []
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, [])
        missing = [c for c in PADCHEST_COLUMNS if c not in header]
        if missing:
            raise TextDataError(
                f"{path}: not a PadChest label table: no column {', '.join(repr(c) for c in missing)} "
                f"(expected {', '.join(PADCHEST_COLUMNS)}; found {', '.join(h for h in header if h)[:300]})"
            )
        cols = [header.index(c) for c in PADCHEST_COLUMNS]
        width = max(cols) + 1
        for cells in reader:
            if max_records and len(out) >= max_records:
                break
            if len(cells) < width:
                if not any(c.strip() for c in cells):
                    continue
                raise TextDataError(f"{path}:{reader.line_num}: a row has {len(cells)} cells, expected {len(header)}")
            out.append((reader.line_num, *(cells[c] for c in cols)))
    return out


def padchest_reports(
    rows, *, physician_only: bool = False, exclude_labels=("exclude",), where: str = ""
) -> tuple[list, dict]:
    """Merge PadChest rows into distinct reports (module docstring) -> (reports in file order, counts)."""
    exclude = set(_names(exclude_labels))
    parsed: dict[str, tuple[str, ...]] = {}
    by_text: dict[str, Report] = {}
    excluded: set = set()
    counts = collections.Counter(rows=len(rows), rows_not_physician=0, rows_empty_report=0, rows_without_labels=0)
    for line, report, literal, method, patient, report_id in rows:
        if physician_only and method.strip() != PHYSICIAN:
            counts["rows_not_physician"] += 1
            continue
        text = normalise_report(report)
        if not text:
            counts["rows_empty_report"] += 1
            continue
        names = parsed.get(literal)
        if names is None:
            names = parsed[literal] = parse_label_list(literal, f"{where}:{line}")
        if not names:
            counts["rows_without_labels"] += 1
        patient = patient.strip()
        rep = by_text.get(text)
        if rep is None:
            rep = by_text[text] = Report(report_id.strip() or f"line{line}", text, patient)
        rep.patients.add(patient)
        rep.add_labels(names)
        if exclude.intersection(names):
            excluded.add(text)
    reports = [r for t, r in by_text.items() if t not in excluded]
    ids = collections.Counter(r.id for r in reports)
    for r in reports:  # a ReportID reused for two texts (never in the release) gets a suffix
        if ids[r.id] > 1:
            r.id = f"{r.id}-{hashlib.sha256(r.text.encode()).hexdigest()[:8]}"
    counts["reports"] = len(by_text)
    counts["reports_excluded"] = len(excluded)
    counts["reports_shared_by_patients"] = sum(len(r.patients) > 1 for r in reports)
    return reports, dict(counts)


def padchest_source(data_cfg) -> Source:
    """The ``padchest_reports`` :class:`Source` under ``config.data`` (module docstring)."""
    cfg = with_defaults(data_cfg, padchest_default_config())
    path, provenance = _asset_or_file(cfg, PADCHEST_ASSET)
    rows = read_padchest_rows(path, _max_records(cfg))
    if not rows:
        raise TextDataError(f"{path}: no rows")
    reports, counts = padchest_reports(
        rows, physician_only=bool(cfg.physician_only), exclude_labels=cfg.exclude_labels, where=path
    )
    if not reports:
        raise TextDataError(f"{path}: no report left (physician_only={bool(cfg.physician_only)})")
    info = {
        "source": provenance,
        "physician_only": bool(cfg.physician_only),
        "exclude_labels": sorted(_names(cfg.exclude_labels)),
        "max_records": int(cfg.max_records),
        **counts,
        "protocol": (
            "PadChest reports: one example per distinct report text (labels = union over its rows, id = "
            "ReportID of its first row); seeded patient-level split by the patient of the report's first "
            f"row, test_fraction {float(cfg.test_fraction):g}"
        ),
    }
    return build_report_source(PADCHEST, reports, cfg, info)


@DATASETS.register(PADCHEST)
def build_padchest(data_cfg) -> Dataset:
    """PadChest report texts (Spanish, stemmed) -> PadChest labels; seeded patient-level split."""
    cfg = with_defaults(data_cfg, padchest_default_config())
    return dataset_from_source(padchest_source(cfg), cfg)


# ---------------------------------------------------------------------------------------------------
# IU X-ray
# ---------------------------------------------------------------------------------------------------


def _xml_key(name: str):
    stem = os.path.splitext(os.path.basename(name))[0]
    return (0, int(stem), name) if stem.isdigit() else (1, 0, name)


def read_iu_xml_files(path: str, max_records: int = 0) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the ``*.xml`` files in a .tgz / .tar or a folder, in numeric file-name order."""
    files = []
    if os.path.isdir(path):
        for dirpath, _, names in os.walk(path):
            files += [os.path.join(dirpath, n) for n in names if n.lower().endswith(".xml")]
        files.sort(key=_xml_key)
        if max_records:
            files = files[:max_records]
        out = []
        for p in files:
            with open(p, "rb") as f:
                out.append((p, f.read()))
        return out
    try:
        with tarfile.open(path) as tf:
            members = sorted((m for m in tf.getmembers() if m.isfile() and m.name.lower().endswith(".xml")),
                             key=lambda m: _xml_key(m.name))
            if max_records:
                members = members[:max_records]
            return [(m.name, tf.extractfile(m).read()) for m in members]
    except tarfile.TarError as e:
        raise TextDataError(f"{path}: not a tar archive of XML reports ({e})") from None


def parse_iu_report(data: bytes, where: str = "") -> tuple[str, str, tuple[str, ...]]:
    """One IU X-ray XML report -> ``(uId, FINDINGS + " " + IMPRESSION, MeSH major names)``.

    The MeSH names are cut before their first '/' and normalised (module docstring); the id is "" when
    the file has no ``uId``.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise TextDataError(f"{where}: not valid XML ({e})") from None
    sections = {}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().upper()
        if label in IU_SECTIONS and label not in sections:
            sections[label] = " ".join("".join(node.itertext()).split())
    text = " ".join(sections[s] for s in IU_SECTIONS if sections.get(s))
    names = []
    for node in root.findall("MeSH/major"):
        name = normalise_label((node.text or "").split("/", 1)[0])
        if name and name not in names:
            names.append(name)
    uid = root.find("uId")
    return ("" if uid is None else (uid.get("id") or "").strip()), text, tuple(names)


def iu_xray_reports(files, *, exclude_labels=("no indexing",), deduplicate: bool = False) -> tuple[list, dict]:
    """Parse IU X-ray XML files into reports (module docstring) -> (reports in file order, counts)."""
    exclude = set(_names(exclude_labels))
    counts = collections.Counter(files=len(files), reports_empty=0, reports_excluded=0)
    if deduplicate:
        counts["reports_merged"] = 0
    reports: list[Report] = []
    by_text: dict[str, Report] = {}
    seen: dict[str, str] = {}
    for name, data in files:
        uid, text, names = parse_iu_report(data, name)
        uid = uid or os.path.splitext(os.path.basename(name))[0]
        if uid in seen:
            raise TextDataError(f"{name}: report id {uid!r} already used by {seen[uid]}")
        seen[uid] = name
        if not text:
            counts["reports_empty"] += 1
            continue
        if exclude.intersection(names):
            counts["reports_excluded"] += 1
            continue
        if deduplicate and text in by_text:  # the first report of this text keeps its id
            by_text[text].add_labels(names)
            by_text[text].patients.add(uid)
            counts["reports_merged"] += 1
            continue
        rep = Report(uid, text, uid, names)
        by_text.setdefault(text, rep)
        reports.append(rep)
    if not deduplicate:
        counts["reports_repeating_a_text"] = len(reports) - len({r.text for r in reports})
    return reports, dict(counts)


def iu_xray_source(data_cfg) -> Source:
    """The ``iu_xray_reports`` :class:`Source` under ``config.data`` (module docstring)."""
    cfg = with_defaults(data_cfg, iu_xray_default_config())
    path, provenance = _asset_or_file(cfg, IU_XRAY_ASSET)
    files = read_iu_xml_files(path, _max_records(cfg))
    if not files:
        raise TextDataError(f"{path}: no XML report files")
    reports, counts = iu_xray_reports(files, exclude_labels=cfg.exclude_labels, deduplicate=bool(cfg.deduplicate))
    if not reports:
        raise TextDataError(f"{path}: no report with a FINDINGS or IMPRESSION text")
    info = {
        "source": provenance,
        "exclude_labels": sorted(_names(cfg.exclude_labels)),
        "deduplicate": bool(cfg.deduplicate),
        "max_records": int(cfg.max_records),
        **counts,
        "protocol": (
            "IU X-ray reports: text = FINDINGS + IMPRESSION, labels = MeSH major headings before '/'; "
            f"seeded split by report (one report per patient), test_fraction {float(cfg.test_fraction):g}"
        ),
    }
    return build_report_source(IU_XRAY, reports, cfg, info)


@DATASETS.register(IU_XRAY)
def build_iu_xray(data_cfg) -> Dataset:
    """IU X-ray report texts (findings + impression) -> MeSH major headings; seeded split by report."""
    cfg = with_defaults(data_cfg, iu_xray_default_config())
    return dataset_from_source(iu_xray_source(cfg), cfg)


# ---------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------


def dataset_statistics(source: Source, head_min: float = 100, tail_max: float = 20) -> dict:
    """Sizes, class-count distribution and head/medium/tail group sizes (DB thresholds) of a source."""
    counts = source.splits["train"].labels.sum(axis=0).astype(np.int64)
    q = np.quantile(counts, [0.25, 0.5, 0.75]).tolist()
    return {
        "sizes": {s: len(split) for s, split in source.splits.items()},
        "classes": len(source.class_names),
        "n_c_max": int(counts.max()),
        "n_c_min": int(counts.min()),
        "n_c_quantiles_25_50_75": [round(x, 1) for x in q],
        "groups": {
            "head": int((counts >= head_min).sum()),
            "medium": int(((counts >= tail_max) & (counts < head_min)).sum()),
            "tail": int((counts < tail_max).sum()),
        },
        "train_without_labels": int((source.splits["train"].labels.sum(axis=1) == 0).sum()),
    }


DEFAULT_CONFIGS = {PADCHEST: padchest_default_config, IU_XRAY: iu_xray_default_config}
