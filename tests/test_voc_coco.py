"""VOC-LT / COCO-LT builders on fixture trees written here in the real on-disk formats (VOCdevkit with
VOC2007 XML annotations and test.txt, COCO with instances_val2017.json), with tiny JPEGs for every one of
the 1,142 / 1,909 listed training images."""
import io
import json
import os
import pathlib
import random

import numpy as np
import pytest

from ltjax.data import build_dataset
from ltjax.data import voc_coco
from ltjax.data.voc_coco import DatasetFilesError

DATA = pathlib.Path(__file__).parent / "data"
LISTS = pathlib.Path(voc_coco.__file__).parent / "lists"
IMAGE_SIZE = 24


@pytest.fixture(scope="module")
def jpeg_bytes():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)).save(buf, format="JPEG")
    return buf.getvalue()


def _list_ids(filename):
    return [line.split()[0] for line in (LISTS / filename).read_text().splitlines() if line.strip()]


# ---- VOC fixture -----------------------------------------------------------------------------------

# VOC2007 test images: id -> objects (name, difficult, parts).  Written to test.txt in this (unsorted)
# order, which the split must keep.
VOC_TEST = {
    "000004": [("pottedplant", 0, ())],
    "000001": [("dog", 0, ()), ("person", 1, ("head", "hand"))],  # difficult person counts; parts do not
    "000010": [("tvmonitor", 1, ()), ("sofa", 0, ()), ("aeroplane", 0, ())],
    "000002": [("car", 0, ()), ("car", 0, ()), (" car ", 1, ()), ("train", 0, ())],  # repeats, padded name
}
# the same labels written out by hand (alphabetical VOC class indices)
VOC_TEST_EXPECTED = {
    "000004": [15],  # pottedplant
    "000001": [11, 14],  # dog, person
    "000010": [0, 17, 19],  # aeroplane, sofa, tvmonitor
    "000002": [6, 18],  # car, train
}


def _voc_xml(image_id, objects):
    objs = []
    for name, difficult, parts in objects:
        part_xml = "".join(
            f"<part><name>{p}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></part>"
            for p in parts
        )
        objs.append(
            f"""
	<object>
		<name>{name}</name>
		<pose>Unspecified</pose>
		<truncated>0</truncated>
		<difficult>{difficult}</difficult>
		<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>7</xmax><ymax>7</ymax></bndbox>{part_xml}
	</object>"""
        )
    return f"""<annotation>
	<folder>VOC2007</folder>
	<filename>{image_id}.jpg</filename>
	<source><database>The VOC2007 Database</database><annotation>PASCAL VOC2007</annotation></source>
	<size><width>8</width><height>8</height><depth>3</depth></size>
	<segmented>0</segmented>{''.join(objs)}
</annotation>
"""


def make_voc(root: pathlib.Path, jpeg: bytes, train_images: bool = True) -> pathlib.Path:
    """A VOCdevkit with all 1,142 VOC-LT training JPEGs (unless not ``train_images``) and a 4-image VOC2007 test set."""
    train_dir = root / "VOC2012" / "JPEGImages"
    train_dir.mkdir(parents=True)
    for i in _list_ids("voc_lt_train.txt") if train_images else ():
        (train_dir / f"{i}.jpg").write_bytes(jpeg)
    v7 = root / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (v7 / sub).mkdir(parents=True)
    (v7 / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in VOC_TEST))
    for i, objects in VOC_TEST.items():
        (v7 / "Annotations" / f"{i}.xml").write_text(_voc_xml(i, objects))
        (v7 / "JPEGImages" / f"{i}.jpg").write_bytes(jpeg)
    return root


# ---- COCO fixture ----------------------------------------------------------------------------------

# the 80 COCO category ids (non-contiguous: 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused)
COCO_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
            *range(84, 91)]  # fmt: skip
COCO_IMAGES = [632, 139, 724, 285]  # json order; the split is in increasing id
COCO_ANNOTATIONS = [  # (image id, category id, iscrowd)
    (139, 1, 0), (139, 13, 0),  # person, stop sign
    (285, 23, 0), (285, 1, 1),  # bear, crowd of persons
    (632, 27, 0), (632, 27, 0), (632, 90, 0),  # two backpacks, toothbrush
]  # fmt: skip
# by hand: category id -> position among the sorted ids (13 -> 11 because 12 is unused, ...)
COCO_EXPECTED = {139: [0, 11], 285: [0, 21], 632: [24, 79], 724: []}


def _coco_json(class_names):
    assert len(COCO_IDS) == 80
    cats = [{"supercategory": "thing", "id": cid, "name": name} for cid, name in zip(COCO_IDS, class_names)]
    random.Random(0).shuffle(cats)  # the file's order must not matter
    images = [
        {"license": 1, "file_name": f"{i:012d}.jpg", "height": 8, "width": 8, "id": i,
         "coco_url": "", "date_captured": "", "flickr_url": ""}
        for i in COCO_IMAGES
    ]  # fmt: skip
    anns = [
        {"segmentation": [[1, 1, 5, 1, 5, 5]], "area": 8.0, "iscrowd": crowd, "image_id": img,
         "bbox": [1.0, 1.0, 4.0, 4.0], "category_id": cat, "id": 1000 + k}
        for k, (img, cat, crowd) in enumerate(COCO_ANNOTATIONS)
    ]  # fmt: skip
    return {"info": {"year": 2017}, "licenses": [], "images": images, "annotations": anns, "categories": cats}


def make_coco(root: pathlib.Path, jpeg: bytes, class_names, train_images: bool = True) -> pathlib.Path:
    """A COCO folder with all 1,909 COCO-LT training JPEGs (unless not ``train_images``) and a 4-image val2017."""
    for sub in ("train2017", "val2017", "annotations"):
        (root / sub).mkdir(parents=True)
    for i in _list_ids("coco_lt_train.txt") if train_images else ():
        (root / "train2017" / f"{int(i):012d}.jpg").write_bytes(jpeg)
    for i in COCO_IMAGES:
        (root / "val2017" / f"{i:012d}.jpg").write_bytes(jpeg)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(_coco_json(class_names)))
    return root


def data_config(name, root, **fields):
    from ltjax.defaults import base_config

    c = base_config().data
    c.update(voc_coco.DEFAULT_CONFIGS[name]())
    c.name = name
    c.root = str(root)
    c.image_size = IMAGE_SIZE
    c.storage = "files"  # most tests look at paths; the array_record tests below set it back
    for k, v in fields.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def coco_meta():
    return json.loads((DATA / "coco_lt_meta.json").read_text())


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory, jpeg_bytes):
    return make_voc(tmp_path_factory.mktemp("voc") / "VOCdevkit", jpeg_bytes)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory, jpeg_bytes, coco_meta):
    return make_coco(tmp_path_factory.mktemp("coco") / "coco", jpeg_bytes, coco_meta["classes"])


@pytest.fixture(scope="module")
def voc(voc_root):
    return build_dataset(data_config("voc_lt", voc_root))


@pytest.fixture(scope="module")
def coco(coco_root):
    return build_dataset(data_config("coco_lt", coco_root))


# ---- the shipped lists -----------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["voc_lt_train.txt", "voc_lt_meta.json", "coco_lt_meta.json"])
def test_shipped_lists_equal_the_test_copies(filename):
    assert (LISTS / filename).read_bytes() == (DATA / filename).read_bytes()


def test_coco_list_ids_are_integer_image_ids_mapped_to_12_digit_names():
    lt = voc_coco.load_list("coco_lt")
    assert len(lt.ids) == len(set(lt.ids)) == 1909
    assert lt.ids[0] == "554625" and all(i.isdigit() for i in lt.ids)
    assert voc_coco.coco_train_file_name("554625") == "000000554625.jpg"
    with pytest.raises(ValueError, match="not an integer COCO image id"):
        voc_coco.coco_train_file_name("COCO_train2014_000000554625.jpg")


def test_parse_label_list_rejects_bad_lines():
    ids, y = voc_coco.parse_label_list("a 0 2\n\nb 1\n", 3, "x.txt")
    assert ids == ("a", "b")
    np.testing.assert_array_equal(y, [[1, 0, 1], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"x.txt:1: class index 3 outside 0..2"):
        voc_coco.parse_label_list("a 3\n", 3, "x.txt")
    with pytest.raises(ValueError, match="'a' is listed more than once"):
        voc_coco.parse_label_list("a 0\na 1\n", 3, "x.txt")


# ---- VOC-LT ----------------------------------------------------------------------------------------


def test_voc_train_split_is_the_published_list(voc, voc_root, voc_lt_meta, voc_lt_labels):
    train = voc.split("train")
    assert len(train) == 1142 == voc.meta.num_train
    assert train.labels.dtype == np.float32 and train.labels.shape == (1142, 20)
    np.testing.assert_array_equal(train.labels, voc_lt_labels)  # the list's own labels, in list order
    np.testing.assert_array_equal(voc.meta.class_counts, voc_lt_meta["class_freq"])
    assert list(voc.meta.class_names) == voc_lt_meta["classes"]
    for ours, theirs in (("head", "head"), ("medium", "middle"), ("tail", "tail")):
        assert voc.meta.groups[ours].tolist() == voc_lt_meta["class_split"][theirs]
    assert voc.meta.groups.sizes() == {"head": 6, "medium": 6, "tail": 8}
    ex = train[0]  # first line: 2008_000023 4 14 19
    assert ex["inputs"] == str(voc_root / "VOC2012" / "JPEGImages" / "2008_000023.jpg")
    assert os.path.isabs(ex["inputs"])
    assert np.flatnonzero(ex["labels"]).tolist() == [4, 14, 19] and ex["labels"].dtype == np.float32


def test_voc_test_labels_come_from_every_xml_object(voc, voc_root):
    test = voc.split("test")
    assert len(test) == 4
    for k, (image_id, expected) in enumerate(VOC_TEST_EXPECTED.items()):  # test.txt order kept
        ex = test[k]
        assert ex["inputs"] == str(voc_root / "VOC2007" / "JPEGImages" / f"{image_id}.jpg")
        assert np.flatnonzero(ex["labels"]).tolist() == expected
        np.testing.assert_array_equal(test.labels[k], ex["labels"])
    assert set(np.unique(test.labels)) == {0.0, 1.0}  # repeated objects give 1, not a count


def test_voc_meta(voc, voc_root):
    m = voc.meta
    assert m.input_kind == "image" and m.input_shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert m.info["root"] == str(voc_root)
    assert m.info["sizes"] == {"train": 1142, "test": 4}
    assert "Wu et al., ECCV 2020" in m.info["list_origin"]
    json.dumps(m.to_dict())  # serialisable for run records


def test_voc_root_from_environment(voc_root, monkeypatch):
    monkeypatch.setenv("LTJAX_DATA_DIR", str(voc_root.parent))
    ds = build_dataset(data_config("voc_lt", "", verify_files=False))
    assert ds.meta.info["root"] == str(voc_root)
    monkeypatch.setenv("LTJAX_DATA_DIR", str(voc_root.parent / "elsewhere"))
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("voc_lt", ""))
    assert str(voc_root.parent / "elsewhere" / "VOCdevkit") in str(e.value)


def _assert_helpful(err, dataset, path):
    msg = str(err)
    assert str(path) in msg
    assert msg.startswith(f"{dataset}:")
    assert "--config.data.root=" in msg and "LTJAX_DATA_DIR" in msg
    assert ("VOC2007/" in msg and "VOC2012/" in msg) if dataset == "voc_lt" else "instances_val2017.json" in msg


def test_voc_missing_root(tmp_path):
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("voc_lt", tmp_path / "nowhere"))
    _assert_helpful(e.value, "voc_lt", tmp_path / "nowhere")


def test_voc_missing_test_list_and_annotation(tmp_path, jpeg_bytes):
    root = make_voc(tmp_path / "VOCdevkit", jpeg_bytes, train_images=False)  # these errors come first
    xml = root / "VOC2007" / "Annotations" / "000010.xml"
    xml.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("voc_lt", root))
    _assert_helpful(e.value, "voc_lt", xml)
    test_txt = root / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    test_txt.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("voc_lt", root))
    _assert_helpful(e.value, "voc_lt", test_txt)
    assert isinstance(e.value, FileNotFoundError)


def test_voc_missing_images_are_listed_unless_verification_is_off(tmp_path, jpeg_bytes):
    root = make_voc(tmp_path / "VOCdevkit", jpeg_bytes)
    gone = [root / "VOC2012" / "JPEGImages" / "2008_000028.jpg", root / "VOC2007" / "JPEGImages" / "000002.jpg"]
    for p in gone:
        p.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("voc_lt", root))
    _assert_helpful(e.value, "voc_lt", gone[0])
    assert "train image file" in str(e.value)
    gone[0].write_bytes(jpeg_bytes)
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("voc_lt", root))
    _assert_helpful(e.value, "voc_lt", gone[1])
    ds = build_dataset(data_config("voc_lt", root, verify_files=False))
    assert len(ds.split("test")) == 4


def test_voc_unknown_class_name_in_xml(tmp_path, jpeg_bytes):
    root = make_voc(tmp_path / "VOCdevkit", jpeg_bytes, train_images=False)
    xml = root / "VOC2007" / "Annotations" / "000004.xml"
    xml.write_text(_voc_xml("000004", [("plant", 0, ())]))
    with pytest.raises(ValueError, match="unknown VOC class 'plant'") as e:
        build_dataset(data_config("voc_lt", root))
    assert str(xml) in str(e.value)


# ---- COCO-LT ---------------------------------------------------------------------------------------


def test_coco_train_split_is_the_published_list(coco, coco_root, coco_meta):
    train = coco.split("train")
    assert len(train) == 1909 == coco.meta.num_train
    assert train.labels.shape == (1909, 80) and train.labels.dtype == np.float32
    np.testing.assert_array_equal(coco.meta.class_counts, coco_meta["class_freq"])
    assert list(coco.meta.class_names) == coco_meta["classes"]
    for ours, theirs in (("head", "head"), ("medium", "middle"), ("tail", "tail")):
        assert coco.meta.groups[ours].tolist() == coco_meta["class_split"][theirs]
    assert coco.meta.groups.sizes() == {"head": 22, "medium": 33, "tail": 25}
    ex = train[0]  # first line: 554625 0 62 64 66
    assert ex["inputs"] == str(coco_root / "train2017" / "000000554625.jpg")
    assert np.flatnonzero(ex["labels"]).tolist() == [0, 62, 64, 66]


def test_coco_test_labels_from_json(coco, coco_root):
    test = coco.split("test")
    assert len(test) == 4 and test.labels.shape == (4, 80)
    for k, image_id in enumerate(sorted(COCO_EXPECTED)):  # increasing image id
        ex = test[k]
        assert ex["inputs"] == str(coco_root / "val2017" / f"{image_id:012d}.jpg")
        assert np.flatnonzero(ex["labels"]).tolist() == COCO_EXPECTED[image_id]
    assert coco.meta.info["test_images_without_labels"] == 1
    assert coco.meta.info["sizes"] == {"train": 1909, "test": 4}


def test_coco_category_names_must_match_the_meta(tmp_path, jpeg_bytes, coco_meta):
    names = list(coco_meta["classes"])
    names[11], names[12] = names[12], names[11]  # swap "stop sign" and "parking meter"
    root = make_coco(tmp_path / "coco", jpeg_bytes, names, train_images=False)
    with pytest.raises(ValueError, match=r"position 11: category id 13 is 'parking meter', expected 'stop sign'"):
        build_dataset(data_config("coco_lt", root))


def test_coco_missing_files(tmp_path, jpeg_bytes, coco_meta):
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("coco_lt", tmp_path / "nowhere"))
    _assert_helpful(e.value, "coco_lt", tmp_path / "nowhere")

    root = make_coco(tmp_path / "coco", jpeg_bytes, coco_meta["classes"])
    val_img = root / "val2017" / "000000000285.jpg"
    val_img.unlink()
    many = [root / "train2017" / f"{int(i):012d}.jpg" for i in _list_ids("coco_lt_train.txt")[:7]]
    for p in many:
        p.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("coco_lt", root))
    _assert_helpful(e.value, "coco_lt", many[0])
    assert "7 train image files missing" in str(e.value) and "and 2 more" in str(e.value)
    for p in many:
        p.write_bytes(jpeg_bytes)
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("coco_lt", root))
    _assert_helpful(e.value, "coco_lt", val_img)

    ann = root / "annotations" / "instances_val2017.json"
    ann.unlink()
    with pytest.raises(DatasetFilesError) as e:
        build_dataset(data_config("coco_lt", root))
    _assert_helpful(e.value, "coco_lt", ann)


# ---- transforms ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["voc_lt", "coco_lt"])
def test_transforms_decode_to_float_images(name, voc, coco):
    ds = voc if name == "voc_lt" else coco
    for split in ("train", "test"):
        ex = ds.split(split)[1]
        out = ds.train_transform(ex, np.random.default_rng(0))
        assert out["inputs"].dtype == np.float32 and out["inputs"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        np.testing.assert_array_equal(out["labels"], ex["labels"])
        out = ds.eval_transform(ex)
        assert out["inputs"].dtype == np.float32 and out["inputs"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert np.isfinite(out["inputs"]).all()
    from ltjax.data.pipeline import eval_batches

    batch = next(eval_batches(ds.split("test"), 4, transform=ds.eval_transform, process_index=0, process_count=1))
    assert batch["inputs"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and batch["labels"].shape[0] == 4


@pytest.mark.parametrize("spec, method", [  # (the hmt case, ~20 s, runs with make test-slow: the suite's time)
    ("configs/voc_lt.py:db_focal", "db_focal"), pytest.param("configs/hmt_voc.py", "hmt", marks=pytest.mark.slow)])
def test_voc_lt_configs_train_and_evaluate_through_the_cli(voc_root, tmp_path, spec, method):
    """The VOC-LT configs end to end on the fixture VOCdevkit (small images, ResNet-18, a few steps)."""
    from helpers import run_module

    workdir = str(tmp_path / "run")
    r = run_module(
        "ltjax.train", "--config", spec, "--workdir", workdir,
        f"--config.data.root={voc_root}", "--config.data.image_size=32", "--config.model.name=resnet18",
        "--config.data.batch_size=8", "--config.data.eval_batch_size=16", "--config.train.steps_per_epoch=2",
        "--config.train.num_epochs=1", "--config.schedule.warmup_steps=1", "--config.train.progress_bar=off",
        "--config.mesh.data=2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "head (6)" in r.stdout and "medium (6)" in r.stdout and "tail (8)" in r.stdout
    report = json.load(open(os.path.join(workdir, "eval.json")))
    test_ids = (voc_root / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()
    assert report["num_examples"] == len(test_ids)
    assert report["dataset"] == "voc_lt" and report["method"] == method


@pytest.mark.parametrize("name", ["voc_lt", "coco_lt"])
def test_array_record_storage_holds_the_same_examples(name, voc, coco, voc_root, coco_root, tmp_path):
    """The default storage: the tfds builder's array_record copy has every listed image, in list order,
    byte for byte, with the same labels and metadata as reading the files in place."""
    files = voc if name == "voc_lt" else coco
    root = voc_root if name == "voc_lt" else coco_root
    ds = build_dataset(data_config(name, root, storage="array_record", prepared_dir=str(tmp_path / "prep")))
    assert ds.meta.info["prepared"]["written_now"]
    assert ds.meta.info["prepared"]["path"].startswith(str(tmp_path / "prep" / name))
    np.testing.assert_array_equal(ds.meta.class_counts, files.meta.class_counts)
    assert ds.meta.groups.to_dict() == files.meta.groups.to_dict()
    for split in ("train", "test"):
        a, b = ds.split(split), files.split(split)
        np.testing.assert_array_equal(a.labels, b.labels)
        for i in (0, 1, len(b) - 1):
            with open(b[i]["inputs"], "rb") as f:
                assert a[i]["inputs"] == f.read()
            rec_id = a.record(i)["id"].decode()
            assert os.path.basename(b[i]["inputs"]).startswith(rec_id.zfill(12) if name == "coco_lt" else rec_id)
    again = build_dataset(data_config(name, root, storage="array_record", prepared_dir=str(tmp_path / "prep")))
    assert not again.meta.info["prepared"]["written_now"]


def test_hmt_coco_config_reaches_the_coco_lt_builder(coco_root, coco_meta):
    """configs/hmt_coco.py as shipped (array_record storage) builds COCO-LT with the published 22/33/25."""
    from helpers import REPO

    from ltjax.config import load_config

    c = load_config(str(REPO / "configs" / "hmt_coco.py"))
    assert c.data.name == "coco_lt" and c.method.name == "hmt" and c.data.storage == "array_record"
    c.unlock()
    c.data.root = str(coco_root)
    ds = build_dataset(c.data)
    assert ds.meta.groups.sizes() == {"head": 22, "medium": 33, "tail": 25}
    np.testing.assert_array_equal(ds.meta.class_counts, coco_meta["class_freq"])
    assert ds.meta.info["prepared"]["path"].startswith(os.environ["TFDS_DATA_DIR"])
    assert ds.meta.input_shape == (c.data.image_size, c.data.image_size, 3)
