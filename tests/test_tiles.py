"""tiles_voc_lt: VOC-LT's real label sets on images composed of MNIST digits (ltjax/data/tiles.py).

The MNIST file is fetched for real (into the default cache, like yeast); the generated images go to a
temporary cache.  Builds use the config's small canvas (80 px, 20 px glyphs) and few test images."""
import hashlib
import itertools
import os
import pathlib
import shutil

import numpy as np
import pytest

from ltjax import assets
from ltjax.data import DATASETS, build_dataset, dataset_defaults, tiles, voc_coco

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(__file__).parent / "data"
NUM_TEST = 40
CANVAS, GLYPH = 80, 20  # configs/tiles_voc_lt.py


@pytest.fixture(scope="module")
def mnist():
    images, digits = tiles.load_mnist()  # fetched into the default cache (LTJAX_CACHE_DIR or ~/.cache/ltjax)
    return images, digits, tiles.mnist_pools(digits)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, mnist):
    """A fresh LTJAX_CACHE_DIR holding only the MNIST asset (so nothing is downloaded again)."""
    root = tmp_path_factory.mktemp("ltjax-cache")
    src = assets.member_path(tiles.MNIST_ASSET)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LTJAX_CACHE_DIR", str(root))
        dest = assets.member_path(tiles.MNIST_ASSET)
        dest.parent.mkdir(parents=True)
        shutil.copyfile(src, dest)
        yield root


def data_config(**fields):
    from ltjax.defaults import base_config

    c = base_config().data
    c.update(dataset_defaults("tiles_voc_lt"))
    c.name = "tiles_voc_lt"
    c.update(dict(tile_canvas=CANVAS, glyph_size=GLYPH, num_test=NUM_TEST, image_size=32, storage="files"))
    c.update(fields)
    return c


@pytest.fixture(scope="module")
def ds(cache):
    return build_dataset(data_config())


# ---- label sets ------------------------------------------------------------------------------------


def test_shipped_voc2012_list_is_the_reference_copy_and_contains_voc_lt():
    raw = (pathlib.Path(voc_coco.__file__).parent / "lists" / "voc2012_trainval_labels.txt").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == "cdbff3091059f74a221acede73e19348884d2a452a3d91bf3d4df56b213cef70"
    ids, labels, _ = tiles.load_voc2012_trainval()
    assert len(ids) == len(set(ids)) == 11540 and labels.shape == (11540, 20)
    row = {i: r for r, i in enumerate(ids)}
    lt = voc_coco.load_list("voc_lt")
    np.testing.assert_array_equal(labels[[row[i] for i in lt.ids]], lt.labels)  # same labels in both lists


def test_train_is_the_voc_lt_list_and_test_comes_from_the_other_voc2012_rows(ds, voc_lt_labels):
    train, test = ds.split("train"), ds.split("test")
    lt_ids = [line.split()[0] for line in (DATA / "voc_lt_train.txt").read_text().splitlines() if line.strip()]
    np.testing.assert_array_equal(train.labels, voc_lt_labels)  # exactly the list's label sets, in list order
    assert [os.path.basename(train[i]["inputs"]) for i in (0, 1, 1141)] == [f"{lt_ids[i]}.png" for i in (0, 1, 1141)]
    ids12, labels12, _ = tiles.load_voc2012_trainval()
    row = {i: r for r, i in enumerate(ids12)}
    test_ids = [os.path.basename(test[i]["inputs"])[: -len(".png")] for i in range(len(test))]
    assert len(test) == NUM_TEST == len(set(test_ids))
    assert not set(test_ids) & set(lt_ids)
    rows = [row[i] for i in test_ids]
    assert rows == sorted(rows)  # VOC2012 file order
    np.testing.assert_array_equal(test.labels, labels12[rows])
    # the draw: seeded, without replacement, among the 10,398 rows outside VOC-LT
    assert rows == tiles.draw_test_rows(lt_ids, ids12, NUM_TEST, 0).tolist()
    full = tiles.draw_test_rows(lt_ids, ids12, 4952, 0)
    assert len(set(full.tolist())) == 4952 and not {ids12[r] for r in full} & set(lt_ids)
    assert tiles.draw_test_rows(lt_ids, ids12, NUM_TEST, 1).tolist() != rows
    with pytest.raises(ValueError, match="num_test must lie in 1..10398"):
        tiles.draw_test_rows(lt_ids, ids12, 10399, 0)


def test_counts_and_groups_equal_voc_lt(ds, voc_lt_meta):
    m = ds.meta
    assert list(m.class_names) == voc_lt_meta["classes"] == list(voc_coco.VOC_CLASSES)
    np.testing.assert_array_equal(m.class_counts, voc_lt_meta["class_freq"])
    assert m.num_train == 1142
    for ours, theirs in (("head", "head"), ("medium", "middle"), ("tail", "tail")):
        assert m.groups[ours].tolist() == voc_lt_meta["class_split"][theirs]
    assert m.groups.sizes() == {"head": 6, "medium": 6, "tail": 8}
    assert m.input_kind == "image" and m.input_shape == (32, 32, 3)
    assert m.info["glyphs"]["aeroplane"] == "digit 0, red" and m.info["glyphs"]["tvmonitor"] == "digit 9, blue"
    assert DATASETS.get("tiles_voc_lt") is tiles.build


# ---- generation ------------------------------------------------------------------------------------


def test_generation_is_deterministic_and_seeded(tmp_path, mnist):
    images, _, pools = mnist
    lt = voc_coco.load_list("voc_lt")
    ids, labels = lt.ids[:6], lt.labels[:6]
    params = dict(seed=0, tile_canvas=CANVAS, glyph_size=GLYPH, max_instances=2, background="noise")

    def files(folder, **over):
        tiles.generate_split("train", ids, labels, folder, {**params, **over}, images, pools)
        return [(folder / f"{i}.png").read_bytes() for i in ids]

    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert a == b  # same seed: identical PNG bytes
    c = files(tmp_path / "c", seed=1)
    assert all(x != y for x, y in zip(a, c))
    assert files(tmp_path / "d", background="plain") != a
    # the built dataset's files are these images (same seed, same parameters, same index)
    for k in range(2):
        img, _ = tiles.compose_image(np.flatnonzero(labels[k]), tiles.split_rng(0, "train", k), images,
                                     pools["train"], canvas=CANVAS, glyph=GLYPH)  # fmt: skip
        assert tiles.encode_png(img) == a[k]


def test_built_images_are_cached_and_reused(ds, cache):
    assert ds.meta.info["images_dir"].startswith(str(cache / "tiles_voc_lt"))
    again = build_dataset(data_config())
    assert not again.meta.info["generated_now"] and again.meta.info["images_dir"] == ds.meta.info["images_dir"]
    other = data_config(seed=1, num_test=4)
    assert tiles.build(other).meta.info["images_dir"] != ds.meta.info["images_dir"]
    from ltjax.data.images import decode_image

    img = decode_image(ds.split("test")[0]["inputs"])
    assert img.shape == (CANVAS, CANVAS, 3)


def _check_boxes(classes, boxes, canvas, glyph, max_instances, pool):
    assert sorted(set(b["class"] for b in boxes)) == sorted(classes)  # every positive class is drawn
    per_class = np.bincount([b["class"] for b in boxes], minlength=20)
    assert all(1 <= per_class[c] <= max_instances for c in classes)
    for b in boxes:
        assert b["size"] == glyph
        assert 0 <= b["top"] and b["top"] + glyph <= canvas and 0 <= b["left"] and b["left"] + glyph <= canvas
        assert b["mnist_row"] in pool[tiles.glyph_kind(b["class"])[0]]
    for p, q in itertools.combinations(boxes, 2):  # squares never overlap (touching is allowed)
        assert abs(p["top"] - q["top"]) >= glyph or abs(p["left"] - q["left"]) >= glyph


@pytest.mark.parametrize("canvas, glyph", [(CANVAS, GLYPH), (224, 56), (70, 20)])
def test_glyphs_are_inside_the_canvas_and_never_overlap(mnist, canvas, glyph):
    images, _, pools = mnist
    ids12, labels12, _ = tiles.load_voc2012_trainval()
    busiest = np.flatnonzero(labels12.sum(axis=1) >= 5)  # the 51 VOC images with 5-6 classes
    rows = np.concatenate([busiest, np.random.default_rng(0).choice(len(ids12), 150, replace=False)])
    for split in ("train", "test"):
        for k, r in enumerate(rows):
            classes = np.flatnonzero(labels12[r]).tolist()
            img, boxes = tiles.compose_image(classes, tiles.split_rng(3, split, k), images, pools[split],
                                             canvas=canvas, glyph=glyph)  # fmt: skip
            assert img.shape == (canvas, canvas, 3) and img.dtype == np.uint8
            _check_boxes(classes, boxes, canvas, glyph, 2, pools[split])
    # a full grid (the fallback) and the error when the glyphs cannot fit
    corners = tiles.place_glyphs(16, 224, 56, np.random.default_rng(0))
    assert sorted(corners) == [(y, x) for y in range(0, 224, 56) for x in range(0, 224, 56)]
    with pytest.raises(ValueError, match="only 4 fit"):
        tiles.compose_image(list(range(5)), np.random.default_rng(0), images, pools["train"], canvas=40, glyph=20)


def test_train_and_test_glyphs_use_disjoint_mnist_halves(mnist):
    _, digits, pools = mnist
    for d in range(10):
        tr, te = set(pools["train"][d].tolist()), set(pools["test"][d].tolist())
        assert len(tr) == len(te) == 250 and not tr & te
        assert (digits[list(tr | te)] == d).all()
        assert max(tr) < min(te)  # the first half of the digit's rows (file order) trains


def _glyph(images, c, row, glyph=GLYPH):
    """Glyph kind ``c`` drawn with MNIST row ``row`` alone on a plain canvas of the glyph's size."""
    img, _ = tiles.compose_image([c], np.random.default_rng(0), images, [np.array([row])] * 10,
                                 canvas=glyph, glyph=glyph, max_instances=1, background="plain")  # fmt: skip
    return img.astype(np.float32)


def test_the_20_glyph_kinds_are_distinct(mnist):
    """Mean templates (from training instances) are pairwise far apart, and unseen test instances are
    recognised by their nearest template far above chance (5 %); the colour alone never errs."""
    images, _, pools = mnist
    assert len({tiles.glyph_kind(c) for c in range(20)}) == 20
    templates, x, y = [], [], []
    for c in range(20):
        d = tiles.glyph_kind(c)[0]
        templates.append(np.mean([_glyph(images, c, r) for r in pools["train"][d][:60]], axis=0))
        x += [_glyph(images, c, r) for r in pools["test"][d][:15]]
        y += [c] * 15
    t, x, y = np.stack(templates), np.stack(x), np.asarray(y)
    rms = np.sqrt(((t[:, None] - t[None]) ** 2).mean(axis=(2, 3, 4)))
    assert rms[np.triu_indices(20, 1)].min() > 8.0  # gray levels; same digit in the other colour: ~60
    pred = ((x[:, None] - t[None]) ** 2).mean(axis=(2, 3, 4)).argmin(axis=1)
    assert (pred // 10 == y // 10).all()
    assert (pred == y).mean() > 0.6


def test_bad_generation_fields_are_rejected(cache):
    with pytest.raises(ValueError, match="background must be one of plain, noise"):
        tiles.build(data_config(background="clouds"))
    with pytest.raises(ValueError, match="holds only 4 glyphs"):
        tiles.build(data_config(tile_canvas=40, glyph_size=20))
    with pytest.raises(ValueError, match=r"glyph_size must lie in 8\.\.80 \(data.tile_canvas\)"):
        tiles.build(data_config(glyph_size=100))


# ---- the config and the training core ---------------------------------------------------------------


def test_config_args():
    from ltjax.config import load_config

    spec = str(REPO / "configs" / "tiles_voc_lt.py")
    c = load_config(spec)  # the benchmark recipe: glyph-pretrained glyphnet, fine-tuned the DB way
    assert c.data.name == "tiles_voc_lt" and c.method.name == "bce" and c.model.name == "glyphnet"
    assert c.model.pretrained == "glyphs" and c.model.frozen_stages == 1 and c.model.norm_eval
    assert c.model.neck_pool == "max" and c.data.frozen_features == ""
    assert c.data.sampler == "uniform" and (c.data.groups.head_min, c.data.groups.tail_max) == (100.0, 20.0)
    assert c.data.image_size == c.data.tile_canvas == 80 and c.data.glyph_size == 20
    f = load_config(spec + ":db_focal,glyphnet,frozen")
    assert f.data.frozen_features == "pooled" and f.data.on_device and f.model.frozen_stages == 3
    s = load_config(spec + ":bce,glyphnet,scratch")
    assert s.model.pretrained == "" and s.model.frozen_stages == -1 and not s.model.norm_eval
    d = load_config(spec + ":db_focal")
    assert d.data.sampler == "class_aware" and d.data.class_aware_epoch_divisor == 14
    h = load_config(spec + ":hmt")
    assert h.method.name == "hmt" and h.method.lam == 2.0 and h.data.sampler == "class_aware"
    # SGD steps as large as BCE's: ASL sums over B x C entries (lr / 640, clip x 640); RW's N / n_c has mean 1
    a = load_config(spec + ":asl")
    assert a.optimizer.lr == pytest.approx(c.optimizer.lr / (32 * 20)) and a.optimizer.grad_clip_norm == 35 * 640
    assert load_config(spec + ":rw").method.normalize == "mean" and c.optimizer.grad_clip_norm == 35
    r = load_config(spec + ":bce,resnet18")  # the former recipe
    assert r.model.name == "resnet18" and r.model.frozen_stages == -1 and not r.model.norm_eval
    assert r.train.num_epochs == 12 and tuple(r.schedule.decay_epochs) == (8, 10)
    assert load_config(spec + ":bce,resnet50").model.name == "resnet50"
    from ltjax.models import MODELS

    if "efficientnet_lite0" in MODELS.names():  # accepted in the arg; registered by ltjax.models when present
        assert load_config(spec + ":bce,efficientnet_lite0").model.name == "efficientnet_lite0"
    with pytest.raises(ValueError, match=r"METHOD\[,glyphnet\|resnet18\|resnet50\|efficientnet_lite0"):
        load_config(spec + ":bce,vgg16")
    with pytest.raises(ValueError, match="a regime only for glyphnet"):
        load_config(spec + ":bce,resnet18,frozen")


def _flip_config(**fields):
    return data_config(crop_min_ratio=0.0, photometric=False, flip_prob=1.0, **fields)


def test_no_flip_reaches_a_tiles_image_in_either_pipeline(cache):
    """data.flip_prob=1 asks for a flip of every image; tiles declares that flips change its labels, so
    the host transform and the device augmentation both return the unflipped image."""
    import jax

    from ltjax.data import on_device
    from ltjax.training import devices

    ds = build_dataset(_flip_config())
    assert not ds.meta.hflip_preserves_labels and "horizontal_flip" in ds.meta.info
    assert ds.train_transform.flip_prob == 0.0
    split = ds.split("train")
    for i in range(6):  # host: many draws, never a flip
        example = split[i]
        want = ds.eval_transform(example)["inputs"]
        for seed in range(4):
            got = ds.train_transform(example, np.random.default_rng(seed))["inputs"]
            np.testing.assert_array_equal(got, want)
        assert not np.array_equal(want, want[:, ::-1])  # a flip would have shown
    cfg = _flip_config()
    dd = on_device.DeviceData(ds, cfg, devices.replicated(devices.make_mesh(_mesh(1))))
    assert dd.spec.flip_prob == 0.0
    idx = np.arange(8)
    store = np.asarray(dd.train_store)[idx]
    out = on_device.augment_batch(store, dd.train_sizes[idx], idx, jax.random.key(0), dd.spec)
    np.testing.assert_allclose(np.asarray(out), np.asarray(on_device.normalize(store)), atol=1e-4)
    # the same dataset declared flip-safe flips every image: the check above can fail
    import dataclasses

    flippable = dataclasses.replace(ds, meta=dataclasses.replace(ds.meta, hflip_preserves_labels=True),
                                    train_transform=dataclasses.replace(ds.train_transform, flip_prob=1.0))
    dd2 = on_device.DeviceData(flippable, cfg, devices.replicated(devices.make_mesh(_mesh(1))))
    out2 = on_device.augment_batch(store, dd2.train_sizes[idx], idx, jax.random.key(0), dd2.spec)
    np.testing.assert_allclose(np.asarray(out2), np.asarray(on_device.normalize(store))[:, :, ::-1], atol=1e-4)
    assert not np.array_equal(flippable.train_transform(split[0], np.random.default_rng(0))["inputs"],
                              ds.eval_transform(split[0])["inputs"])


def _mesh(n):
    from ltjax.defaults import base_config

    m = base_config().mesh
    m.data = n
    return m


@pytest.mark.slow  # ~15 s (the suite's time); tiles through the core: also test_no_flip_reaches_a_tiles_image_in_either_pipeline
def test_trains_and_evaluates_through_the_core(cache, tmp_path):
    """configs/tiles_voc_lt.py:bce, shrunk: a tiny glyphnet (pretrained on first use) at 32 px, batch 8,
    mesh data 2, array_record storage."""
    from ltjax.config import load_config
    from ltjax.training.loop import train_and_evaluate

    c = load_config(str(REPO / "configs" / "tiles_voc_lt.py"))
    c.unlock()
    c.model.widths, c.model.convs = (8, 8, 16), 1  # a tiny glyphnet, pretrained for 2 steps on first use
    c.model.frozen_stages = 1
    c.model.pretrain.steps, c.model.pretrain.copies, c.model.pretrain.batch_size = 2, 1, 8
    c.model.pretrain.photometric = False  # (its jitter is tested in test_glyphnet; here it would only compile)
    c.data.num_test = NUM_TEST  # the same generation parameters as the other tests: images reused
    c.data.image_size = 32
    c.data.batch_size = 8
    c.data.eval_batch_size = 16
    c.data.prepared_dir = str(tmp_path / "prepared")
    c.mesh.data = 2
    c.train.steps_per_epoch = 3
    c.train.num_epochs = 1
    c.schedule.warmup_steps = 1
    c.train.progress_bar = "off"
    assert c.data.storage == "array_record"
    result = train_and_evaluate(c, str(tmp_path / "run"))
    assert result["num_examples"] == NUM_TEST and result["dataset"] == "tiles_voc_lt" and result["step"] == 3
    assert np.isfinite(result["mAP"])
    assert os.path.isdir(tmp_path / "prepared" / "tiles_voc_lt")
