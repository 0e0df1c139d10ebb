"""The ``custom`` dataset (bring your own data): manifests written here as CSV / JSONL next to tiny JPEG/PNG
files, every parsed label and class order checked against values written out by hand, the split rules,
every manifest error, both storages, text documents, and one training + evaluation run through the CLI."""
import io
import json
import os
import pathlib

import numpy as np
import pytest

from ltjax.data import build_dataset, custom
from ltjax.data.custom import ManifestError
from ltjax.data.voc_coco import DatasetFilesError

IMAGE_SIZE = 16


def _image_bytes(fmt: str, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpeg():
    return _image_bytes("JPEG")


@pytest.fixture(scope="module")
def png():
    return _image_bytes("PNG", 1)


def write_images(root: pathlib.Path, names, jpeg, png):
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png if n.endswith(".png") else jpeg)


def cfg(manifest, **fields):
    from ltjax.defaults import base_config

    c = base_config().data
    c.update(custom.default_config())
    c.name = "custom"
    c.manifest = str(manifest)
    c.storage = "files"
    c.image_size = IMAGE_SIZE
    for k, v in fields.items():
        c[k] = v
    return c


def labels_of(split):
    return split.labels.astype(int).tolist()


# ---- the hand-checked example ------------------------------------------------------------------------

# 6 examples, a split column, a group column and an extra column with a quoted comma.  Classes, sorted by
# name: bird (0), cat (1), dog (2).
CSV_TEXT = """id,path,labels,split,patient,note
x1,images/a.jpg,cat|dog,train,p1,hello
x2,images/b.png,dog,train,p1,
x3,images/c.jpg,,train,p2,"a, b"
x4,sub/d.jpg, bird | cat ,Test ,p3,
x5,images/e.png,dog|dog,val,p4,

x6,images/f.jpg,bird,test,p5,
"""
JSONL_ROWS = [
    {"id": "x1", "path": "images/a.jpg", "labels": ["cat", "dog"], "split": "train", "patient": "p1"},
    {"id": "x2", "path": "images/b.png", "labels": ["dog"], "split": "train", "patient": "p1"},
    {"id": "x3", "path": "images/c.jpg", "labels": [], "split": "train", "patient": "p2", "note": "a, b"},
    {"id": "x4", "path": "sub/d.jpg", "labels": ["bird", "cat"], "split": "test", "patient": "p3"},
    {"id": "x5", "path": "images/e.png", "labels": ["dog"], "split": "val", "patient": "p4"},
    {"id": "x6", "path": "images/f.jpg", "labels": ["bird"], "split": "test", "patient": 5},
]
IMAGES = ["images/a.jpg", "images/b.png", "images/c.jpg", "sub/d.jpg", "images/e.png", "images/f.jpg"]
EXPECTED = {  # split -> (ids, labels over (bird, cat, dog))
    "train": (("x1", "x2", "x3"), [[0, 1, 1], [0, 0, 1], [0, 0, 0]]),
    "val": (("x5",), [[0, 0, 1]]),
    "test": (("x4", "x6"), [[1, 1, 0], [1, 0, 0]]),
}


@pytest.fixture
def tree(tmp_path, jpeg, png):
    write_images(tmp_path, IMAGES, jpeg, png)
    (tmp_path / "labels.csv").write_text(CSV_TEXT)
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in JSONL_ROWS) + "\n\n")
    return tmp_path


@pytest.mark.parametrize("manifest", ["labels.csv", "labels.jsonl"])
def test_manifest_labels_ids_paths_and_class_order(tree, manifest):
    src = custom.build_source(cfg(tree / manifest, split_column="split", group_column="patient"))
    assert src.kind == "image" and src.name == "custom"
    assert src.class_names == ("bird", "cat", "dog")
    assert set(src.splits) == {"train", "val", "test"}
    for split, (ids, labels) in EXPECTED.items():
        assert src.splits[split].ids == ids
        assert labels_of(src.splits[split]) == labels
    assert src.splits["test"].items == (str(tree / "sub" / "d.jpg"), str(tree / "images" / "f.jpg"))
    assert src.info["examples_without_labels"] == {"train": 1, "val": 0, "test": 0}
    assert src.info["classes_without_training_examples"] == ["bird"]
    assert src.info["groups_per_split"] == {"train": 2, "val": 1, "test": 2}
    assert src.info["root"] == str(tree) and src.info["manifest"] == str(tree / manifest)
    json.dumps(src.info)


def test_default_ids_fixed_classes_frequency_order_and_separator(tree):
    (tree / "plain.csv").write_text("path,labels\nimages/a.jpg,dog;cat\nimages/b.png,dog\n./sub/d.jpg,bird\n"
                                    "images/c.jpg,dog\nimages/e.png,cat\n")
    c = cfg(tree / "plain.csv", label_separator=";", test_fraction=0.2)
    src = custom.build_source(c)
    ids = sorted(src.splits["train"].ids + src.splits["test"].ids)
    assert ids == ["images/a.jpg", "images/b.png", "images/c.jpg", "images/e.png", "sub/d.jpg"]  # path = id
    # fixed classes: their order, an unused class allowed (n_c = 0)
    src = custom.build_source(cfg(tree / "plain.csv", label_separator=";", class_names="dog, fish,cat,bird"))
    assert src.class_names == ("dog", "fish", "cat", "bird")
    # frequency order over the training split: dog 3, cat 2, bird 1 when everything but one row trains
    (tree / "f.csv").write_text("path,labels\nimages/f.jpg,cat\n")
    src = custom.build_source(cfg(tree / "plain.csv", label_separator=";", class_order="frequency",
                                  test_manifest=str(tree / "f.csv")))
    assert src.class_names == ("dog", "cat", "bird")
    assert src.splits["test"].ids == ("images/f.jpg",) and len(src.splits["train"]) == 5


def test_label_columns(tree):
    (tree / "onehot.csv").write_text(
        "path,zebra,ant,split,comment\n"
        "images/a.jpg,1,0,train,x\n"
        "images/b.png,0.0,1.0,train,y\n"
        "images/c.jpg,true,FALSE,test,z\n"
        "images/e.png,0,0,test,\n"
    )
    with pytest.raises(ManifestError, match=r"onehot.csv:2: label column 'comment' holds 'x'"):
        custom.build_source(cfg(tree / "onehot.csv", label_columns="all", split_column="split"))
    (tree / "onehot.csv").write_text((tree / "onehot.csv").read_text().replace(",comment", "").replace(",x\n", "\n")
                                     .replace(",y\n", "\n").replace(",z\n", "\n").replace(",\n", "\n"))
    src = custom.build_source(cfg(tree / "onehot.csv", label_columns="all", split_column="split"))
    assert src.class_names == ("ant", "zebra")  # sorted names
    assert labels_of(src.splits["train"]) == [[0, 1], [1, 0]]
    assert labels_of(src.splits["test"]) == [[0, 1], [0, 0]]
    src = custom.build_source(cfg(tree / "onehot.csv", label_columns="zebra", split_column="split"))
    assert src.class_names == ("zebra",) and labels_of(src.splits["test"]) == [[1], [0]]
    jsonl = tree / "onehot.jsonl"
    jsonl.write_text('{"path": "images/a.jpg", "ant": 0, "zebra": true, "split": "train"}\n'
                     '{"path": "images/b.png", "ant": 1, "zebra": 0, "split": "test"}\n')
    src = custom.build_source(cfg(jsonl, label_columns="ant,zebra", split_column="split"))
    assert labels_of(src.splits["train"]) == [[0, 1]] and labels_of(src.splits["test"]) == [[1, 0]]
    (tree / "bad.csv").write_text("path,ant,zebra\nimages/a.jpg,1,-1\n")
    with pytest.raises(ManifestError, match=r"bad.csv:2: label column 'zebra' holds '-1'.*must be 0 or 1"):
        custom.build_source(cfg(tree / "bad.csv", label_columns="all"))


# ---- splits ------------------------------------------------------------------------------------------


def _many(tmp_path, jpeg, n, group_of=None, name="many.csv"):
    paths = [f"img/{i:03d}.jpg" for i in range(n)]
    write_images(tmp_path, paths, jpeg, jpeg)
    lines = ["path,labels" + (",g" if group_of else "")]
    for i, p in enumerate(paths):
        lines.append(f"{p},{'a|b' if i % 3 == 0 else 'a'}" + (f",{group_of(i)}" if group_of else ""))
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return tmp_path / name


def test_seeded_random_split_is_reproducible(tmp_path, jpeg):
    m = _many(tmp_path, jpeg, 40)
    a = custom.build_source(cfg(m, test_fraction=0.25, val_fraction=0.1, split_seed=3, split_method="random"))
    b = custom.build_source(cfg(m, test_fraction=0.25, val_fraction=0.1, split_seed=3, split_method="random"))
    other = custom.build_source(cfg(m, test_fraction=0.25, val_fraction=0.1, split_seed=4, split_method="random"))
    sizes = {s: len(a.splits[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 26, "val": 4, "test": 10}
    for s in ("train", "val", "test"):
        assert a.splits[s].ids == b.splits[s].ids
        assert list(a.splits[s].ids) == sorted(a.splits[s].ids)  # manifest order kept
    assert a.splits["test"].ids != other.splits["test"].ids
    all_ids = a.splits["train"].ids + a.splits["val"].ids + a.splits["test"].ids
    assert sorted(all_ids) == [f"img/{i:03d}.jpg" for i in range(40)]
    # the documented rule: the first round(0.25 * 40) = 10 rows of default_rng(3).permutation go to test
    perm = np.random.default_rng(3).permutation(40)
    assert a.splits["test"].ids == tuple(f"img/{i:03d}.jpg" for i in sorted(perm[:10]))
    assert a.splits["val"].ids == tuple(f"img/{i:03d}.jpg" for i in sorted(perm[10:14]))
    assert "val" not in custom.build_source(cfg(m, split_method="random")).splits  # val_fraction 0: no val split
    assert len(custom.build_source(cfg(m, split_method="random")).splits["test"]) == 8


def _rare_manifest(tmp_path, jpeg, group_of=None):
    """60 rows: 'common' on every row, 'mid' on every 4th, 'rare' on rows 7 and 41 only; optional groups."""
    paths = [f"img/{i:03d}.jpg" for i in range(60)]
    write_images(tmp_path, paths, jpeg, jpeg)
    lines = ["path,labels" + (",g" if group_of else "")]
    for i, p in enumerate(paths):
        names = ["common"] + (["mid"] if i % 4 == 0 else []) + (["rare"] if i in (7, 41) else [])
        lines.append(f"{p},{'|'.join(names)}" + (f",{group_of(i)}" if group_of else ""))
    (tmp_path / "rare.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "rare.csv"


def test_stratified_split_is_the_default_and_puts_a_rare_label_on_both_sides(tmp_path, jpeg):
    m = _rare_manifest(tmp_path, jpeg)
    src = custom.build_source(cfg(m, test_fraction=0.2, val_fraction=0.1, split_seed=3))
    assert "seeded stratified (iterative stratification) split of the manifest's rows" in src.info["split_rule"]
    ids = {s: set(sp.ids) for s, sp in src.splits.items()}
    assert sum(len(v) for v in ids.values()) == 60 and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    rare = {"img/007.jpg", "img/041.jpg"}
    assert rare & ids["test"] and rare & ids["train"]  # 2 rows of 'rare': one each side of the test cut
    assert abs(len(ids["test"]) - 12) <= 2 and abs(len(ids["val"]) - 6) <= 2
    again = custom.build_source(cfg(m, test_fraction=0.2, val_fraction=0.1, split_seed=3))
    assert all(again.splits[s].ids == src.splits[s].ids for s in src.splits)
    assert custom.build_source(cfg(m, test_fraction=0.2, val_fraction=0.1, split_seed=4)).splits["test"].ids != \
        src.splits["test"].ids
    # the label-blind permutation split of the same manifest puts both 'rare' rows on one side for some seeds
    blind = [set(custom.build_source(cfg(m, test_fraction=0.2, split_seed=s, split_method="random")
                                     ).splits["test"].ids) & rare for s in range(6)]
    assert any(len(b) != 1 for b in blind)
    for s in range(6):
        strat = set(custom.build_source(cfg(m, test_fraction=0.2, split_seed=s)).splits["test"].ids)
        assert len(strat & rare) == 1
    with pytest.raises(custom.ManifestError, match="split_method"):
        custom.build_source(cfg(m, split_method="hash"))


def test_stratified_split_keeps_groups_whole(tmp_path, jpeg):
    m = _rare_manifest(tmp_path, jpeg, group_of=lambda i: f"p{i // 3}")  # 20 groups of 3 rows
    for seed in range(3):
        src = custom.build_source(cfg(m, group_column="g", test_fraction=0.2, val_fraction=0.1, split_seed=seed))
        groups = {s: {int(i[4:7]) // 3 for i in sp.ids} for s, sp in src.splits.items()}
        assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
        assert not groups["val"] & groups["test"]
        assert sum(len(sp) for sp in src.splits.values()) == 60
        assert {7 // 3, 41 // 3} & groups["test"] and {7 // 3, 41 // 3} & groups["train"]


def test_group_level_split(tmp_path, jpeg):
    group_sizes = [1, 5, 2, 7, 3, 1, 4, 6, 2, 3, 1, 5]  # 40 rows in 12 groups
    group_of_row = [g for g, size in enumerate(group_sizes) for _ in range(size)]
    m = _many(tmp_path, jpeg, 40, group_of=lambda i: f"p{group_of_row[i]}")
    for seed in range(5):
        src = custom.build_source(cfg(m, group_column="g", test_fraction=0.2, val_fraction=0.1, split_seed=seed,
                                      split_method="random"))
        groups = {s: {group_of_row[int(i[4:7])] for i in sp.ids} for s, sp in src.splits.items()}
        assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
        assert not groups["val"] & groups["test"]
        assert sum(len(sp) for sp in src.splits.values()) == 40
        # whole groups from the front of the permutation until >= round(fraction * 40) rows
        perm = np.random.default_rng(seed).permutation(12)
        taken, k = [], 0
        while sum(group_sizes[g] for g in taken) < 8:
            taken.append(perm[k])
            k += 1
        assert groups["test"] == set(taken)
        assert src.info["groups_per_split"]["test"] == len(taken)


def test_split_column_and_manifests_honoured_exactly(tree, jpeg, png):
    (tree / "train.jsonl").write_text('{"path": "images/a.jpg", "labels": ["cat"]}\n'
                                      '{"path": "images/b.png", "labels": ["dog"]}\n')
    (tree / "t").mkdir()
    write_images(tree / "t", ["z.jpg"], jpeg, png)
    (tree / "t" / "test.csv").write_text("path,labels\nz.jpg,cat\n../images/c.jpg,\n")
    (tree / "val.csv").write_text("path,labels\nimages/e.png,bird\n")
    src = custom.build_source(cfg(tree / "train.jsonl", test_manifest=str(tree / "t" / "test.csv"),
                                  val_manifest=str(tree / "val.csv")))
    assert src.splits["train"].ids == ("images/a.jpg", "images/b.png")
    assert src.splits["test"].items == (str(tree / "t" / "z.jpg"), str(tree / "images" / "c.jpg"))
    assert src.splits["test"].ids == ("t/z.jpg", "images/c.jpg")  # relative to the main manifest's folder
    assert src.splits["val"].ids == ("images/e.png",)
    assert labels_of(src.splits["test"]) == [[0, 1, 0], [0, 0, 0]]
    # with data.root set, every manifest's paths are relative to it
    (tree / "t" / "test2.csv").write_text("path,labels\nimages/c.jpg,dog\n")
    src = custom.build_source(cfg(tree / "train.jsonl", test_manifest=str(tree / "t" / "test2.csv"), root=str(tree)))
    assert src.splits["test"].items == (str(tree / "images" / "c.jpg"),)
    # a val fraction is carved from the main manifest when only a test manifest is given
    (tree / "t" / "test3.csv").write_text("path,labels\nz.jpg,cat\n")
    src = custom.build_source(cfg(tree / "labels.csv", test_manifest=str(tree / "t" / "test3.csv"), val_fraction=0.2,
                                  split_method="random"))
    assert len(src.splits["val"]) == 1 and len(src.splits["train"]) == 5


# ---- errors ------------------------------------------------------------------------------------------


def test_manifest_missing_or_empty_field(tree, monkeypatch):
    monkeypatch.delenv("LTJAX_DATA_DIR", raising=False)
    with pytest.raises(ManifestError, match=r"data.manifest is empty.*--config.data.manifest="):
        custom.build_source(cfg(""))
    monkeypatch.chdir(tree / "images")
    with pytest.raises(DatasetFilesError) as e:
        custom.build_source(cfg("labels.csv"))
    msg = str(e.value)
    assert str(tree / "images" / "labels.csv") in msg and "--config.data.manifest=" in msg and "LTJAX_DATA_DIR" in msg
    monkeypatch.setenv("LTJAX_DATA_DIR", str(tree))  # a relative manifest is also looked up there
    assert custom.build_source(cfg("labels.csv", split_column="split")).info["manifest"] == str(tree / "labels.csv")
    with pytest.raises(DatasetFilesError, match="test manifest"):
        custom.build_source(cfg(tree / "labels.csv", test_manifest=str(tree / "nope.csv")))
    (tree / "labels.txt").write_text("x")
    with pytest.raises(ManifestError, match=r"labels.txt: unsupported manifest type '.txt'"):
        custom.build_source(cfg(tree / "labels.txt"))


@pytest.mark.parametrize(
    "text, fields, pattern",
    [
        ("file,labels\na.jpg,cat\n", {}, r"bad.csv: no 'path' column; columns found: file, labels"),
        ("text,labels\nhello,cat\n", {}, r"no 'path' column.*--config.data.kind=text"),
        ("path,label\nimages/a.jpg,cat\n", {}, r"bad.csv: no 'labels' column.*label_columns=all"),
        ("path,labels\nimages/a.jpg,cat\n", {"split_column": "fold"}, r"no 'fold' column.*data.split_column='fold'"),
        ("path,labels\nimages/a.jpg,cat\n", {"group_column": "pid"}, r"no 'pid' column.*data.group_column"),
        ("path,cat\nimages/a.jpg,1\n", {"label_columns": "cat,dog"}, r"no 'dog' column.*label_columns='cat,dog'"),
        ("path,labels\nimages/a.jpg,cat||dog\n", {}, r"bad.csv:2: malformed labels cell 'cat\|\|dog'"),
        ("path,labels\nimages/a.jpg,cat|\n", {}, r"bad.csv:2: malformed labels cell"),
        ("path,labels\nimages/a.jpg,\"['cat', 'dog']\"\n", {}, r"bad.csv:2: labels cell .* looks like a list"),
        ("path,labels\nimages/a.jpg,cat,extra\n", {}, r"bad.csv:2: 3 fields but the header has 2 columns"),
        ("path,labels,split\nimages/a.jpg,cat,train\nimages/b.png,cat,training\n", {"split_column": "split"},
         r"bad.csv:3: split column 'split' holds 'training'; allowed values: train, val, test"),
        ("path,labels\nimages/a.jpg,cat\nimages/b.png,Dog\n", {"class_names": "cat,dog"},
         r"bad.csv:3: label 'Dog' is not in data.class_names \(2 classes: cat, dog\)"),
        ("path,labels\nimages/a.jpg,\"cat,dog\"\nimages/b.png,cat\n", {"class_names": "cat,dog"},
         r"bad.csv:2: .*label_separator"),
        ("id,path,labels\nk,images/a.jpg,cat\nj,images/b.png,dog\nk,images/c.jpg,cat\n", {},
         r"bad.csv:4: duplicate id 'k' \(already used at .*bad.csv:2\)"),
        ("path,labels\nimages/a.jpg,cat\nimages/b.png,dog\n./images/a.jpg,dog\n", {},
         r"bad.csv:4: image './images/a.jpg' is already listed at .*bad.csv:2"),
        ("path,labels,split,g\nimages/a.jpg,cat,train,p1\nimages/b.png,dog,test,p1\n",
         {"split_column": "split", "group_column": "g"},
         r"bad.csv:3: group 'p1' \(column 'g'\) is in the test split but also in the train split \(.*bad.csv:2\)"),
        ("path,labels,split\nimages/a.jpg,cat,train\n", {"split_column": "split"}, r"the test split is empty"),
        ("", {}, r"bad.csv: the manifest is empty"),
        ("path,labels\n", {}, r"bad.csv: the manifest has no examples"),
        ("path,labels\nimages/a.jpg,cat\n", {"test_fraction": 0.0}, r"data.test_fraction = 0.0 must satisfy 0 < x < 1"),
        ("path,labels\nimages/a.jpg,cat\n", {"kind": "audio"}, r"data.kind = 'audio' is not valid"),
        ("path,labels\nimages/a.jpg,cat\n", {"split_column": "s", "test_manifest": "t.csv"}, r"give one of them"),
    ],
)
def test_manifest_errors_name_file_line_and_fix(tree, text, fields, pattern):
    (tree / "bad.csv").write_text(text)
    with pytest.raises(ManifestError, match=pattern) as e:
        custom.build_source(cfg(tree / "bad.csv", **fields))
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "line, pattern",
    [
        ('{"path": "images/a.jpg", "labels": ["cat"]', r"bad.jsonl:2: not valid JSON"),
        ('["images/a.jpg", ["cat"]]', r"bad.jsonl:2: each line must be a JSON object"),
        ('{"path": "images/a.jpg", "labels": "cat|dog"}', r"bad.jsonl:2: 'labels' must be a JSON list"),
        ('{"path": "images/a.jpg", "labels": [3]}', r"bad.jsonl:2: 'labels' holds 3.*class indices"),
        ('{"path": "images/a.jpg"}', r"bad.jsonl:2: no 'labels' key"),
    ],
)
def test_jsonl_errors(tree, line, pattern):
    (tree / "bad.jsonl").write_text('{"path": "images/b.png", "labels": ["dog"]}\n' + line + "\n")
    with pytest.raises(ManifestError, match=pattern):
        custom.build_source(cfg(tree / "bad.jsonl"))


def test_missing_images_are_listed_with_the_root(tree, jpeg):
    lines = ["path,labels"] + [f"images/{n}" + ",cat" for n in ("a.jpg", "b.png", "c.jpg", "e.png", "f.jpg")]
    lines += [f"gone/{i}.jpg,dog" for i in range(7)]
    (tree / "m.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFilesError) as e:
        custom.build_source(cfg(tree / "m.csv"))
    msg = str(e.value)
    assert "7 image files missing" in msg and "and 2 more" in msg
    assert sum(f"{tree / 'gone'}{os.sep}" in line for line in msg.splitlines()) == 5
    assert f"m.csv: {tree}" in msg and "--config.data.root=" in msg
    assert isinstance(e.value, FileNotFoundError)
    (tree / "m2.csv").write_text("path,labels\nd.jpg,cat\nimages/a.jpg,cat\n")
    with pytest.raises(DatasetFilesError, match=r"missing image file: .*sub/images/a.jpg  \(.*m2.csv:3\)"):
        custom.build_source(cfg(tree / "m2.csv", root=str(tree / "sub")))
    src = custom.build_source(cfg(tree / "m.csv", verify_files=False))
    assert len(src.splits["train"]) + len(src.splits["test"]) == 12


# ---- the Dataset: both storages, text ----------------------------------------------------------------


@pytest.mark.parametrize("storage", ["files", "array_record"])
def test_build_dataset_images(tree, storage, tmp_path_factory):
    c = cfg(tree / "labels.csv", split_column="split", storage=storage,
            prepared_dir=str(tmp_path_factory.mktemp("prepared")), display_name="pets")
    c.groups.mode = "quantile"
    ds = build_dataset(c)
    m = ds.meta
    assert m.name == "pets" and m.input_kind == "image" and m.input_shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert m.class_names == ("bird", "cat", "dog")
    assert m.class_counts.tolist() == [0, 1, 2] and m.num_train == 3
    assert m.info["storage"] == storage and m.info["sizes"] == {"train": 3, "val": 1, "test": 2}
    for split, (_, labels) in EXPECTED.items():
        assert labels_of(ds.split(split)) == labels
    out = ds.eval_transform(ds.split("test")[0])
    assert out["inputs"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and out["inputs"].dtype == np.float32
    assert out["labels"].tolist() == [1, 1, 0]
    if storage == "files":
        assert ds.split("test")[0]["inputs"] == str(tree / "sub" / "d.jpg")
        assert ds.meta.hflip_preserves_labels and ds.train_transform.flip_prob == c.flip_prob > 0
        # a dataset whose labels a mirror image would change: no pipeline flips it
        c.hflip_preserves_labels = False
        no_flip = build_dataset(c)
        assert not no_flip.meta.hflip_preserves_labels and no_flip.train_transform.flip_prob == 0.0
        assert "horizontal_flip" in no_flip.meta.info


@pytest.mark.parametrize("storage", ["files", "array_record"])
def test_text_manifest(tmp_path, storage):
    (tmp_path / "docs.csv").write_text(
        'text,labels,split\n'
        '"the cat sat, on the mat",cat,train\n'
        'the dog barks at the cat,cat|dog,train\n'
        'a dog,dog,train\n'
        '"",,train\n'
        'the bird and the cat,cat|bird,test\n'
    )
    c = cfg(tmp_path / "docs.csv", kind="text", split_column="split", storage=storage, min_freq=1,
            max_length=6, prepared_dir=str(tmp_path / "prepared"))
    src = custom.build_source(c)
    assert src.splits["train"].ids == ("docs.csv:2", "docs.csv:3", "docs.csv:4", "docs.csv:5")
    assert src.splits["train"].items[0] == "the cat sat, on the mat"
    ds = build_dataset(c)
    assert ds.meta.input_kind == "text" and ds.meta.input_shape == (6,) and ds.meta.input_dtype == "int32"
    assert ds.meta.class_names == ("bird", "cat", "dog") and ds.meta.class_counts.tolist() == [0, 2, 2]
    assert ds.meta.info["examples_without_labels"] == {"train": 1, "test": 0}
    out = ds.eval_transform(ds.split("test")[0])
    assert out["inputs"].dtype == np.int32 and out["inputs"].shape == (6,)
    assert labels_of(ds.split("test")) == [[1, 1, 0]]


def test_config_file_args():
    from ltjax.config import load_config

    c = load_config("configs/custom.py:db_focal")
    assert (c.model.name, c.data.kind, c.data.image_size, c.data.name) == ("resnet18", "image", 224, "custom")
    assert c.method.name == "db_focal" and c.data.manifest == ""
    c = load_config("configs/custom.py:bce,text,text_bilstm")
    assert (c.model.name, c.data.kind, c.optimizer.name) == ("text_bilstm", "text", "adamw")
    assert load_config("configs/custom.py:rs,text").model.name == "text_pool"
    with pytest.raises(ValueError, match="METHOD"):
        load_config("configs/custom.py:bce,audio")


# ---- end to end ----------------------------------------------------------------------------------------

# 20 training rows and 6 test rows.  Training counts by hand: cat 12 (rows 1-12), dog 7 (rows 14-20),
# bird 3 (rows 1, 6, 20), fish 1 (row 13), eel 0 (test only).  Sorted classes: bird, cat, dog, eel, fish
# -> n_c = [3, 12, 7, 0, 1]; with head_min 10 and tail_max 5: head = {cat}, medium = {dog},
# tail = {bird, eel, fish}.
E2E_TRAIN = ["cat|bird"] + ["cat"] * 4 + ["bird|cat"] + ["cat"] * 6 + ["fish"] + ["dog"] * 6 + ["dog|bird"]
E2E_TEST = ["cat", "dog|eel", "bird", "eel", "cat|dog", "fish"]


def write_e2e(data):
    """The end-to-end rows as JPEG / PNG files under ``data`` and ``data/manifest.csv`` (a split column)."""
    lines = ["path,labels,split"]
    for split, rows in (("train", E2E_TRAIN), ("test", E2E_TEST)):
        for i, labels in enumerate(rows):
            name = f"{split}/{i}.{'png' if i % 2 else 'jpg'}"
            write_images(data, [name], _image_bytes("JPEG", i), _image_bytes("PNG", 100 + i))
            lines.append(f"{name},{labels},{split}")
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    return data / "manifest.csv"


def _train_e2e(tmp_path):
    """The CLI run of the end-to-end test: (its data folder, its workdir, the CompletedProcess)."""
    from helpers import run_module

    data = tmp_path / "data"
    write_e2e(data)
    assert len(E2E_TRAIN) == 20
    workdir = tmp_path / "run"
    r = run_module(
        "ltjax.train", "--config", "configs/custom.py", "--workdir", str(workdir),
        f"--config.data.manifest={data / 'manifest.csv'}", "--config.data.split_column=split",
        "--config.data.groups.head_min=10", "--config.data.groups.tail_max=5",
        "--config.data.image_size=32", "--config.data.batch_size=8", "--config.data.eval_batch_size=8",
        "--config.train.steps_per_epoch=2", "--config.train.num_epochs=1", "--config.schedule.warmup_steps=1",
        "--config.train.progress_bar=off", "--config.mesh.data=2",
        env={"TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return data, workdir, r


def test_train_and_evaluate_through_the_cli(tmp_path, jpeg, png):
    data, workdir, r = _train_e2e(tmp_path)
    assert "head (1)" in r.stdout and "medium (1)" in r.stdout and "tail (3)" in r.stdout
    report = json.loads((workdir / "eval.json").read_text())
    assert report["dataset"] == "custom" and report["num_examples"] == 6
    per_class = {c["name"]: (c["n_train"], c["group"], c["num_test_pos"]) for c in report["per_class"]}
    assert per_class == {
        "bird": (3, "tail", 1), "cat": (12, "head", 2), "dog": (7, "medium", 2), "eel": (0, "tail", 2),
        "fish": (1, "tail", 1),
    }
    assert np.isfinite(report["mAP"])
    assert os.listdir(tmp_path / "tfds")  # the default storage wrote a prepared copy



def test_empty_and_non_image_files_are_named_with_their_manifest_line_before_training(tree):
    (tree / "images" / "a.jpg").write_bytes(b"")
    (tree / "images" / "b.png").write_bytes(b"<html>not found</html>")
    with pytest.raises(custom.DatasetFilesError) as e:
        custom.build_source(cfg(tree / "labels.csv"))
    text = str(e.value)
    assert "2 image files cannot be read" in text
    assert "a.jpg  (" in text and "labels.csv:2): the file is empty" in text
    assert "b.png" in text and "not an image file PIL can read" in text and "verify_files=false" in text
    custom.build_source(cfg(tree / "labels.csv", verify_files=False))  # the check can be skipped


def test_blank_label_cells_and_empty_documents_are_warned_about_with_their_lines(tmp_path, capsys):
    m = tmp_path / "docs.csv"
    m.write_text("text,labels\nthe heart is normal,a\nclear lungs,   \n,b\nsmall effusion,b\n")
    custom.build_source(cfg(m, kind="text"))
    err = capsys.readouterr().err
    assert f"1 row with a labels cell of only spaces, read as no labels: {m}:3" in err
    assert f"1 row with an empty document: {m}:4" in err


@pytest.mark.slow  # ~20 s (a training run and a predict run through the CLI); predict on features and documents
# is in the default suite (tests/test_predict.py)
def test_predict_on_a_folder_of_images_equals_the_evaluation(tmp_path, jpeg, png):
    from helpers import run_module

    data, workdir, _ = _train_e2e(tmp_path)
    # predict on the test images (a folder, files sorted by name = the test split's order) = evaluate's scores,
    # with the training data gone (the run's dataset snapshot holds what predict needs) and the store too
    import shutil

    (data / "manifest.csv").unlink()
    shutil.rmtree(data / "train")
    shutil.rmtree(tmp_path / "tfds", ignore_errors=True)
    r = run_module("ltjax.predict", "--workdir", str(workdir), "--inputs", str(data / "test"),
                   "--out", str(tmp_path / "p.csv"), env={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "input,predicted,bird,cat,dog,eel,fish"
    assert [x.split(",")[0] for x in rows[1:]] == [f"{i}.{'png' if i % 2 else 'jpg'}" for i in range(6)]
    got = np.array([[float(v) for v in x.split(",")[2:]] for x in rows[1:]])
    with np.load(workdir / "scores.npz") as z:
        np.testing.assert_allclose(got, z["scores"], rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "p.csv.json").read_text())["step"] == 2
