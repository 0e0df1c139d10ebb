"""The device-resident pipeline (ltjax/data/on_device.py): the jnp augmentations against the host
pipeline's numpy ones, keys per stream position, and training / evaluation through the Experiment."""
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from helpers import set_fields, small_synthetic_config, train_steps
from ltjax.data import Dataset, make_meta
from ltjax.data import images as host
from ltjax.data import on_device as od
from ltjax.data.sources import ItemSplit
from ltjax.defaults import experiment_config
from ltjax.training.loop import Experiment


def _smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [np.sin(xx / rng.uniform(6, 20) + rng.uniform(0, 6)) * 70 + np.cos(yy / rng.uniform(6, 20)) * 40 + 128
             for _ in range(3)]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# colour space and photometric distortion


def test_hsv_round_trip_matches_the_numpy_version():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (40, 30, 3)).astype(np.float32)
    x[0, :3] = [[0, 0, 0], [90, 90, 90], [255, 255, 255]]  # black, gray (H = 0, S = 0), white
    x[1, :3] = [[200, 200, 10], [10, 200, 200], [200, 10, 200]]  # ties for the maximum
    np.testing.assert_allclose(np.asarray(od.rgb_to_hsv(jnp.asarray(x))), host.rgb_to_hsv(x), rtol=1e-5, atol=1e-3)
    hsv = host.rgb_to_hsv(x)
    hsv[..., 0] += 400  # H is taken modulo 360
    np.testing.assert_allclose(np.asarray(od.hsv_to_rgb(jnp.asarray(hsv))), host.hsv_to_rgb(hsv), atol=2e-3)
    np.testing.assert_allclose(np.asarray(od.hsv_to_rgb(od.rgb_to_hsv(jnp.asarray(x)))), x, atol=2e-3)


@pytest.mark.parametrize("contrast_first", [True, False])
@pytest.mark.parametrize("coins", [(1, 1, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1), (0, 0, 0, 0)])
def test_photometric_with_given_parameters_matches_the_numpy_parts(contrast_first, coins):
    x = _smooth_image(24, 20).astype(np.float32)
    b_on, c_on, s_on, h_on = map(bool, coins)
    p = {"brightness_on": b_on, "brightness": 27.0, "contrast_first": contrast_first, "contrast_on": c_on,
         "contrast": 1.4, "saturation_on": s_on, "saturation": 0.6, "hue_on": h_on, "hue": -15.0}
    want = x.copy()  # the host order: brightness, [contrast], HSV, [contrast], each clipped
    if b_on:
        want = host.adjust_brightness(want, 27.0)
    if contrast_first and c_on:
        want = host.adjust_contrast(want, 1.4)
    if s_on or h_on:
        want = host.adjust_hsv(want, 0.6 if s_on else 1.0, -15.0 if h_on else 0.0)
    if not contrast_first and c_on:
        want = host.adjust_contrast(want, 1.4)
    got = od.photometric_apply(jnp.asarray(x), {k: jnp.asarray(v) for k, v in p.items()})
    np.testing.assert_allclose(np.asarray(got), want, atol=5e-3)


def test_channel_swap_permutes_channels():
    x = _smooth_image(8, 8).astype(np.float32)
    p = {"brightness_on": False, "brightness": 0.0, "contrast_first": True, "contrast_on": False, "contrast": 1.0,
         "saturation_on": False, "saturation": 1.0, "hue_on": False, "hue": 0.0, "swap_on": True,
         "permutation": jnp.array([2, 0, 1])}
    np.testing.assert_array_equal(np.asarray(od.photometric_apply(jnp.asarray(x), p)), x[..., [2, 0, 1]])


# ---------------------------------------------------------------------------------------------
# crop box and resampling


def test_crop_boxes_follow_the_host_rule():
    keys = jax.random.split(jax.random.key(0), 2000)
    boxes = jax.vmap(lambda k: od.crop_box(k, 375, 500, 0.8))(keys)
    top, left, ch, cw = (np.asarray(b) for b in boxes)
    for v in (top, left, ch, cw):
        np.testing.assert_array_equal(v, np.round(v))  # whole pixels
    assert ch.min() >= 300 and ch.max() <= 375 and cw.min() >= 400 and cw.max() <= 500
    assert (top >= 0).all() and (top + ch <= 375).all() and (left >= 0).all() and (left + cw <= 500).all()
    assert ch.max() == 375 and cw.max() == 500 and ch.min() <= 302  # the whole range is reached
    # the same distribution as the host's random_crop_box: uniform sides, uniform corner
    rng = np.random.default_rng(0)
    ref = np.array([host.random_crop_box(375, 500, 0.8, rng) for _ in range(2000)], np.float64)
    for got, want, spread in ((ch, ref[:, 2], 76), (cw, ref[:, 3], 101), (top, ref[:, 0], 38), (left, ref[:, 1], 50)):
        assert abs(got.mean() - want.mean()) < 4 * spread / np.sqrt(2000 / 2) / np.sqrt(3)
    # too elongated for any crop with h/w in [1/2, 2]: the whole image, as on the host
    t, l, h, w = (float(v) for v in od.crop_box(jax.random.key(1), 100, 300, 0.8))
    assert (t, l, h, w) == (0.0, 0.0, 100.0, 300.0) == host.random_crop_box(100, 300, 0.8, rng)
    # crop disabled
    assert [float(v) for v in od.crop_box(jax.random.key(1), 60, 70, 1.0)] == [0.0, 0.0, 60.0, 70.0]


def test_crop_resize_matches_pil_crop_then_resize():
    img = _smooth_image(75, 100)
    box = (9.0, 14.0, 61.0, 80.0)
    want = host.resize(img[9:70, 14:94], 48).astype(np.float32)
    # from the native image
    got = od.crop_resize(jnp.asarray(img, jnp.float32), jnp.asarray(box), jnp.array([75, 100]), 48)
    diff = np.abs(np.asarray(got) - want)
    assert diff[2:-2, 2:-2].max() < 1.5 and diff.mean() < 0.6  # PIL rounds to uint8 and clamps at the crop edge
    # from a square store (the original resized to 64 x 64): the same crop of the same scene
    store = host.resize(img, 64).astype(np.float32)
    got2 = od.crop_resize(jnp.asarray(store), jnp.asarray(box), jnp.array([75, 100]), 48)
    assert np.abs(np.asarray(got2) - want)[2:-2, 2:-2].mean() < 4.0
    # the identity box at the native size is the image itself
    same = od.crop_resize(jnp.asarray(img, jnp.float32), jnp.array([0.0, 0, 75, 100]), jnp.array([75, 100]), 75)
    assert same.shape == (75, 75, 3)


# ---------------------------------------------------------------------------------------------
# the batch transform


SPEC = od.AugmentSpec(size=32, crop_min_ratio=0.8)


def _store(n=6, h=40, w=52):
    imgs = np.stack([_smooth_image(h, w, seed=i) for i in range(n)])
    return imgs, np.tile(np.array([[h, w]], np.int32), (n, 1))


def test_augmentation_is_a_function_of_seed_and_position_only():
    imgs, sizes = _store()
    pos = np.array([10, 11, 12, 13, 14, 15], np.uint32)
    rng = jax.random.key(3)
    f = jax.jit(lambda i, s, p, r: od.augment_batch(i, s, p, r, SPEC))
    a = np.asarray(f(imgs, sizes, pos, rng))
    chex.assert_shape(a, (6, 32, 32, 3))
    perm = np.array([3, 0, 5, 1, 4, 2])
    b = np.asarray(f(imgs[perm], sizes[perm], pos[perm], rng))
    np.testing.assert_allclose(b, a[perm], atol=1e-5)  # where an example sits in the batch does not matter
    c = np.asarray(f(imgs, sizes, pos + 100, rng))
    assert all(np.abs(c[i] - a[i]).max() > 0.1 for i in range(6))  # other positions, other draws
    d = np.asarray(f(imgs, sizes, pos, jax.random.key(4)))
    assert np.abs(d - a).max() > 0.1


def test_device_augmentation_has_the_host_distribution():
    """The same image augmented 600 times by each pipeline: flip rate, brightness and colour statistics agree."""
    img = _smooth_image(40, 52, seed=7)
    img[:, :26] = np.clip(img[:, :26].astype(int) + 60, 0, 255)  # left half brighter: shows flips
    n = 600
    spec = od.AugmentSpec(size=32, crop_min_ratio=0.8)
    dev = np.asarray(jax.jit(lambda p: od.augment_batch(
        jnp.broadcast_to(jnp.asarray(img), (n, 40, 52, 3)), jnp.tile(jnp.array([[40, 52]]), (n, 1)), p,
        jax.random.key(0), spec))(np.arange(n, dtype=np.uint32)))
    t = host.ImageTransform(size=32, train=True, crop_min_ratio=0.8)
    ref = np.stack([t.image(img, np.random.default_rng([0, i])) for i in range(n)])

    def stats(x):
        px = host.denormalize(x).astype(np.float32)
        flipped = px[:, :, :16].mean(axis=(1, 2, 3)) < px[:, :, 16:].mean(axis=(1, 2, 3))
        means = px.mean(axis=(1, 2))  # [n, 3]
        return flipped.mean(), means.mean(0), means.std(0), px.std(axis=(1, 2)).mean(0)

    fd, md, sd, cd = stats(dev)
    fh, mh, sh, ch = stats(ref)
    assert abs(fd - fh) < 0.1  # flip probability 1/2 in both
    np.testing.assert_allclose(md, mh, atol=6.0)  # mean colour (brightness / contrast / saturation shifts)
    np.testing.assert_allclose(sd, sh, rtol=0.2)  # spread of the colour shifts between draws
    np.testing.assert_allclose(cd, ch, rtol=0.15)  # within-image contrast


def test_store_size_rule():
    same = np.array([[80, 80]] * 3)
    mixed = np.array([[375, 500], [500, 375]])
    assert od.train_store_size(same, 80, 0.8) == (80, 80)  # native: nothing resampled before the crop
    assert od.train_store_size(np.array([[375, 500]] * 2), 224, 0.8) == (280, 280)  # native but larger
    assert od.train_store_size(mixed, 224, 0.8) == (280, 280)
    assert od.train_store_size(mixed, 224, 0.0) == (224, 224)
    assert od.train_store_size(mixed, 224, 0.8, requested=256) == (256, 256)


# ---------------------------------------------------------------------------------------------
# through the Experiment


def _png_dataset(folder, n=24, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = (40, 52) if i % 3 else (52, 40)  # mixed sizes and orientations: a square store
        p = os.path.join(folder, f"{i}.png")
        Image.fromarray(_smooth_image(h, w, seed=i)).save(p)
        paths.append(p)
    labels = (rng.random((n, classes)) < 0.4).astype(np.float32)
    labels[np.arange(n), np.arange(n) % classes] = 1
    cfg = experiment_config("custom", "resnet18", "bce")
    cfg.data.groups.mode = "quantile"
    meta = make_meta("pngs", [f"c{i}" for i in range(classes)], labels, cfg.data.groups, (32, 32, 3), input_kind="image")
    splits = {"train": ItemSplit(tuple(paths), labels), "test": ItemSplit(tuple(paths[:10]), labels[:10])}
    return Dataset(meta, splits, host.ImageTransform(size=32, train=True), host.ImageTransform(size=32))


def _image_config(**over):
    c = experiment_config("custom", "resnet18", "bce")
    c.data.on_device = True
    c.data.image_size = 32
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.model.frozen_stages = -1
    c.model.norm_eval = False
    c.optimizer.lr = 0.01
    c.train.progress_bar = "off"
    c.eval.top_k = (1, 3)
    return set_fields(c, over)



@pytest.mark.slow  # ~30 s (the suite's time); sharded-vs-single steps in the default suite: test_hmt, test_comic
def test_image_store_and_sharded_step_equals_single_device(tmp_path):
    ds = _png_dataset(str(tmp_path))
    one = Experiment(_image_config(**{"mesh.data": 1}), dataset=ds)
    dd = one.device_data
    assert dd.kind == "image" and dd.train_store.shape == (24, 40, 40, 3)  # mixed sizes: ceil(32 / 0.8)
    np.testing.assert_array_equal(dd.train_sizes[:3], [[52, 40], [40, 52], [40, 52]])
    np.testing.assert_array_equal(np.asarray(dd.train_store[1]), host.resize(host.decode_image(ds.splits["train"].items[1]), 40))
    eight = Experiment(_image_config(**{"mesh.data": 8}), dataset=ds)
    s1, l1 = train_steps(one, 2)
    s8, l8 = train_steps(eight, 2)
    np.testing.assert_allclose(l1, l8, rtol=2e-5)
    chex.assert_trees_all_close(s1.params, s8.params, atol=2e-5, rtol=2e-5)


def test_device_evaluation_equals_host_evaluation(tmp_path):
    ds = _png_dataset(str(tmp_path))
    dev = Experiment(_image_config(**{"mesh.data": 8}), dataset=ds)
    hst = Experiment(_image_config(**{"mesh.data": 8, "data.on_device": False}), dataset=ds)
    state = dev.initial_state()
    s_dev, y_dev = dev.predict(state.params, state.batch_stats, "test")
    s_hst, y_hst = hst.predict(state.params, state.batch_stats, "test")
    chex.assert_shape(s_dev, (10, 4))
    np.testing.assert_allclose(s_dev, s_hst, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y_dev, y_hst)


def test_feature_dataset_on_device_trains_exactly_like_the_host_pipeline():
    over = {"mesh.data": 8, "model.dropout": 0.3}
    a, la = train_steps(Experiment(small_synthetic_config(**over)), 4)
    b_exp = Experiment(small_synthetic_config(**over, **{"data.on_device": True}))
    assert b_exp.device_data.kind == "features"
    b, lb = train_steps(b_exp, 4)
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    chex.assert_trees_all_close(a.params, b.params, atol=1e-6, rtol=1e-6)


@pytest.mark.slow  # ~22 s (the suite's time); resume in the default suite: test_phases (kill -9), test_selection
def test_on_device_run_resumes_exactly(tmp_path, monkeypatch):
    from ltjax.training import loop

    ds = _png_dataset(str(tmp_path / "png"))
    config = _image_config(**{"mesh.data": 2, "train.num_epochs": 2, "train.steps_per_epoch": 3,
                              "train.checkpoint_every": 2, "train.log_every": 1})
    full = loop.train_and_evaluate(config, str(tmp_path / "full"), dataset=ds)

    real, calls = loop.Experiment.global_batch, []

    def dies_at_step_5(self, host_batch):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real(self, host_batch)

    monkeypatch.setattr(loop.Experiment, "global_batch", dies_at_step_5)
    part = str(tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, part, dataset=ds)
    monkeypatch.setattr(loop.Experiment, "global_batch", real)
    resumed = loop.train_and_evaluate(config, part, dataset=ds)  # from the checkpoint at step 4
    assert full["step"] == resumed["step"] == 6
    np.testing.assert_allclose(full["mAP"], resumed["mAP"], rtol=1e-6)
    np.testing.assert_allclose([c["ap"] for c in full["per_class"]], [c["ap"] for c in resumed["per_class"]], rtol=1e-6)


def test_clear_errors(tmp_path):
    ds = _png_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="device_max_gb"):
        Experiment(_image_config(**{"data.device_max_gb": 1e-6}), dataset=ds)
    text_meta = ds.meta.__class__(**{**ds.meta.__dict__, "input_kind": "text"})
    random_t = Dataset(text_meta, ds.splits, lambda e, rng: e, lambda e: e)  # a transform without "deterministic"
    with pytest.raises(ValueError, match="random per-example host transform.*data.on_device=false"):
        od.DeviceData(random_t, _image_config().data, None)
    paths_only = Dataset(text_meta, ds.splits)  # strings and no transform to turn them into arrays
    with pytest.raises(ValueError, match="not numeric arrays.*data.on_device=false"):
        od.DeviceData(paths_only, _image_config().data, None)
    auto = Dataset(ds.meta, ds.splits, host.ImageTransform(size=32, train=True, auto_augment="randaugment"),
                   ds.eval_transform)
    with pytest.raises(ValueError, match="host pipeline only; set data.on_device=false"):
        od.DeviceData(auto, _image_config().data, None)
