"""ChestX-ray14 and ODIR-5K (ltjax/data/medical.py) on fixture trees written here in the real formats:
a Data_Entry_2017 CSV with small 8-bit / RGBA / 16-bit grayscale PNGs in the images_00N/images layout,
with and without the official list files; an ODIR-5K annotation .xlsx (openpyxl) and its CSV export with
tiny JPEG fundus images.  Plus odir_scores against sklearn and one short training run per dataset
through the real training core, followed by the evaluation report."""
import csv
import gzip
import io
import math
import os
import pathlib
import shutil
import sys
import warnings

import numpy as np
import pytest

from ltjax.data import build_dataset, dataset_defaults
from ltjax.data import medical
from ltjax.data.medical import AnnotationError, MissingPackageError
from ltjax.data.voc_coco import DatasetFilesError

HAS_PREPARED = (pathlib.Path(medical.__file__).parent / "prepared.py").is_file()
DEFAULT_STORAGE = "array_record" if HAS_PREPARED else "files"

# ---- ChestX-ray14 fixture --------------------------------------------------------------------------

NIH_HEADER_2017 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
# hand-written rows: image -> (Finding Labels cell, patient, expected class indices in NIH_FINDINGS order)
NIH_HAND = {
    "00000001_000.png": ("Cardiomegaly", 1, [1]),
    "00000001_001.png": ("Cardiomegaly|Emphysema", 1, [1, 10]),
    "00000001_002.png": ("Cardiomegaly|Effusion", 1, [1, 2]),
    "00000002_000.png": ("No Finding", 2, []),
    "00000003_000.png": ("Hernia|Pleural_Thickening|Atelectasis", 3, [0, 12, 13]),
    "00000004_000.png": ("Mass|Nodule|Infiltration|Effusion", 4, [2, 3, 4, 5]),
    "00000005_000.png": ("Pneumonia|Pneumothorax|Consolidation|Edema|Fibrosis", 5, [6, 7, 8, 9, 11]),
    "00000005_001.png": ("No Finding", 5, []),
}
_COMBOS = ["No Finding", "Infiltration", "Effusion|Atelectasis", "No Finding", "Nodule", "Mass|Pneumothorax",
           "Hernia", "No Finding", "Edema|Effusion|Infiltration", "Fibrosis"]  # fmt: skip


def nih_rows():
    """[(image, Finding Labels, patient)]: the hand rows, then 2 images each for patients 6..20 (38 rows)."""
    rows = [(name, text, pid) for name, (text, pid, _) in NIH_HAND.items()]
    for pid in range(6, 21):
        for k in range(2):
            rows.append((f"{pid:08d}_{k:03d}.png", _COMBOS[(pid + k) % len(_COMBOS)], pid))
    return rows


def _png(mode: str, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (24, 24), dtype=np.uint16))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 255, (24, 24, 4), dtype=np.uint8), "RGBA")
    else:
        img = Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8), "L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# official lists: patients 1..14 train_val (written in a scrambled order), 15..19 test; patient 20 unlisted
def official_lists():
    rows = nih_rows()
    train_val = [r[0] for r in rows if r[2] <= 14]
    train_val = train_val[::3] + train_val[1::3] + train_val[2::3]
    test = [r[0] for r in rows if 15 <= r[2] <= 19][::-1]
    return train_val, test


def make_nih(root: pathlib.Path, lists: bool = True, layout: str = "archive", table: str = "Data_Entry_2017.csv"):
    root.mkdir(parents=True)
    rows = nih_rows()
    lines = [NIH_HEADER_2017]
    for k, (name, text, pid) in enumerate(rows):
        lines.append(f"{name},{text},{k % 3},{pid},{40 + pid}Y,M,PA,2500,2048,0.168,0.168,")
    data = ("\n".join(lines) + "\n").encode()
    (root / table).write_bytes(gzip.compress(data) if table.endswith(".gz") else data)
    modes = ("L", "RGBA", "I;16")
    for k, (name, _, _) in enumerate(rows):
        folder = root / "images" if layout == "flat" else root / f"images_{1 + k % 2:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_png(modes[k % 3], k))
    if lists:
        train_val, test = official_lists()
        (root / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train_val))
        (root / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    return root


def data_config(name, root, **fields):
    from ltjax.defaults import base_config

    c = base_config().data
    c.update(dataset_defaults(name))
    c.name = name
    c.root = str(root)
    c.image_size = 16
    c.storage = "files"
    for k, v in fields.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory):
    return make_nih(tmp_path_factory.mktemp("nih") / "chestxray14")


@pytest.fixture(scope="module")
def nih_root_nolists(tmp_path_factory):
    return make_nih(tmp_path_factory.mktemp("nih_nolists") / "chestxray14", lists=False, layout="flat",
                    table="Data_Entry_2017_v2020.csv.gz")


def _source_labels(source):
    """id -> (split name, labels) over every split of a Source."""
    out = {}
    for name, split in source.splits.items():
        for i, ex_id in enumerate(split.ids):
            assert ex_id not in out
            out[ex_id] = (name, split.labels[i])
    return out


def _patients_by_split(source, patient_of):
    return {name: {patient_of(i) for i in split.ids} for name, split in source.splits.items()}


NIH_PATIENT = {name: pid for name, _, pid in nih_rows()}


def _assert_patient_disjoint(source, patient_of):
    groups = _patients_by_split(source, patient_of)
    names = list(groups)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert not groups[names[a]] & groups[names[b]], (names[a], names[b])
    return groups


# ---- ChestX-ray14: labels ----------------------------------------------------------------------------


def test_nih_labels_are_parsed_exactly(nih_root):
    src = medical.chestxray14_source(data_config("chestxray14", nih_root))
    assert src.class_names == medical.NIH_FINDINGS
    assert src.class_names[0] == "Atelectasis" and src.class_names[13] == "Hernia" and len(src.class_names) == 14
    labels = _source_labels(src)
    for name, (_, _, expected) in NIH_HAND.items():
        split, y = labels[name]
        assert y.dtype == np.float32
        assert np.flatnonzero(y).tolist() == expected, name
    no_finding = [n for n, text, pid in nih_rows() if text == "No Finding" and pid != 20]  # 20: unlisted
    assert len(no_finding) >= 4
    for n in no_finding:
        assert not labels[n][1].any()
    # every row of the table: the label vector is exactly the '|'-separated set
    index = {c: k for k, c in enumerate(medical.NIH_FINDINGS)}
    for name, text, pid in nih_rows():
        if pid == 20:  # not in the official lists
            assert name not in labels
            continue
        expected = [] if text == "No Finding" else sorted(index[t] for t in text.split("|"))
        assert np.flatnonzero(labels[name][1]).tolist() == expected


def test_nih_items_are_the_files_across_image_folders(nih_root):
    src = medical.chestxray14_source(data_config("chestxray14", nih_root))
    train = src.splits["train"]
    for ex_id, path in zip(train.ids, train.items):
        assert os.path.isabs(path) and os.path.basename(path) == ex_id and os.path.isfile(path)
    folders = {pathlib.Path(p).parent.parent.name for s in src.splits.values() for p in s.items}
    assert folders == {"images_001", "images_002"}
    assert src.info["labels_file"] == str(nih_root / "Data_Entry_2017.csv")


def test_nih_decodes_gray_rgba_and_16_bit_pngs(nih_root):
    ds = build_dataset(data_config("chestxray14", nih_root))
    test = ds.split("test")
    for i in range(3):  # the fixture cycles through L, RGBA and I;16 PNGs
        out = ds.eval_transform(test[i])
        assert out["inputs"].shape == (16, 16, 3) and out["inputs"].dtype == np.float32
        assert np.isfinite(out["inputs"]).all()
    assert ds.meta.input_kind == "image" and ds.meta.num_classes == 14


# ---- ChestX-ray14: splits ----------------------------------------------------------------------------


def test_nih_official_lists_are_respected_exactly(nih_root):
    src = medical.chestxray14_source(data_config("chestxray14", nih_root))  # split="auto" -> official
    train_val, test = official_lists()
    assert set(src.splits) == {"train", "test"}
    assert list(src.splits["train"].ids) == train_val  # the list's order, not the table's
    assert list(src.splits["test"].ids) == test
    assert src.info["split"] == "official" and src.info["unlisted_images"] == 2
    same = medical.chestxray14_source(data_config("chestxray14", nih_root, split="official"))
    assert same.splits["train"].ids == src.splits["train"].ids


def test_nih_official_split_with_a_patient_level_val_carve_out(nih_root):
    src = medical.chestxray14_source(data_config("chestxray14", nih_root, val_fraction=0.25, split_seed=3,
                                                 split_method="hash"))
    train_val, test = official_lists()
    assert set(src.splits) == {"train", "val", "test"}
    assert sorted(src.splits["train"].ids + src.splits["val"].ids) == sorted(train_val)
    assert list(src.splits["test"].ids) == test
    groups = _assert_patient_disjoint(src, NIH_PATIENT.get)
    assert len(groups["val"]) == round(0.25 * 14) and len(groups["train"]) == 14 - len(groups["val"])
    # train keeps the list order
    assert list(src.splits["train"].ids) == [n for n in train_val if n in set(src.splits["train"].ids)]


def test_nih_patient_split_is_patient_level_seeded_and_7_1_2(nih_root, nih_root_nolists):
    cfg = data_config("chestxray14", nih_root_nolists, split_method="hash")  # no lists: "auto" -> patient
    src = medical.chestxray14_source(cfg)
    assert src.info["split"] == "patient" and src.info["labels_file"].endswith("Data_Entry_2017_v2020.csv.gz")
    assert set(src.splits) == {"train", "val", "test"}
    groups = _assert_patient_disjoint(src, NIH_PATIENT.get)
    assert {k: len(v) for k, v in groups.items()} == {"train": 14, "val": 2, "test": 4}  # 20 patients, 7:1:2
    assert src.info["patients"] == {"train": 14, "val": 2, "test": 4}
    assert sorted(i for s in src.splits.values() for i in s.ids) == sorted(NIH_PATIENT)  # every row once
    again = medical.chestxray14_source(cfg)
    assert all(again.splits[k].ids == src.splits[k].ids for k in src.splits)
    # the same split from the other fixture tree (lists present, split forced), and another split per seed
    forced = medical.chestxray14_source(data_config("chestxray14", nih_root, split="patient", split_method="hash"))
    assert all(forced.splits[k].ids == src.splits[k].ids for k in src.splits)
    other = medical.chestxray14_source(data_config("chestxray14", nih_root_nolists, split_seed=1, split_method="hash"))
    assert _patients_by_split(other, NIH_PATIENT.get) != groups
    _assert_patient_disjoint(other, NIH_PATIENT.get)
    custom = medical.chestxray14_source(data_config("chestxray14", nih_root_nolists, split_fractions=(0.5, 0.0, 0.5),
                                                    split_method="hash"))
    assert set(custom.splits) == {"train", "test"} and custom.info["patients"] == {"train": 10, "test": 10}
    with pytest.raises(AnnotationError, match="split_fractions"):
        medical.chestxray14_source(data_config("chestxray14", nih_root_nolists, split_fractions=(0.7, 0.1, 0.1)))
    with pytest.raises(AnnotationError, match="data.split must be one of"):
        medical.chestxray14_source(data_config("chestxray14", nih_root_nolists, split="random"))


def test_patient_split_does_not_depend_on_row_order():
    patients = [str(p) for p in range(50)]
    a = medical.split_patients(patients, (0.7, 0.1, 0.2), 0)
    b = medical.split_patients(patients[::-1] * 2, (0.7, 0.1, 0.2), 0)
    assert a == b and len(a["train"]) == 35 and len(a["val"]) == 5 and len(a["test"]) == 10


def _long_tail_patients(n_patients=400, num_classes=14, seed=0):
    """Rows (images) with a patient id each and long-tailed labels: class c on ~ 0.4 * 0.6^c of patients."""
    rng = np.random.default_rng(seed)
    per_patient = (rng.random((n_patients, num_classes)) < 0.4 * 0.6 ** np.arange(num_classes)).astype(np.float32)
    images = rng.integers(1, 4, n_patients)  # 1-3 images per patient, each with a subset of its labels
    patients, labels = [], []
    for p, k in enumerate(images):
        for j in range(k):
            patients.append(f"p{p:04d}")
            labels.append(per_patient[p] if j == 0 else per_patient[p] * (rng.random(num_classes) < 0.7))
    return patients, np.asarray(labels), per_patient


def test_stratified_patient_split_puts_every_class_with_2_patients_on_both_sides_of_each_cut():
    patients, labels, _ = _long_tail_patients()
    counts = {}
    for method in ("stratified", "hash"):
        groups = medical.split_patients(patients, (0.7, 0.1, 0.2), 0, labels, method)
        assert set().union(*groups.values()) == set(patients)
        assert sum(len(g) for g in groups.values()) == len(set(patients))  # patient-disjoint
        has = {k: (labels[[p in g for p in patients]] > 0).any(axis=0) for k, g in groups.items()}
        by_patient = {}
        for p, y in zip(patients, labels):
            by_patient[p] = by_patient.get(p, 0) + (y > 0)
        n_pat = (np.stack(list(by_patient.values())) > 0).sum(axis=0)
        counts[method] = (groups, has, n_pat)
    groups, has, n_pat = counts["stratified"]
    n = len(set(patients))
    assert abs(len(groups["test"]) - 0.2 * n) <= 0.03 * n and abs(len(groups["val"]) - 0.1 * n) <= 0.03 * n
    assert np.all(has["test"][n_pat >= 2]) and np.all(has["train"][n_pat >= 2])  # first cut: test vs the rest
    # second cut (val from train + val): every class with >= 2 patients left after the test cut
    left = np.zeros(labels.shape[1], int)
    for p in groups["train"] | groups["val"]:
        left += (labels[[q == p for q in patients]] > 0).any(axis=0)
    assert np.all(has["val"][left >= 2]) and np.all(has["train"][left >= 2])
    hash_groups, hash_has, _ = counts["hash"]
    # the label-blind split of the same patients leaves some rare class out of val or test
    assert not (np.all(hash_has["val"][n_pat >= 3]) and np.all(hash_has["test"][n_pat >= 3]))
    # order independence and seeding
    again = medical.split_patients(patients[::-1], (0.7, 0.1, 0.2), 0, labels[::-1], "stratified")
    assert again == groups
    assert medical.split_patients(patients, (0.7, 0.1, 0.2), 1, labels, "stratified") != groups
    with pytest.raises(AnnotationError, match="split_method"):
        medical.split_patients(patients, (0.7, 0.1, 0.2), 0, labels, "random")


# ---- ChestX-ray14: errors ----------------------------------------------------------------------------


def _assert_helpful(err, dataset, path):
    msg = str(err)
    assert str(path) in msg
    assert msg.startswith(f"{dataset}:")
    assert "--config.data.root=" in msg and "LTJAX_DATA_DIR" in msg
    layout = ("Data_Entry_2017", "images_001/images/") if dataset == "chestxray14" else (
        medical.ODIR_ANNOTATIONS, "ODIR-5K_Training_Dataset/")
    assert all(part in msg for part in layout)


def test_nih_official_split_without_lists_is_a_clear_error(nih_root_nolists):
    with pytest.raises(DatasetFilesError) as e:
        medical.chestxray14_source(data_config("chestxray14", nih_root_nolists, split="official"))
    _assert_helpful(e.value, "chestxray14", nih_root_nolists / "train_val_list.txt")
    assert "test_list.txt" in str(e.value) and "--config.data.split=patient" in str(e.value)


def test_nih_missing_files(tmp_path):
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("chestxray14", tmp_path / "nowhere"))
    _assert_helpful(e.value, "chestxray14", tmp_path / "nowhere")

    root = make_nih(tmp_path / "chestxray14")
    table = root / "Data_Entry_2017.csv"
    (root / "test_list.txt").unlink()  # "auto" with only one list: an error, not a silent patient split
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("chestxray14", root))
    _assert_helpful(e.value, "chestxray14", root / "test_list.txt")

    gone = sorted((root / "images_001" / "images").iterdir())[:7]
    for p in gone:
        p.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("chestxray14", root, split="patient"))
    _assert_helpful(e.value, "chestxray14", gone[0].name)
    assert "7 image files missing" in str(e.value) and "and 2 more" in str(e.value)
    assert str(root / "images_002" / "images") in str(e.value)  # says where it looked

    shutil.rmtree(root / "images_001")
    shutil.rmtree(root / "images_002")
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("chestxray14", root, split="patient"))
    _assert_helpful(e.value, "chestxray14", root / "images")

    table.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("chestxray14", root))
    _assert_helpful(e.value, "chestxray14", root / "Data_Entry_2017_v2020.csv")
    assert isinstance(e.value, FileNotFoundError)


def test_nih_root_from_environment(nih_root, monkeypatch):
    monkeypatch.setenv("LTJAX_DATA_DIR", str(nih_root.parent))
    src = medical.chestxray14_source(data_config("chestxray14", ""))
    assert src.info["root"] == str(nih_root)


def _rewrite(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_nih_bad_tables_name_the_row(tmp_path):
    root = make_nih(tmp_path / "chestxray14", lists=False)
    table = root / "Data_Entry_2017.csv"
    original = table.read_text()
    _rewrite(table, "00000004_000.png,Mass|Nodule|", "00000004_000.png,Mass|Nodules|")
    with pytest.raises(AnnotationError) as e:
        build_dataset(data_config("chestxray14", root))
    msg = str(e.value)
    assert f"{table}:7" in msg and "00000004_000.png" in msg and "unknown finding 'Nodules'" in msg

    table.write_text(original)
    _rewrite(table, "00000002_000.png,No Finding,", "00000002_000.png,No Finding|Mass,")
    with pytest.raises(AnnotationError, match="'No Finding' together with findings"):
        build_dataset(data_config("chestxray14", root))

    table.write_text(original.replace("Patient ID", "Patient", 1))
    with pytest.raises(AnnotationError) as e:
        build_dataset(data_config("chestxray14", root))
    assert str(table) in str(e.value) and "no column 'Patient ID'" in str(e.value)

    table.write_text(original)
    (root / "train_val_list.txt").write_text("00000001_000.png\n99999999_000.png\n")
    (root / "test_list.txt").write_text("00000002_000.png\n")
    with pytest.raises(AnnotationError, match=r"train_val_list.txt: 1 listed image\(s\) are not in .*99999999_000.png"):
        build_dataset(data_config("chestxray14", root))
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000002_000.png\n")
    with pytest.raises(AnnotationError, match="in both train_val_list.txt and test_list.txt, e.g. 00000002_000.png"):
        build_dataset(data_config("chestxray14", root))


# ---- ODIR-5K fixture ----------------------------------------------------------------------------------

ODIR_HEADER = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
               "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"]  # fmt: skip
# patient ID -> labels N D G C A H M O (hand-written; several patients, all eight labels used)
ODIR_LABELS = {
    0: [0, 0, 0, 1, 0, 0, 0, 0],  # cataract
    1: [1, 0, 0, 0, 0, 0, 0, 0],  # normal
    2: [0, 1, 0, 0, 0, 0, 0, 1],  # diabetes + other
    3: [0, 1, 0, 0, 0, 0, 0, 0],
    4: [0, 1, 0, 0, 0, 0, 0, 0],
    5: [0, 0, 1, 0, 0, 0, 0, 0],
    6: [1, 0, 0, 0, 0, 0, 0, 0],
    8: [0, 0, 0, 0, 1, 1, 0, 0],  # AMD + hypertension (IDs need not be contiguous)
    9: [0, 0, 0, 0, 0, 0, 1, 0],
    10: [1, 0, 0, 0, 0, 0, 0, 0],
    11: [0, 0, 0, 0, 0, 0, 0, 1],
    13: [0, 1, 1, 0, 0, 0, 0, 1],
}


def odir_rows():
    rows = []
    for pid, y in ODIR_LABELS.items():
        rows.append([pid, 40 + pid, "Female" if pid % 2 else "Male", f"{pid}_left.jpg", f"{pid}_right.jpg",
                     "normal fundus", "moderate non proliferative retinopathy", *y])  # fmt: skip
    return rows


def _jpeg(seed):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_odir(root: pathlib.Path, fmt: str = "xlsx", image_dir: str = "ODIR-5K_Training_Dataset"):
    root.mkdir(parents=True)
    rows = odir_rows()
    if fmt == "xlsx":
        import openpyxl

        wb = openpyxl.Workbook()
        ws = wb.active
        ws.title = "Sheet1"
        ws.append(ODIR_HEADER)
        for r in rows:
            ws.append(r)
        wb.save(root / medical.ODIR_ANNOTATIONS)
    else:
        with open(root / "ODIR-5K_Training_Annotations(Updated)_V2.csv", "w", newline="", encoding="utf-8-sig") as f:
            w = csv.writer(f)
            w.writerow(ODIR_HEADER)
            w.writerows(rows)
    (root / image_dir).mkdir()
    for k, r in enumerate(rows):
        for eye in (3, 4):
            (root / image_dir / r[eye]).write_bytes(_jpeg(2 * k + eye))
    return root


@pytest.fixture(scope="module")
def odir_root(tmp_path_factory):
    return make_odir(tmp_path_factory.mktemp("odir") / "odir5k")


def _odir_patient(ex_id):
    return int(ex_id.split("_")[0])


# ---- ODIR-5K -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_odir_one_example_per_eye_with_the_patient_labels(tmp_path, fmt):
    image_dir = "ODIR-5K_Training_Dataset" if fmt == "xlsx" else "Training Images"
    root = make_odir(tmp_path / "odir5k", fmt=fmt, image_dir=image_dir)
    src = medical.odir5k_source(data_config("odir5k", root))
    assert src.class_names == ("N", "D", "G", "C", "A", "H", "M", "O")
    labels = _source_labels(src)
    assert len(labels) == 2 * len(ODIR_LABELS)
    for pid, y in ODIR_LABELS.items():
        for eye in ("left", "right"):
            split, got = labels[f"{pid}_{eye}.jpg"]
            assert got.tolist() == y, (pid, eye)
        assert labels[f"{pid}_left.jpg"][0] == labels[f"{pid}_right.jpg"][0]  # both eyes in one split
    for split in src.splits.values():
        for ex_id, path in zip(split.ids, split.items):
            assert path.endswith(os.sep + ex_id) and os.path.isfile(path)
    assert src.info["extra_metrics"] == ["odir"]
    expected_sheet = medical.ODIR_ANNOTATIONS if fmt == "xlsx" else "ODIR-5K_Training_Annotations(Updated)_V2.csv"
    assert os.path.basename(src.info["labels_file"]) == expected_sheet


def test_odir_xlsx_and_csv_give_the_same_source(tmp_path, odir_root):
    root = make_odir(tmp_path / "odir5k", fmt="csv")
    a = medical.odir5k_source(data_config("odir5k", odir_root))
    b = medical.odir5k_source(data_config("odir5k", root))
    for k in a.splits:
        assert a.splits[k].ids == b.splits[k].ids
        np.testing.assert_array_equal(a.splits[k].labels, b.splits[k].labels)


def test_odir_patient_split_is_seeded_and_patient_level(odir_root):
    stratified = medical.odir5k_source(data_config("odir5k", odir_root))  # the default
    assert stratified.info["split_method"] == "stratified" and "stratified" in stratified.info["protocol"]
    _assert_patient_disjoint(stratified, _odir_patient)
    src = medical.odir5k_source(data_config("odir5k", odir_root, split_method="hash"))
    groups = _assert_patient_disjoint(src, _odir_patient)
    assert {k: len(v) for k, v in groups.items()} == {"train": 8, "val": 2, "test": 2}  # 12 patients, 7:1:2
    again = medical.odir5k_source(data_config("odir5k", odir_root, split_method="hash"))
    assert all(again.splits[k].ids == src.splits[k].ids for k in src.splits)
    others = [medical.odir5k_source(data_config("odir5k", odir_root, split_seed=s)) for s in (1, 2)]
    assert any(_patients_by_split(o, _odir_patient) != groups for o in others)
    for o in others:
        _assert_patient_disjoint(o, _odir_patient)


def test_odir_missing_files(tmp_path):
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("odir5k", tmp_path / "nowhere"))
    _assert_helpful(e.value, "odir5k", tmp_path / "nowhere")

    root = make_odir(tmp_path / "odir5k")
    gone = root / "ODIR-5K_Training_Dataset" / "8_right.jpg"
    gone.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("odir5k", root))
    _assert_helpful(e.value, "odir5k", gone)
    assert "missing fundus image file" in str(e.value)

    os.rename(root / "ODIR-5K_Training_Dataset", root / "elsewhere")
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("odir5k", root))
    _assert_helpful(e.value, "odir5k", root / "ODIR-5K_Training_Dataset")
    (root / "elsewhere" / "8_right.jpg").write_bytes(_jpeg(0))
    src = medical.odir5k_source(data_config("odir5k", root, image_dir="elsewhere"))
    assert src.info["image_folder"] == str(root / "elsewhere")

    (root / medical.ODIR_ANNOTATIONS).unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("odir5k", root, image_dir="elsewhere"))
    _assert_helpful(e.value, "odir5k", root / medical.ODIR_ANNOTATIONS)


def test_odir_sheet_found_by_extension_or_named(tmp_path, odir_root):
    root = tmp_path / "odir5k"
    shutil.copytree(odir_root, root)
    os.rename(root / medical.ODIR_ANNOTATIONS, root / "data.xlsx")  # a re-distribution's name
    assert medical.odir5k_source(data_config("odir5k", root)).info["labels_file"] == str(root / "data.xlsx")
    shutil.copy(root / "data.xlsx", root / "other.xlsx")
    with pytest.raises(AnnotationError, match="several .xlsx files .*--config.data.annotation_file"):
        medical.odir5k_source(data_config("odir5k", root))
    src = medical.odir5k_source(data_config("odir5k", root, annotation_file="other.xlsx"))
    assert src.info["labels_file"] == str(root / "other.xlsx")


def test_odir_bad_sheets_name_the_row(tmp_path):
    import openpyxl

    root = make_odir(tmp_path / "odir5k")
    path = root / medical.ODIR_ANNOTATIONS
    wb = openpyxl.load_workbook(path)
    wb.active["K4"] = 2  # row 4 = patient 2, column K = "C"
    wb.save(path)
    with pytest.raises(AnnotationError) as e:
        build_dataset(data_config("odir5k", root))
    assert str(path) in str(e.value) and "row 4 (ID 2), column C: expected 0 or 1, got 2" in str(e.value)
    wb.active["K4"] = 0
    wb.active["N1"] = "Myopia"  # header "M" renamed
    wb.save(path)
    with pytest.raises(AnnotationError) as e:
        build_dataset(data_config("odir5k", root))
    assert str(path) in str(e.value) and "no column 'M'" in str(e.value)


def test_odir_xlsx_without_openpyxl_says_what_to_do(odir_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    with pytest.raises(MissingPackageError) as e:
        build_dataset(data_config("odir5k", odir_root))
    assert "pip install openpyxl" in str(e.value) and "CSV" in str(e.value)


# ---- odir_scores -----------------------------------------------------------------------------------------


def _sklearn_odir(labels, scores, th=0.5):
    from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

    gt, pr = labels.ravel(), scores.ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(gt, pr > th)
    f1 = f1_score(gt, pr > th, average="micro")  # exactly as the official ODIR_Metrics
    auc = roc_auc_score(gt, pr) if 0 < gt.sum() < gt.size else float("nan")
    return kappa, f1, auc, (kappa + f1 + auc) / 3


@pytest.mark.parametrize("seed", range(6))
def test_odir_scores_match_sklearn_with_ties(seed):
    from sklearn.metrics import f1_score

    from ltjax.metrics import odir_scores

    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(5, 60)), 8
    labels = (rng.random((n, c)) < rng.uniform(0.05, 0.6)).astype(np.float32)
    scores = np.round(rng.random((n, c)), 1).astype(np.float32)  # many ties, some exactly at 0.5
    scores[0, :] = 0.5
    out = odir_scores(labels, scores)
    kappa, f1, auc, final = _sklearn_odir(labels, scores)
    assert out["kappa"] == pytest.approx(kappa, abs=1e-12)
    assert out["f1"] == pytest.approx(f1, abs=1e-12)
    assert out["auc"] == pytest.approx(auc, abs=1e-12)
    assert out["final"] == pytest.approx(final, abs=1e-12)
    assert out["f1_binary"] == pytest.approx(f1_score(labels.ravel(), scores.ravel() > 0.5), abs=1e-12)
    other = odir_scores(labels, scores, threshold=0.3)
    assert other["kappa"] == pytest.approx(_sklearn_odir(labels, scores, 0.3)[0], abs=1e-12)


def test_odir_scores_hand_example_and_undefined_cases():
    from ltjax.metrics import odir_scores

    labels = np.array([[1, 0], [0, 1]], np.float32)
    scores = np.array([[0.9, 0.5], [0.2, 0.5]], np.float32)  # 0.5 is not > 0.5: predicted negative
    out = odir_scores(labels, scores)
    # flattened gt 1 0 0 1, pred 1 0 0 0: accuracy 3/4; po = 3/4, pe = 1/2*1/4 + 1/2*3/4 = 1/2 -> kappa 1/2
    # AUC: positives 0.9, 0.5 vs negatives 0.5, 0.2: (1 + 1 + 0.5 + 1) / 4 = 7/8
    assert out["f1"] == 0.75 and out["kappa"] == 0.5 and out["auc"] == 0.875
    assert out["final"] == pytest.approx((0.75 + 0.5 + 0.875) / 3)
    assert out["f1_binary"] == pytest.approx(2 / 3)
    const = odir_scores(np.zeros((3, 2)), np.zeros((3, 2)))
    assert const["auc"] is None and const["kappa"] is None and const["final"] is None and const["f1"] == 1.0
    with pytest.raises(ValueError, match="only 0 and 1"):
        odir_scores(np.full((2, 2), 2.0), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="same non-empty"):
        odir_scores(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        odir_scores(np.zeros((2, 2)), np.full((2, 2), np.nan))


# ---- configs and end-to-end training ---------------------------------------------------------------------


def test_configs_load_with_ldrnet_setting():
    from ltjax.config import load_config

    repo = pathlib.Path(__file__).resolve().parents[1]
    nih = load_config(str(repo / "configs" / "chestxray14.py"))
    odir = load_config(str(repo / "configs" / "odir5k.py") + ":gce")
    for c in (nih, odir):
        assert c.model.name == "resnet50" and c.data.image_size == 448 and c.data.batch_size == 32
        assert c.optimizer.name == "adamw" and c.optimizer.lr == 1e-4 and c.optimizer.weight_decay == 1e-5
        assert c.data.groups.mode == "quantile"
    assert nih.data.name == "chestxray14" and nih.data.split == "auto" and nih.method.name == "bce"
    assert odir.data.name == "odir5k" and odir.method.name == "gce"
    assert tuple(odir.data.groups.quantiles) == (5 / 8, 5 / 8)


TINY_MODEL = "tiny_cnn_test_medical"


@pytest.fixture
def tiny_model(monkeypatch):
    """A one-conv image model (conv -> BN -> ReLU -> GAP -> linear head), registered for one test: the
    datasets, the pipeline, the train step and the evaluation are under test, not the network, and a
    ResNet's compile time (~25 s per class count here) would dominate this file."""
    import flax.linen as nn
    import jax.numpy as jnp
    import ml_collections

    from ltjax import models
    from ltjax.models import Backbone, Classifier, LinearHead

    class Trunk(nn.Module):
        @nn.compact
        def __call__(self, x, *, train: bool):
            x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            return jnp.mean(nn.relu(x), axis=(1, 2))

    def defaults():
        c = ml_collections.ConfigDict()
        c.name = TINY_MODEL
        return c

    def build(model_cfg, num_classes, input_shape, dtype=jnp.float32, vocab_size=0):
        return Classifier(Backbone(Trunk()), LinearHead(num_classes))

    def trainable_mask(model_cfg, params):
        import jax

        return jax.tree.map(lambda _: True, params)

    monkeypatch.setitem(models.MODELS._items, TINY_MODEL, models.ModelSpec(defaults, build, trainable_mask))
    return TINY_MODEL


def _tiny_config(name, root, prepared_dir):
    from ltjax.defaults import experiment_config

    c = experiment_config(name, TINY_MODEL, "bce")
    c.data.root = str(root)
    c.data.image_size = 32
    c.data.storage = DEFAULT_STORAGE
    c.data.prepared_dir = str(prepared_dir)
    c.data.batch_size = 8
    c.data.eval_batch_size = 16
    c.data.groups.mode = "quantile"
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 1e-5
    c.schedule.name = "constant"
    c.schedule.warmup_steps = 0
    c.train.num_epochs = 1
    c.train.steps_per_epoch = 2
    c.train.progress_bar = "off"
    return c


def _train_and_evaluate(config, workdir, capsys):
    from ltjax.training.loop import train_and_evaluate

    result = train_and_evaluate(config, str(workdir))
    printed = capsys.readouterr().out
    assert math.isfinite(result["mAP"]) and math.isfinite(result["auc_macro"])
    assert result["step"] == 2 and os.path.isfile(os.path.join(workdir, "eval.json"))
    return result, printed


@pytest.mark.parametrize("storage", ["files"] + (["array_record"] if HAS_PREPARED else []))
def test_storages_give_the_same_examples(odir_root, tmp_path, storage):
    ds = build_dataset(data_config("odir5k", odir_root, storage=storage, prepared_dir=str(tmp_path)))
    ref = medical.odir5k_source(data_config("odir5k", odir_root))
    for name, split in ref.splits.items():
        got = ds.split(name)
        np.testing.assert_array_equal(got.labels, split.labels)
        for i in (0, len(split) - 1):
            out = ds.eval_transform(got[i])
            expected = ds.eval_transform({"inputs": split.items[i], "labels": split.labels[i]})
            np.testing.assert_array_equal(out["inputs"], expected["inputs"])


def test_chestxray14_trains_and_evaluates(nih_root, tmp_path, capsys, tiny_model):
    result, printed = _train_and_evaluate(_tiny_config("chestxray14", nih_root, tmp_path / "prepared"),
                                          tmp_path / "run", capsys)
    assert result["dataset"] == "chestxray14" and result["num_classes"] == 14 and "odir" not in result
    assert "ODIR scores" not in printed


def test_odir5k_trains_and_evaluates_with_the_odir_scores(odir_root, tmp_path, capsys, tiny_model):
    import json

    result, printed = _train_and_evaluate(_tiny_config("odir5k", odir_root, tmp_path / "prepared"),
                                          tmp_path / "run", capsys)
    n_test = len(medical.odir5k_source(data_config("odir5k", odir_root)).splits["test"])
    assert result["dataset"] == "odir5k" and result["num_examples"] == n_test and n_test % 2 == 0  # 2 eyes each
    odir = result["odir"]
    for k in ("kappa", "f1", "auc", "final"):
        assert odir[k] is None or math.isfinite(odir[k])
    assert math.isfinite(odir["f1"]) and math.isfinite(odir["auc"])
    assert "ODIR scores (threshold 0.5): kappa" in printed
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["odir"] == odir
