"""NIH ChestX-ray14 and ODIR-5K: the medical multi-label datasets of LDRNet (REFERENCE section 4).

Both read the user's own copy of the official release into a :class:`~ltjax.data.sources.Source`
(image paths + float32 multi-hot labels per split) and hand it to
:func:`~ltjax.data.sources.dataset_from_source` (storage, metadata, image transforms; the image fields of
``config.data`` apply as for every image dataset).

``chestxray14`` -- NIH ChestX-ray14 (Wang et al., CVPR 2017): 112,120 frontal chest X-rays of 30,805
patients, 14 findings mined from the reports.  data.root::

    <root>/
    |-- Data_Entry_2017_v2020.csv     the label table (or Data_Entry_2017.csv; a .csv.gz of either
    |                                 is read too; v2020 is preferred when both exist)
    |-- images/<Image Index>          e.g. images/00000001_000.png (the box.com release, extracted), or
    |-- images_001/images/ ... images_012/images/   (the Kaggle / official archive layout; a folder
    |                                 images_NNN/ holding the PNGs directly is accepted too)
    |-- train_val_list.txt            optional: the official patient-level split, one image name per line
    `-- test_list.txt                 optional

* Columns used: "Image Index", "Finding Labels" (findings separated by '|', or "No Finding") and
  "Patient ID"; other columns are ignored.  The 14 classes, in this fixed order (the order of Wang et
  al. and of most later work): Atelectasis, Cardiomegaly, Effusion, Infiltration, Mass, Nodule,
  Pneumonia, Pneumothorax, Consolidation, Edema, Emphysema, Fibrosis, Pleural_Thickening, Hernia.
  "No Finding" is an all-zero label row; an unknown finding name (or "No Finding" together with a
  finding) is an error naming the file, line and image.
* The image folders are listed once (an index file name -> path); every image of the table must be
  there (an error lists up to 5 missing names and the count).  A name present in several folders is
  taken from the first in the order images/, images_001/, images_002/, ...
* ``data.split``: ``"official"`` -- train = the images of train_val_list.txt, test = those of
  test_list.txt, in the lists' order; ``data.val_fraction`` > 0 moves that fraction of the train_val
  PATIENTS (seeded by ``data.split_seed``) to a "val" split.  ``"patient"`` -- LDRNet's protocol: the
  patients are split 7:1:2 into train / val / test (``data.split_fractions``, seeded by
  ``data.split_seed``), so no patient is in two splits.  ``"auto"`` (default): "official" when both
  list files exist, else "patient".

``odir5k`` -- ODIR-5K (Peking University, ODIR 2019 challenge): 3,500 training patients, a left and a
right colour fundus photograph each, 8 patient-level labels N (normal), D (diabetes), G (glaucoma),
C (cataract), A (AMD), H (hypertension), M (myopia), O (other).  data.root::

    <root>/
    |-- ODIR-5K_Training_Annotations(Updated)_V2.xlsx   the annotation sheet (first worksheet), or a CSV
    |                                 export of it with the same columns; any other name works when it
    |                                 is the only *.xlsx (else the only *.csv) in <root> (e.g. the
    |                                 re-distributions' data.xlsx), or set data.annotation_file
    `-- ODIR-5K_Training_Dataset/<file>   e.g. 0_left.jpg, 0_right.jpg (the names of the Left-Fundus /
                                      Right-Fundus columns); "Training Images/" is accepted too, or
                                      set data.image_dir

* Columns used: ID, Left-Fundus, Right-Fundus, N, D, G, C, A, H, M, O (values 0/1); Patient Age,
  Patient Sex and the diagnostic keywords are not used.  ``.xlsx`` needs ``openpyxl`` (``pip install
  openpyxl``, or export the sheet as CSV).
* One example per fundus image (left and right), id = its file name, and its labels are the PATIENT's
  8 labels: the official labels are per patient, and mapping the per-eye diagnostic keywords to
  per-eye labels is NOT done here.  (So a normal eye of a patient with a one-sided disease carries
  that disease's label.)
* Split: the patients are split 7:1:2 into train / val / test (``data.split_fractions``, seeded by
  ``data.split_seed``), so both eyes of a patient are in the same split.
* Evaluation adds the official ODIR scores (``meta.info["extra_metrics"] = ["odir"]``, see
  :func:`ltjax.metrics.odir_scores`): Cohen's kappa, F1 and AUC over the flattened [N x 8] label
  matrix at threshold ``config.eval.threshold`` (0.5), and their mean, the final score.

Patient-level split (both datasets; ``data.split_method``):

* ``"stratified"`` (default): iterative stratification of the patients on their label sets (the union
  of their images' labels; :func:`ltjax.data.stratify.stratified_partition`): test is cut from all the
  patients, then val from the rest, and each cut leaves every finding with at least 2 patients in its
  pool on both sides, so a rare finding (Hernia has ~110 patients in ChestX-ray14; ODIR's H and A a few
  hundred) is in train, val and test in proportion.  The official split's val carve-out uses it too.
* ``"hash"``: each patient gets the key sha256("<split_seed>:<patient id>") and the patients, ordered by
  key, are cut at round(f_train * P) and round((f_train + f_val) * P); labels play no part.

Either depends only on the seed and the patients (their ids, and for "stratified" their labels), not on
the file's row order; the examples keep the file's order within a split; another seed gives another
split.  Fractions are of PATIENTS, not of images ("hash" meets them exactly, "stratified" to within the
few patients the stratification moves).  A val fraction of 0 gives no "val" split.

``data.root`` empty (the default) means ``$LTJAX_DATA_DIR/chestxray14`` / ``$LTJAX_DATA_DIR/odir5k``
when ``LTJAX_DATA_DIR`` is set, else ``~/data/chestxray14`` / ``~/data/odir5k``.  Missing files raise
:class:`~ltjax.data.voc_coco.DatasetFilesError` (a ``FileNotFoundError``) naming the path, the expected
layout and how to point ltjax at the data; a malformed table, sheet, list or split setting raises
:class:`AnnotationError` (a ``ValueError``) naming the file and row.  Both are
:class:`~ltjax.errors.UserError`, so the command lines print the message instead of a traceback.
Class counts and head/medium/tail groups come from the TRAINING split (``config.data.groups``; the
choices of configs/chestxray14.py and configs/odir5k.py are documented there).
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import os
from typing import Sequence

import ml_collections
import numpy as np

from ltjax.data.base import DATASETS, Dataset
from ltjax.data.splits import group_split, hashed_order
from ltjax.data.sources import Source, SourceSplit, dataset_from_source, source_defaults, with_defaults
from ltjax.errors import DATA_DIR_ENV as ENV_VAR, DatasetFilesError
from ltjax.errors import AnnotationError, MissingPackageError  # noqa: F401 (re-exported)

CHESTXRAY14 = "chestxray14"
ODIR5K = "odir5k"

NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
NO_FINDING = "No Finding"
NIH_TABLES = (
    "Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv", "Data_Entry_2017.csv.gz",
)  # fmt: skip
NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
NIH_LISTS = ("train_val_list.txt", "test_list.txt")

ODIR_CLASSES = ("N", "D", "G", "C", "A", "H", "M", "O")
ODIR_CLASS_DESCRIPTIONS = {
    "N": "normal", "D": "diabetes", "G": "glaucoma", "C": "cataract", "A": "age-related macular degeneration",
    "H": "hypertension", "M": "pathological myopia", "O": "other diseases/abnormalities",
}  # fmt: skip
ODIR_ANNOTATIONS = "ODIR-5K_Training_Annotations(Updated)_V2.xlsx"
ODIR_IMAGE_DIRS = ("ODIR-5K_Training_Dataset", "Training Images")
ODIR_COLUMNS = ("ID", "Left-Fundus", "Right-Fundus", *ODIR_CLASSES)

SPLITS = ("auto", "official", "patient")
_DEFAULT_SUBDIR = {CHESTXRAY14: "chestxray14", ODIR5K: "odir5k"}
_MAX_LISTED = 5

_LAYOUT = {
    CHESTXRAY14: (
        "<root>/\n"
        "|-- Data_Entry_2017_v2020.csv      (or Data_Entry_2017.csv; the label table)\n"
        "|-- images/<Image Index>           (e.g. images/00000001_000.png), or\n"
        "|-- images_001/images/ ... images_012/images/   (the archive layout)\n"
        "|-- train_val_list.txt             (optional: the official split)\n"
        "`-- test_list.txt                  (optional)"
    ),
    ODIR5K: (
        "<root>/\n"
        f"|-- {ODIR_ANNOTATIONS}   (or a CSV export; or set data.annotation_file)\n"
        "`-- ODIR-5K_Training_Dataset/<file>   (e.g. 0_left.jpg; or 'Training Images/'; or set data.image_dir)"
    ),
}


def _files_error(dataset: str, what: str, paths, total: int | None = None, note: str = "") -> DatasetFilesError:
    paths = [str(p) for p in paths]
    total = len(paths) if total is None else total
    if total == 1:
        head = f"{dataset}: missing {what}: {paths[0]}"
    else:
        shown = "\n".join(f"  {p}" for p in paths[:_MAX_LISTED])
        more = f"\n  ... and {total - _MAX_LISTED} more" if total > _MAX_LISTED else ""
        head = f"{dataset}: {total} {what} missing, e.g.:\n{shown}{more}"
    sub = _DEFAULT_SUBDIR[dataset]
    return DatasetFilesError(
        f"{head}{note}\n{dataset} expects data.root laid out as:\n{_LAYOUT[dataset]}\n"
        f"Point ltjax at it with --config.data.root=/path/to/{sub}, or set {ENV_VAR}=/path/to/data "
        f"(a folder holding {sub}/); with data.root empty the root is ${ENV_VAR}/{sub}, else ~/data/{sub}."
    )


def resolve_root(dataset: str, root: str = "") -> str:
    """The absolute data root: ``root`` if given, else ``$LTJAX_DATA_DIR/<name>``, else ``~/data/<name>``."""
    if root:
        return os.path.abspath(os.path.expanduser(str(root)))
    base = os.environ.get(ENV_VAR) or os.path.join("~", "data")
    return os.path.abspath(os.path.join(os.path.expanduser(base), _DEFAULT_SUBDIR[dataset]))


def _require_root(dataset: str, root: str) -> None:
    if not os.path.isdir(root):
        raise _files_error(dataset, "data root folder", [root])


def _under(root: str, path: str) -> str:
    """``path`` if absolute, else relative to ``root``."""
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.join(root, path)


# ---------------------------------------------------------------------------------------------------
# patient-level splits
# ---------------------------------------------------------------------------------------------------


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        f = ()
    if len(f) != 3 or min(f, default=-1) < 0 or not math.isclose(sum(f), 1.0, abs_tol=1e-6) or f[0] <= 0 or f[2] <= 0:
        raise AnnotationError(
            f"data.split_fractions must be three non-negative (train, val, test) fractions of the patients "
            f"summing to 1, with train and test > 0, e.g. (0.7, 0.1, 0.2); got {tuple(fractions)!r}"
        )
    return f


def patient_order(patients, seed: int) -> list[str]:
    """The distinct patient ids ordered by sha256("<seed>:<id>") (:func:`ltjax.data.splits.hashed_order`)."""
    return hashed_order(patients, seed)


def _cut(num: int, fraction: float) -> int:
    return int(math.floor(fraction * num + 0.5))


SPLIT_METHODS = ("stratified", "hash")


def _check_split_method(cfg) -> str:
    method = str(cfg.get("split_method", "stratified"))
    if method not in SPLIT_METHODS:
        raise AnnotationError(f"data.split_method must be one of {', '.join(SPLIT_METHODS)}, got {method!r}")
    return method


def split_patients(patients: Sequence[str], fractions, seed: int, labels=None,
                   method: str = "hash") -> dict[str, set]:
    """Patient ids -> {"train", "val", "test"}: sets of patient ids (module docstring); "val" may be empty.

    ``method="hash"``: the seeded group-level splitter of :mod:`ltjax.data.splits`: train takes the first
    ``round(f_train n)`` patients of the hashed order, val the next up to ``round((f_train + f_val) n)``,
    test the rest.  ``method="stratified"``: :func:`ltjax.data.stratify.stratified_partition` of the rows
    ``labels`` (one per entry of ``patients``) grouped by patient, test first, then val."""
    f_train, f_val, f_test = _check_fractions(fractions)
    unique = sorted(set(str(p) for p in patients))
    n = len(unique)
    if method == "stratified":
        from ltjax.data.stratify import stratified_partition

        if labels is None:
            raise ValueError("split_patients(method='stratified') needs the rows' labels")
        if n < 2:
            raise AnnotationError(f"{n} patient(s) are too few for a train / test split")
        part = stratified_partition(labels, [("test", f_test), ("val", f_val)], "train", seed,
                                    [str(p) for p in patients], field="data.split_fractions")
        out = {name: {str(patients[i]) for i in idx} for name, idx in part.items()}
    elif method == "hash":
        n_train = _cut(n, f_train)
        n_trainval = _cut(n, f_train + f_val)
        rows = group_split(unique, [("train", n_train), ("val", n_trainval - n_train)], "test", seed)
        out = {name: {unique[i] for i in idx} for name, idx in rows.items()}
    else:
        raise AnnotationError(f"data.split_method must be one of {', '.join(SPLIT_METHODS)}, got {method!r}")
    if not out["train"] or not out["test"]:
        raise AnnotationError(
            f"{n} patients are too few for the split fractions {tuple(fractions)}: the "
            f"{'train' if not out['train'] else 'test'} split would be empty"
        )
    return out


def _rows_by_split(patient_of_row: Sequence[str], groups: dict[str, set]) -> dict[str, np.ndarray]:
    """Row indices (file order) of every non-empty patient group."""
    out = {}
    for name, members in groups.items():
        rows = np.asarray([i for i, p in enumerate(patient_of_row) if p in members], dtype=np.int64)
        if len(rows):
            out[name] = rows
    return out


def _canonical_patient(value) -> str:
    """A patient id as text; integer ids (1, "00001", 1.0) all read as "1"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


# ---------------------------------------------------------------------------------------------------
# ChestX-ray14
# ---------------------------------------------------------------------------------------------------


def parse_findings(text: str, where: str) -> list[int]:
    """ "Effusion|Mass" -> class indices in NIH_FINDINGS order; "No Finding" -> []."""
    names = [t.strip() for t in str(text).split("|")]
    if names == [NO_FINDING]:
        return []
    if any(not n for n in names):
        raise AnnotationError(
            f"{where}: empty finding in {text!r} (expected findings separated by '|', or {NO_FINDING!r})"
        )
    if NO_FINDING in names:
        raise AnnotationError(f"{where}: {NO_FINDING!r} together with findings in {text!r}")
    index = {n: c for c, n in enumerate(NIH_FINDINGS)}
    for n in names:
        if n not in index:
            raise AnnotationError(
                f"{where}: unknown finding {n!r}; the ChestX-ray14 findings are {', '.join(NIH_FINDINGS)} "
                f"(or {NO_FINDING!r})"
            )
    return sorted({index[n] for n in names})


def _open_text(path: str):
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_nih_table(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """Data_Entry_2017[_v2020].csv -> (image names, patient ids, float32 [N, 14] labels), file order."""
    names, patients, rows = [], [], []
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in NIH_COLUMNS if c not in header]
        if missing:
            raise AnnotationError(
                f"{path}: not a ChestX-ray14 label table: no column {', '.join(repr(c) for c in missing)} "
                f"(columns found: {', '.join(header) or 'none'}; expected {', '.join(NIH_COLUMNS)})"
            )
        col = {c: header.index(c) for c in NIH_COLUMNS}
        for line in reader:
            if not any(cell.strip() for cell in line):
                continue
            lineno = reader.line_num
            if len(line) <= max(col.values()):
                raise AnnotationError(f"{path}:{lineno}: too few columns ({len(line)}) in {','.join(line)!r}")
            name = line[col["Image Index"]].strip()
            where = f"{path}:{lineno} (image {name})"
            if not name:
                raise AnnotationError(f"{path}:{lineno}: empty 'Image Index'")
            rows.append(parse_findings(line[col["Finding Labels"]], where))
            patient = line[col["Patient ID"]].strip()
            if not patient:
                raise AnnotationError(f"{where}: empty 'Patient ID'")
            names.append(name)
            patients.append(_canonical_patient(patient))
    if not names:
        raise AnnotationError(f"{path}: no rows")
    if len(set(names)) != len(names):
        seen = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise AnnotationError(f"{path}: image {dup!r} appears in more than one row")
    labels = np.zeros((len(names), len(NIH_FINDINGS)), np.float32)
    for r, classes in enumerate(rows):
        labels[r, classes] = 1.0
    return names, patients, labels


def nih_image_folders(root: str) -> list[str]:
    """The image folders of a ChestX-ray14 root: images/, then images_NNN/images/ (or images_NNN/) sorted."""
    folders = []
    if os.path.isdir(os.path.join(root, "images")):
        folders.append(os.path.join(root, "images"))
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.startswith("images_") and os.path.isdir(path):
            inner = os.path.join(path, "images")
            folders.append(inner if os.path.isdir(inner) else path)
    return folders


def nih_image_index(folders: Sequence[str]) -> dict[str, str]:
    """File name -> absolute path over ``folders`` (listed once; the first folder wins a repeated name)."""
    index: dict[str, str] = {}
    for folder in folders:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name not in index and entry.is_file():
                    index[entry.name] = os.path.abspath(entry.path)
    return index


def read_name_list(path: str) -> list[str]:
    """One image name per line (blank lines skipped); a repeated name is an error."""
    with open(path, encoding="utf-8-sig") as f:
        names = [line.strip() for line in f if line.strip()]
    seen = set()
    for n in names:
        if n in seen:
            raise AnnotationError(f"{path}: image {n!r} is listed more than once")
        seen.add(n)
    return names


def _find_nih_table(root: str) -> str:
    for name in NIH_TABLES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise _files_error(CHESTXRAY14, "label table", [os.path.join(root, NIH_TABLES[0])],
                       note=f" (nor {', '.join(NIH_TABLES[1:])})")


def chestxray14_source(data_cfg) -> Source:
    """The ChestX-ray14 :class:`Source` under ``config.data`` (module docstring)."""
    cfg = with_defaults(data_cfg, chestxray14_default_config())
    root = resolve_root(CHESTXRAY14, cfg.root)
    _require_root(CHESTXRAY14, root)
    split_mode = str(cfg.split)
    if split_mode not in SPLITS:
        raise AnnotationError(f"data.split must be one of {', '.join(SPLITS)} for {CHESTXRAY14}, got {split_mode!r}")
    table = _find_nih_table(root)
    names, patients, labels = read_nih_table(table)

    folders = nih_image_folders(root)
    if not folders:
        raise _files_error(CHESTXRAY14, "image folder", [os.path.join(root, "images")],
                           note=" (nor any images_NNN/images/ folder)")
    index = nih_image_index(folders)
    missing = [n for n in names if n not in index]
    if missing:
        raise _files_error(
            CHESTXRAY14, "image file" + ("" if len(missing) == 1 else "s"), missing[:_MAX_LISTED], total=len(missing),
            note=f"\n(names from {table}; looked in {', '.join(folders)})",
        )

    list_paths = [os.path.join(root, n) for n in NIH_LISTS]
    have = [os.path.isfile(p) for p in list_paths]
    if split_mode == "auto":
        if any(have) and not all(have):
            raise _files_error(
                CHESTXRAY14, "official split list", [p for p, h in zip(list_paths, have) if not h],
                note=f" ({' and '.join(NIH_LISTS)} go together; remove the other, or set --config.data.split=patient)",
            )
        split_mode = "official" if all(have) else "patient"
    seed = int(cfg.split_seed)
    split_method = _check_split_method(cfg)
    info = {"root": root, "labels_file": table, "image_folders": folders, "split": split_mode, "split_seed": seed,
            "split_method": split_method}
    if split_mode == "official":
        if not all(have):
            raise _files_error(
                CHESTXRAY14, "official split list" + ("s" if not any(have) else ""),
                [p for p, h in zip(list_paths, have) if not h],
                note=" (data.split='official' needs train_val_list.txt and test_list.txt from the release; "
                "without them use the seeded patient-level split: --config.data.split=patient)",
            )
        row_of = {n: r for r, n in enumerate(names)}
        lists = {}
        for key, path in zip(("train_val", "test"), list_paths):
            listed = read_name_list(path)
            unknown = [n for n in listed if n not in row_of]
            if unknown:
                raise AnnotationError(
                    f"{path}: {len(unknown)} listed image(s) are not in {table}, "
                    f"e.g. {', '.join(unknown[:_MAX_LISTED])}"
                )
            lists[key] = np.asarray([row_of[n] for n in listed], dtype=np.int64)
        both = set(lists["train_val"].tolist()) & set(lists["test"].tolist())
        if both:
            shown = ", ".join(names[r] for r in sorted(both)[:_MAX_LISTED])
            raise AnnotationError(f"{len(both)} image(s) are in both {NIH_LISTS[0]} and {NIH_LISTS[1]}, e.g. {shown}")
        val_fraction = float(cfg.val_fraction)
        if not 0.0 <= val_fraction < 1.0:
            raise AnnotationError(f"data.val_fraction must lie in [0, 1), got {val_fraction}")
        rows = {"train": lists["train_val"], "test": lists["test"]}
        if val_fraction > 0:
            tv_patients = [patients[r] for r in lists["train_val"]]
            in_val = np.zeros(len(tv_patients), dtype=bool)
            if split_method == "stratified":
                from ltjax.data.stratify import stratified_split

                in_val[stratified_split(labels[lists["train_val"]], val_fraction, seed,
                                        [str(p) for p in tv_patients], field="data.val_fraction")[1]] = True
            else:
                n_val = _cut(len(set(str(p) for p in tv_patients)), val_fraction)
                in_val[group_split(tv_patients, [("val", n_val)], "train", seed)["val"]] = True
            rows = {"train": lists["train_val"][~in_val], "val": lists["train_val"][in_val], "test": lists["test"]}
            if not len(rows["train"]):
                raise AnnotationError(f"data.val_fraction={val_fraction} leaves no training images")
        info["val_fraction"] = val_fraction
        info["unlisted_images"] = len(names) - len(lists["train_val"]) - len(lists["test"])
        info["protocol"] = (
            "ChestX-ray14 official split: train = train_val_list.txt" + (
                f" minus a seeded {val_fraction:g} of its patients (val, {split_method})" if val_fraction > 0 else ""
            ) + ", test = test_list.txt"
        )
    else:
        fractions = _check_fractions(cfg.split_fractions)
        rows = _rows_by_split(patients, split_patients(patients, fractions, seed, labels, split_method))
        info["split_fractions"] = list(fractions)
        info["protocol"] = (
            f"ChestX-ray14 seeded patient-level split {':'.join(f'{x:g}' for x in fractions)} (train:val:test, "
            f"{split_method}), as LDRNet"
        )
    splits = {
        name: SourceSplit(tuple(names[r] for r in idx), tuple(index[names[r]] for r in idx), labels[idx],
                          groups=tuple(str(patients[r]) for r in idx))
        for name, idx in rows.items()
    }
    info["patients"] = {name: len({patients[r] for r in idx}) for name, idx in rows.items()}
    info["classes"] = "NIH findings in the order of Wang et al. (2017); 'No Finding' = no positive"
    return Source(CHESTXRAY14, "image", NIH_FINDINGS, splits, info)


def chestxray14_default_config() -> ml_collections.ConfigDict:
    """The ``chestxray14`` fields of ``config.data``: the common source/image fields, root, the split."""
    c = source_defaults("image")
    c.root = ""  # data root; "" = $LTJAX_DATA_DIR/chestxray14, else ~/data/chestxray14
    c.split = "auto"  # "official" (train_val_list / test_list) | "patient" (seeded 7:1:2) | "auto"
    c.split_seed = 0  # seeds the patient-level split (and the official split's val carve-out)
    c.split_fractions = (0.7, 0.1, 0.2)  # "patient": train / val / test fractions of the PATIENTS
    c.val_fraction = 0.0  # "official": fraction of the train_val patients moved to a val split (0 = none)
    c.split_method = "stratified"  # "stratified" (iterative stratification of the patients) | "hash"
    return c


@DATASETS.register(CHESTXRAY14)
def build_chestxray14(data_cfg) -> Dataset:
    """NIH ChestX-ray14, 14 findings; official or seeded patient-level split (module docstring)."""
    cfg = with_defaults(data_cfg, chestxray14_default_config())
    return dataset_from_source(chestxray14_source(cfg), cfg)


# ---------------------------------------------------------------------------------------------------
# ODIR-5K
# ---------------------------------------------------------------------------------------------------


def _read_sheet_rows(path: str) -> tuple[list[str], list[tuple[int, list]]]:
    """(header, [(row number, cells), ...]) of the first worksheet of an .xlsx or of a CSV file."""
    if path.lower().endswith((".xlsx", ".xlsm")):
        try:
            import openpyxl
        except ImportError:
            raise MissingPackageError(
                f"{ODIR5K}: reading {path} needs openpyxl: pip install openpyxl (or export the sheet as CSV "
                "and point data.annotation_file at it)"
            ) from None
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            it = wb.worksheets[0].iter_rows(values_only=True)
            header = next(it, ())
            rows = [(r, list(cells)) for r, cells in enumerate(it, start=2)]
        finally:
            wb.close()
    else:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = []
            for cells in reader:
                rows.append((reader.line_num, cells))
    header = ["" if h is None else str(h).strip() for h in header]
    return header, rows


def _binary(value, where: str) -> float:
    if isinstance(value, str):
        value = value.strip()
        try:
            value = float(value)
        except ValueError:
            raise AnnotationError(f"{where}: expected 0 or 1, got {value!r}") from None
    if value is None or isinstance(value, bool) or value not in (0, 1):
        raise AnnotationError(f"{where}: expected 0 or 1, got {value!r}")
    return float(value)


def read_odir_table(path: str) -> tuple[list[str], list[tuple[str, str]], np.ndarray]:
    """ODIR-5K annotation sheet (.xlsx or .csv) -> (patient ids, (left, right) file names, float32 [P, 8])."""
    header, rows = _read_sheet_rows(path)
    missing = [c for c in ODIR_COLUMNS if c not in header]
    if missing:
        raise AnnotationError(
            f"{path}: not an ODIR-5K annotation sheet: no column {', '.join(repr(c) for c in missing)} "
            f"(columns found: {', '.join(h for h in header if h) or 'none'}; expected {', '.join(ODIR_COLUMNS)})"
        )
    col = {c: header.index(c) for c in ODIR_COLUMNS}
    patients, files, labels = [], [], []
    for rownum, cells in rows:
        cells = list(cells) + [None] * (len(header) - len(cells))
        if all(c is None or str(c).strip() == "" for c in cells):
            continue
        pid = cells[col["ID"]]
        if pid is None or str(pid).strip() == "":
            raise AnnotationError(f"{path}: row {rownum}: empty ID")
        pid = _canonical_patient(pid)
        where = f"{path}: row {rownum} (ID {pid})"
        eyes = []
        for column in ("Left-Fundus", "Right-Fundus"):
            name = cells[col[column]]
            if name is None or str(name).strip() == "":
                raise AnnotationError(f"{where}: empty {column!r}")
            eyes.append(str(name).strip())
        patients.append(pid)
        files.append(tuple(eyes))
        labels.append([_binary(cells[col[c]], f"{where}, column {c}") for c in ODIR_CLASSES])
    if not patients:
        raise AnnotationError(f"{path}: no rows")
    seen = set()
    for pid in patients:
        if pid in seen:
            raise AnnotationError(f"{path}: patient ID {pid} appears in more than one row")
        seen.add(pid)
    seen = set()
    for eyes in files:
        for name in eyes:
            if name in seen:
                raise AnnotationError(f"{path}: fundus image {name!r} appears more than once")
            seen.add(name)
    return patients, files, np.asarray(labels, np.float32).reshape(-1, len(ODIR_CLASSES))


def _find_odir_annotations(root: str, configured: str) -> str:
    if configured:
        path = _under(root, configured)
        if not os.path.isfile(path):
            raise _files_error(ODIR5K, "annotation file (data.annotation_file)", [path])
        return path
    stem = os.path.splitext(ODIR_ANNOTATIONS)[0]
    for name in (ODIR_ANNOTATIONS, stem + ".csv"):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    entries = sorted(os.listdir(root))
    for ext in (".xlsx", ".csv"):
        found = [e for e in entries if e.lower().endswith(ext) and os.path.isfile(os.path.join(root, e))]
        if len(found) == 1:
            return os.path.join(root, found[0])
        if len(found) > 1:
            raise AnnotationError(
                f"{ODIR5K}: {root} holds several {ext} files ({', '.join(found)}); choose the annotation sheet "
                "with --config.data.annotation_file=NAME"
            )
    raise _files_error(ODIR5K, "annotation sheet", [os.path.join(root, ODIR_ANNOTATIONS)],
                       note=" (nor its .csv export, nor any other *.xlsx / *.csv)")


def _find_odir_images(root: str, configured: str) -> str:
    if configured:
        path = _under(root, configured)
        if not os.path.isdir(path):
            raise _files_error(ODIR5K, "image folder (data.image_dir)", [path])
        return path
    for name in ODIR_IMAGE_DIRS:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise _files_error(ODIR5K, "image folder", [os.path.join(root, ODIR_IMAGE_DIRS[0])],
                       note=f" (nor {os.path.join(root, ODIR_IMAGE_DIRS[1])})")


def odir5k_source(data_cfg) -> Source:
    """The ODIR-5K :class:`Source` under ``config.data`` (module docstring)."""
    cfg = with_defaults(data_cfg, odir5k_default_config())
    root = resolve_root(ODIR5K, cfg.root)
    _require_root(ODIR5K, root)
    sheet = _find_odir_annotations(root, str(cfg.annotation_file))
    image_dir = os.path.abspath(_find_odir_images(root, str(cfg.image_dir)))
    patients, files, patient_labels = read_odir_table(sheet)
    # one example per fundus image: left then right, with the patient's labels
    ids = [name for eyes in files for name in eyes]
    example_patient = [p for p in patients for _ in range(2)]
    labels = np.repeat(patient_labels, 2, axis=0)
    paths = [os.path.join(image_dir, name) for name in ids]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise _files_error(
            ODIR5K, "fundus image file" + ("" if len(missing) == 1 else "s"), missing[:_MAX_LISTED],
            total=len(missing), note=f"\n(names from the Left-/Right-Fundus columns of {sheet})",
        )
    fractions = _check_fractions(cfg.split_fractions)
    seed = int(cfg.split_seed)
    split_method = _check_split_method(cfg)
    rows = _rows_by_split(example_patient, split_patients(patients, fractions, seed, patient_labels, split_method))
    splits = {
        name: SourceSplit(tuple(ids[r] for r in idx), tuple(paths[r] for r in idx), labels[idx],
                          groups=tuple(str(example_patient[r]) for r in idx))
        for name, idx in rows.items()
    }
    info = {
        "root": root,
        "labels_file": sheet,
        "image_folder": image_dir,
        "split": "patient",
        "split_seed": seed,
        "split_fractions": list(fractions),
        "split_method": split_method,
        "patients": {name: len({example_patient[r] for r in idx}) for name, idx in rows.items()},
        "protocol": (
            f"ODIR-5K seeded patient-level split {':'.join(f'{x:g}' for x in fractions)} (train:val:test, "
            f"{split_method}), as "
            "LDRNet; one example per fundus image (left and right) with the patient's 8 labels (per-eye "
            "keywords not mapped)"
        ),
        "classes": ODIR_CLASS_DESCRIPTIONS,
        "extra_metrics": ["odir"],
    }
    return Source(ODIR5K, "image", ODIR_CLASSES, splits, info)


def odir5k_default_config() -> ml_collections.ConfigDict:
    """The ``odir5k`` fields of ``config.data``: the common source/image fields, root, files, the split."""
    c = source_defaults("image")
    c.root = ""  # data root; "" = $LTJAX_DATA_DIR/odir5k, else ~/data/odir5k
    c.annotation_file = ""  # "" = the official .xlsx name, its .csv, or the only *.xlsx / *.csv in root
    c.image_dir = ""  # "" = ODIR-5K_Training_Dataset/ or "Training Images/" under root
    c.split_seed = 0  # seeds the patient-level split
    c.split_fractions = (0.7, 0.1, 0.2)  # train / val / test fractions of the PATIENTS
    c.split_method = "stratified"  # "stratified" (iterative stratification of the patients) | "hash"
    return c


@DATASETS.register(ODIR5K)
def build_odir5k(data_cfg) -> Dataset:
    """ODIR-5K, 8 labels per patient on both fundus images; seeded patient-level split (module docstring)."""
    cfg = with_defaults(data_cfg, odir5k_default_config())
    return dataset_from_source(odir5k_source(cfg), cfg)


DEFAULT_CONFIGS = {CHESTXRAY14: chestxray14_default_config, ODIR5K: odir5k_default_config}
