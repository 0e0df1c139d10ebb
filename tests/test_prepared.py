"""array_record copies written by the tensorflow-datasets builder of ltjax.data.prepared (no TensorFlow)."""
import io
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from ltjax.data import prepared
from ltjax.data.sources import Source, SourceSplit, dataset_from_source, source_defaults
from ltjax.data.voc_coco import DatasetFilesError


def _png(path, value, size=(6, 5)):
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path, format="PNG")
    return path


def _image_source(tmp_path, n_train=7, n_test=3, classes=4, name="toy_images"):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ids = [f"{split}_{i:03d}" for i in range(n)]
        paths = [str(_png(folder / f"{i}.png", 10 * k, size=(5 + k, 6))) for k, i in enumerate(ids)]
        labels = (rng.random((n, classes)) < 0.5).astype(np.float32)
        splits[split] = SourceSplit(ids, paths, labels)
    return Source(name, "image", [f"c{i}" for i in range(classes)], splits, {"origin": "test"})


def test_image_source_round_trip_keeps_order_bytes_and_labels(tmp_path):
    src = _image_source(tmp_path, n_train=12)  # > 10 so that keys must sort numerically, not as text
    splits, where = prepared.prepare(src, str(tmp_path / "prep"))
    assert where["written_now"] and where["path"].startswith(str(tmp_path / "prep" / "toy_images" / "fp_"))
    for name, s in src.splits.items():
        out = splits[name]
        assert len(out) == len(s)
        np.testing.assert_array_equal(out.labels, s.labels)
        for i in range(len(s)):
            ex = out[i]
            with open(s.items[i], "rb") as f:
                assert ex["inputs"] == f.read()  # the encoded file as on disk, not re-encoded
            np.testing.assert_array_equal(ex["labels"], s.labels[i])
            rec = out.record(i)
            assert rec["id"].decode() == s.ids[i]
            np.testing.assert_array_equal(rec["labels"], s.labels[i].astype(np.uint8))
    again, where2 = prepared.prepare(src, str(tmp_path / "prep"))
    assert not where2["written_now"] and where2["path"] == where["path"]  # reused, not rewritten
    import pickle

    clone = pickle.loads(pickle.dumps(again["train"]))  # grain worker processes get pickled splits
    assert clone[3]["inputs"] == again["train"][3]["inputs"]


def test_the_copy_is_a_plain_tfds_dataset(tmp_path):
    import tensorflow_datasets as tfds

    src = _image_source(tmp_path)
    _, where = prepared.prepare(src, str(tmp_path / "prep"))
    builder = tfds.builder_from_directory(where["path"])
    assert builder.info.splits["train"].num_examples == 7 and builder.info.splits["test"].num_examples == 3
    meta = builder.info.metadata["ltjax"]
    assert meta["class_names"] == ["c0", "c1", "c2", "c3"] and meta["kind"] == "image"
    ds = builder.as_data_source()["test"]
    img = ds[2]["image"]  # tfds' own decoding reads it back as the PNG we wrote
    np.testing.assert_array_equal(img, np.full((7, 6, 3), 20, np.uint8))


def test_changed_labels_or_images_give_a_new_copy(tmp_path):
    src = _image_source(tmp_path)
    _, where = prepared.prepare(src, str(tmp_path / "prep"))
    train = src.splits["train"]
    flipped = train.labels.copy()
    flipped[0, 0] = 1 - flipped[0, 0]
    changed = Source(src.name, "image", src.class_names, {**src.splits, "train": SourceSplit(train.ids, train.items, flipped)})
    splits, where2 = prepared.prepare(changed, str(tmp_path / "prep"))
    assert where2["written_now"] and where2["path"] != where["path"]
    np.testing.assert_array_equal(splits["train"].labels, flipped)
    _png(train.items[1], 99, size=(40, 40))  # a replaced image file (other size)
    _, where3 = prepared.prepare(src, str(tmp_path / "prep"))
    assert where3["written_now"] and where3["path"] not in (where["path"], where2["path"])


def test_text_source_round_trip(tmp_path):
    docs = ["ein erster Text", "zweites Dokument über Ähnliches", ""]
    split = SourceSplit(["a", "b", "c"], docs, np.eye(3, dtype=np.float32))
    src = Source("toy_text", "text", ["x", "y", "z"], {"train": split, "test": split})
    splits, _ = prepared.prepare(src, str(tmp_path / "prep"))
    assert [splits["test"][i]["inputs"].decode("utf-8") for i in range(3)] == docs


def test_missing_image_is_named_before_anything_is_written(tmp_path):
    src = _image_source(tmp_path)
    gone = src.splits["test"].items[1]
    os.remove(gone)
    with pytest.raises(DatasetFilesError, match="1 image file") as e:
        prepared.prepare(src, str(tmp_path / "prep"))
    assert gone in str(e.value)
    assert not (tmp_path / "prep" / "toy_images").exists() or not any(
        p.name == "1.0.0" for p in (tmp_path / "prep" / "toy_images").rglob("1.0.0")
    )


def test_a_failed_preparation_leaves_no_readable_copy(tmp_path, monkeypatch):
    src = _image_source(tmp_path)
    bad = src.splits["train"].items[4]
    os.remove(bad)
    os.mkdir(bad)  # a directory where an image should be: refused before writing
    with pytest.raises(DatasetFilesError):
        prepared.prepare(src, str(tmp_path / "prep"))
    os.rmdir(bad)
    # a failure inside the writer (the file vanishes after the check) aborts the whole preparation
    # and leaves no complete version folder behind
    monkeypatch.setattr(prepared, "_check_image_files", lambda source: None)
    with pytest.raises(Exception, match="No such file"):
        prepared.prepare(src, str(tmp_path / "prep"))
    assert not list((tmp_path / "prep").rglob("dataset_info.json"))
    monkeypatch.undo()
    _png(bad, 40, size=(9, 6))
    splits, where = prepared.prepare(src, str(tmp_path / "prep"))
    assert where["written_now"] and len(splits["train"]) == 7


def test_dataset_from_source_array_record_equals_files(tmp_path):
    src = _image_source(tmp_path)
    cfg = source_defaults("image")
    from ltjax.defaults import base_config

    cfg.groups = base_config().data.groups
    cfg.image_size = 8
    cfg.prepared_dir = str(tmp_path / "prep")
    ds_ar = dataset_from_source(src, cfg)
    cfg.storage = "files"
    ds_files = dataset_from_source(src, cfg)
    assert ds_ar.meta.info["storage"] == "array_record" and "prepared" in ds_ar.meta.info
    np.testing.assert_array_equal(ds_ar.meta.class_counts, ds_files.meta.class_counts)
    for i in range(3):
        a = ds_ar.eval_transform(ds_ar.split("test")[i])
        b = ds_files.eval_transform(ds_files.split("test")[i])
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
        a = ds_ar.train_transform(ds_ar.split("train")[i], rng_a)
        b = ds_files.train_transform(ds_files.split("train")[i], rng_b)
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
    json.dumps(ds_ar.meta.to_dict())
    cfg.storage = "tfrecord"
    with pytest.raises(ValueError, match="data.storage must be one of array_record, files"):
        dataset_from_source(src, cfg)


def test_missing_tensorflow_datasets_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(prepared.MissingDependencyError, match="--config.data.storage=files"):
        prepared.prepare(_image_source(tmp_path), str(tmp_path / "prep"))


def test_builder_names_are_valid_tfds_names():
    assert prepared.builder_name("voc_lt") == "voc_lt"
    assert prepared.builder_name("My Data-Set v2") == "my_data_set_v2"
    assert prepared.builder_name("2020 scans") == "ds_2020_scans"


def test_default_prepared_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "t"))
    assert prepared.default_prepared_dir("") == str(tmp_path / "t")
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert prepared.default_prepared_dir("") == os.path.expanduser("~/tensorflow_datasets")
    assert prepared.default_prepared_dir(str(tmp_path / "x")) == str(tmp_path / "x")


def test_encoded_bytes_decode_like_the_file(tmp_path):
    from ltjax.data.images import decode_image

    path = tmp_path / "g.png"
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(path)  # grayscale PNG
    buf = io.BytesIO(path.read_bytes()).getvalue()
    np.testing.assert_array_equal(decode_image(buf), decode_image(str(path)))


def test_a_run_that_loses_the_race_to_write_the_copy_uses_the_winners(tmp_path, monkeypatch):
    """Two runs preparing the same new copy at once (run_table.py --jobs N): the one whose final rename
    finds the folder already there reads that finished copy instead of failing."""
    split = SourceSplit(["a", "b", "c"], ["one", "two", "three"], np.eye(3, dtype=np.float32))
    src = Source("toy_race", "text", ["x", "y", "z"], {"train": split, "test": split})
    root = str(tmp_path / "prep")
    winner, _ = prepared.prepare(src, root)  # the other run, finished first
    real = prepared._make_builder_class

    def losing(source):
        cls = real(source)

        class Loser(cls, skip_registration=True):
            name = cls.name
            checks = 0

            def is_prepared(self):  # not yet there when this run looked, there afterwards
                type(self).checks += 1
                return type(self).checks > 1 and super().is_prepared()

            def download_and_prepare(self, *a, **k):
                raise FileExistsError("Destination ... 1.0.0 already exists.")

        return Loser

    monkeypatch.setattr(prepared, "_make_builder_class", losing)
    splits, where = prepared.prepare(src, root)
    assert where["written_now"] is False
    assert splits["train"].num_records() == winner["train"].num_records() == len(src.splits["train"])
