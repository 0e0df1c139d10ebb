"""Image decoding and the DB-loss image recipe (ltjax.data.images), on small images written here with PIL.

Checked against independent computations: PIL resize + NumPy normalisation for the eval transform,
``colorsys`` for the HSV conversion, hand-computed colours for each photometric part, mirrors for the
flip, pixel-coordinate gradients for the crop, and decode counts for the cache.
"""
import colorsys
import math
import pickle
import time

import ml_collections
import numpy as np
import pytest
from PIL import Image

from ltjax.data import images
from ltjax.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    adjust_brightness,
    adjust_contrast,
    adjust_hsv,
    decode_image,
    denormalize,
    hsv_to_rgb,
    image_defaults,
    normalize,
    photometric_distort,
    random_crop_box,
    rgb_to_hsv,
)

MEAN = np.array(IMAGENET_MEAN)
STD = np.array(IMAGENET_STD)


def _natural(h, w, seed=0, noise=12.0):
    """A smooth gradient plus noise: compresses like a photo and has no symmetry."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255.0 / max(w - 1, 1), yy * 255.0 / max(h - 1, 1), (3 * xx + yy) % 256], -1)
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)


def _save(path, arr, mode=None, **kw):
    im = Image.fromarray(arr)
    if mode is not None:
        im = im.convert(mode)
    im.save(path, **kw)
    return str(path)


def _pil_eval(path, size):
    """Independent eval computation: PIL decode + bilinear resize, float64 normalisation."""
    with Image.open(path) as im:
        small = im.convert("RGB").resize((size, size), Image.BILINEAR)
    return (np.asarray(small, np.float64) - MEAN) / STD


def _plain(**kw):
    """A training transform with every augmentation off unless switched on in kw."""
    base = dict(train=True, flip_prob=0.0, photometric=False, crop_min_ratio=0.0)
    base.update(kw)
    return ImageTransform(**base)


# ------------------------------------------------------------------------------------------
# decoding


def test_decode_formats_convert_to_rgb_uint8(tmp_path):
    rgb = _natural(30, 40)
    png = decode_image(_save(tmp_path / "rgb.png", rgb))
    assert png.dtype == np.uint8 and png.shape == (30, 40, 3)
    assert np.array_equal(png, rgb)  # PNG is lossless

    smooth = _natural(30, 40, noise=0)
    jpg = decode_image(_save(tmp_path / "rgb.jpg", smooth, quality=95, subsampling=0))
    assert jpg.dtype == np.uint8 and jpg.shape == (30, 40, 3)
    assert np.abs(jpg.astype(int) - smooth).mean() < 2  # lossy, but the same picture, channels in RGB order

    gray = rgb[..., 0]
    g = decode_image(_save(tmp_path / "gray.png", gray))
    assert g.shape == (30, 40, 3) and all(np.array_equal(g[..., c], gray) for c in range(3))
    gj = decode_image(_save(tmp_path / "gray.jpg", gray))
    assert gj.shape == (30, 40, 3) and np.array_equal(gj[..., 0], gj[..., 2])

    rgba = np.concatenate([rgb, np.full((30, 40, 1), 7, np.uint8)], -1)  # nearly transparent
    a = decode_image(_save(tmp_path / "rgba.png", rgba))
    assert np.array_equal(a, rgb)  # alpha dropped, colours untouched

    cmyk_path = _save(tmp_path / "cmyk.jpg", rgb, mode="CMYK", quality=95)
    with Image.open(cmyk_path) as im:
        assert im.mode == "CMYK"
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(decode_image(cmyk_path), expected)

    pal = decode_image(_save(tmp_path / "pal.png", rgb, mode="P"))
    assert pal.shape == (30, 40, 3) and pal.dtype == np.uint8

    deep = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    d = decode_image(_save(tmp_path / "deep.png", deep))
    assert np.array_equal(d[..., 1], (deep >> 8).astype(np.uint8))  # 16-bit gray: top byte


def test_decode_bytes_and_pathlike_equal_path(tmp_path):
    path = _save(tmp_path / "x.jpg", _natural(24, 32))
    by_path = decode_image(path)
    raw = open(path, "rb").read()
    assert np.array_equal(decode_image(raw), by_path)
    assert np.array_equal(decode_image(bytearray(raw)), by_path)
    assert np.array_equal(decode_image(memoryview(raw)), by_path)
    assert np.array_equal(decode_image(tmp_path / "x.jpg"), by_path)
    assert np.array_equal(decode_image(np.bytes_(raw)), by_path)


def test_decode_applies_exif_orientation(tmp_path):
    a = _natural(20, 30)
    for orientation, expected in ((3, a[::-1, ::-1]), (6, np.rot90(a, -1))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        out = decode_image(_save(tmp_path / f"o{orientation}.png", a, exif=exif.tobytes()))
        assert np.array_equal(out, expected)


def test_missing_corrupt_and_truncated_files_name_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "img.jpg"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        decode_image(str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ImageTransform()({"inputs": str(missing)})

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not an image" * 20)
    with pytest.raises(ValueError, match=f"{corrupt}.*corrupt"):
        decode_image(str(corrupt))

    good = open(_save(tmp_path / "good.jpg", _natural(40, 40)), "rb").read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=str(truncated)):
        decode_image(str(truncated))
    with pytest.raises(ValueError, match="image bytes"):
        decode_image(good[: len(good) // 2])

    with pytest.raises(TypeError, match="path"):
        decode_image(12)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        decode_image(str(tmp_path))


# ------------------------------------------------------------------------------------------
# eval transform


def test_eval_transform_equals_pil_resize_and_numpy_normalise(tmp_path):
    for name, arr in (("a.jpg", _natural(375, 500)), ("b.png", _natural(50, 37, seed=1))):
        path = _save(tmp_path / name, arr)
        for size in (224, 32):
            t = ImageTransform(size=size)
            ex = {"inputs": path, "labels": np.array([0, 1], np.float32), "id": 7}
            out = t(ex)
            assert out["inputs"].dtype == np.float32 and out["inputs"].shape == (size, size, 3)
            np.testing.assert_allclose(out["inputs"], _pil_eval(path, size), atol=1e-5)
            assert out["labels"] is ex["labels"] and out["id"] == 7  # other keys pass through
            assert ex["inputs"] == path  # the input example is not modified
            again = t(ex, np.random.default_rng(3))  # eval ignores any rng: deterministic
            assert np.array_equal(again["inputs"], out["inputs"])


def test_decoded_array_inputs_match_paths(tmp_path):
    arr = _natural(40, 50)
    path = _save(tmp_path / "a.png", arr)
    ev = ImageTransform(size=16)
    assert np.array_equal(ev({"inputs": arr})["inputs"], ev({"inputs": path})["inputs"])
    t = ImageTransform(train=True, size=16)
    assert np.array_equal(t({"inputs": arr}, np.random.default_rng(5))["inputs"],
                          t({"inputs": path}, np.random.default_rng(5))["inputs"])
    with pytest.raises(ValueError, match="uint8"):
        ImageTransform()({"inputs": arr.astype(np.float32)})


def test_normalize_denormalize_round_trip():
    x = np.random.default_rng(0).integers(0, 256, (5, 6, 3)).astype(np.uint8)
    n = normalize(x)
    np.testing.assert_allclose(n, (x - MEAN) / STD, rtol=1e-6, atol=1e-6)
    assert n.dtype == np.float32
    assert np.array_equal(denormalize(n), x)
    assert np.array_equal(ImageTransform().denormalize(n), x)
    assert denormalize(np.full((1, 1, 3), 100.0)).tolist() == [[[255, 255, 255]]]  # clipped


# ------------------------------------------------------------------------------------------
# train transform: determinism, flip, no-augmentation equivalence


def test_train_transform_is_a_function_of_the_rng_state(tmp_path):
    path = _save(tmp_path / "a.jpg", _natural(120, 160))
    t = ImageTransform(train=True, size=64)
    a = t({"inputs": path}, np.random.default_rng(11))["inputs"]
    b = t({"inputs": path}, np.random.default_rng(11))["inputs"]
    c = t({"inputs": path}, np.random.default_rng(12))["inputs"]
    assert a.dtype == np.float32 and a.shape == (64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.isfinite(a).all()
    # all pixels stay in the clipped 0-255 range after normalisation
    assert (a * STD + MEAN >= -1e-3).all() and (a * STD + MEAN <= 255 + 1e-3).all()
    with pytest.raises(ValueError, match="rng"):
        t({"inputs": path})
    with pytest.raises(KeyError, match="inputs"):
        t({"image": path}, np.random.default_rng(0))


def test_no_augmentation_equals_eval_and_flip_is_its_mirror(tmp_path):
    path = _save(tmp_path / "a.jpg", _natural(90, 120))
    ev = ImageTransform(size=48)({"inputs": path})["inputs"]
    for crop in (0.0, 1.0):  # both disable the crop
        off = _plain(size=48, crop_min_ratio=crop)({"inputs": path}, np.random.default_rng(0))["inputs"]
        assert np.array_equal(off, ev)
    for seed in range(5):
        flipped = _plain(size=48, flip_prob=1.0)({"inputs": path}, np.random.default_rng(seed))["inputs"]
        assert np.array_equal(flipped, ev[:, ::-1])
        assert not np.array_equal(flipped, ev)


def test_flip_probability_one_half(tmp_path):
    path = _save(tmp_path / "a.png", _natural(12, 16))
    t = _plain(size=8, flip_prob=0.5)
    ev = ImageTransform(size=8)({"inputs": path})["inputs"]
    flips = 0
    for seed in range(400):
        out = t({"inputs": path}, np.random.default_rng(seed))["inputs"]
        is_flip = np.array_equal(out, ev[:, ::-1])
        assert is_flip or np.array_equal(out, ev)
        flips += is_flip
    assert 160 <= flips <= 240  # Binomial(400, 0.5): mean 200, sd 10


# ------------------------------------------------------------------------------------------
# colour space and photometric parts, on uniform colours (hand-computed)


def _uniform(rgb, shape=(4, 5)):
    return np.broadcast_to(np.asarray(rgb, np.float32), shape + (3,)).copy()


def _colour(x):
    assert np.allclose(x, x[0, 0], atol=1e-4)  # still uniform
    return x[0, 0]


def test_rgb_hsv_matches_colorsys_and_round_trips():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 30, 3)).astype(np.float32)
    x[0, :3] = [[0, 0, 0], [80, 80, 80], [255, 255, 0]]  # black, gray, a tie for the maximum
    hsv = rgb_to_hsv(x)
    expected = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in x.reshape(-1, 3).astype(np.float64)])
    expected = expected.reshape(x.shape) * [360.0, 1.0, 255.0]
    np.testing.assert_allclose(hsv, expected, atol=2e-3)
    np.testing.assert_allclose(hsv_to_rgb(hsv), x, atol=2e-3)
    back = np.array([colorsys.hsv_to_rgb(h / 360.0, s, v) for h, s, v in hsv.reshape(-1, 3).astype(np.float64)])
    np.testing.assert_allclose(hsv_to_rgb(hsv).reshape(-1, 3), back, atol=2e-3)


def test_brightness_and_contrast_hand_values():
    np.testing.assert_allclose(_colour(adjust_brightness(_uniform((200, 100, 50)), 20)), [220, 120, 70])
    np.testing.assert_allclose(_colour(adjust_brightness(_uniform((250, 100, 10)), 32)), [255, 132, 42])
    np.testing.assert_allclose(_colour(adjust_brightness(_uniform((250, 100, 10)), -32)), [218, 68, 0])
    np.testing.assert_allclose(_colour(adjust_contrast(_uniform((100, 60, 20)), 1.5)), [150, 90, 30])
    np.testing.assert_allclose(_colour(adjust_contrast(_uniform((200, 60, 20)), 1.5)), [255, 90, 30])
    np.testing.assert_allclose(_colour(adjust_contrast(_uniform((100, 60, 20)), 0.5)), [50, 30, 10])


def test_saturation_and_hue_hand_values():
    c = _uniform((200, 100, 50))
    np.testing.assert_allclose(_colour(adjust_hsv(c, saturation=0.0)), [200, 200, 200], atol=1e-3)  # gray = V
    # V=200, S=0.75 -> 0.375, H=20 deg: (V, V(1 - S(1 - 1/3)), V(1 - S)) = (200, 150, 125)
    np.testing.assert_allclose(_colour(adjust_hsv(c, saturation=0.5)), [200, 150, 125], atol=1e-3)
    # S 0.75 * 1.5 > 1: the minimum channel goes below 0 and is clipped
    np.testing.assert_allclose(_colour(adjust_hsv(c, saturation=1.5)), [200, 50, 0], atol=1e-3)
    red = _uniform((255, 0, 0))
    np.testing.assert_allclose(_colour(adjust_hsv(red, hue=120)), [0, 255, 0], atol=1e-3)
    np.testing.assert_allclose(_colour(adjust_hsv(red, hue=-120)), [0, 0, 255], atol=1e-3)
    np.testing.assert_allclose(_colour(adjust_hsv(red, hue=18)), [255, 76.5, 0], atol=1e-3)  # 255 * 18/60
    np.testing.assert_allclose(_colour(adjust_hsv(red, hue=-18)), [255, 0, 76.5], atol=1e-3)
    np.testing.assert_allclose(_colour(adjust_hsv(c, hue=360)), [200, 100, 50], atol=1e-3)
    # a 120-degree shift permutes the channels: (R, G, B) -> (B, R, G)
    np.testing.assert_allclose(_colour(adjust_hsv(c, hue=120)), [50, 200, 100], atol=1e-3)
    gray = _uniform((90, 90, 90))
    np.testing.assert_allclose(_colour(adjust_hsv(gray, saturation=1.5, hue=17)), [90, 90, 90], atol=1e-3)


class _ScriptedRng:
    """Stands in for a Generator: replays scripted draws and records what was asked for."""

    def __init__(self, integers, uniforms):
        self._integers, self._uniforms, self.calls = list(integers), list(uniforms), []

    def integers(self, n):
        assert n == 2
        self.calls.append("coin")
        return self._integers.pop(0)

    def uniform(self, low, high):
        self.calls.append((low, high))
        return self._uniforms.pop(0)

    def exhausted(self):
        return not self._integers and not self._uniforms


def test_photometric_order_and_ranges_with_scripted_draws():
    base = _uniform((200, 100, 60))
    # contrast first (coin 1): (300, 150, 90) -> clip (255, 150, 90); S 0.647 -> 0.3235, H 21.8 deg
    # -> (255, 255 - 82.5 * 105/165, 255 - 82.5) = (255, 202.5, 172.5)
    rng = _ScriptedRng([0, 1, 1, 1, 0], [1.5, 0.5])
    np.testing.assert_allclose(_colour(photometric_distort(base, rng)), [255, 202.5, 172.5], atol=1e-3)
    assert rng.exhausted() and rng.calls == ["coin", "coin", "coin", (0.5, 1.5), "coin", (0.5, 1.5), "coin"]
    # contrast last (coin 0): saturation first gives (200, 150, 130), then * 1.5 -> clip (255, 225, 195)
    rng = _ScriptedRng([0, 0, 1, 0, 1], [0.5, 1.5])
    np.testing.assert_allclose(_colour(photometric_distort(base, rng)), [255, 225, 195], atol=1e-3)
    assert rng.exhausted() and rng.calls == ["coin", "coin", "coin", (0.5, 1.5), "coin", "coin", (0.5, 1.5)]
    # everything on: brightness (-32, 32), then hue (-18, 18); -120 deg is a channel permutation
    rng = _ScriptedRng([1, 0, 0, 1, 1], [-20.0, -120.0, 0.5])
    # (180, 80, 40) -> hue -120: (R, G, B) -> (G, B, R) = (80, 40, 180) -> * 0.5 = (40, 20, 90)
    np.testing.assert_allclose(_colour(photometric_distort(base, rng)), [40, 20, 90], atol=1e-3)
    assert rng.calls == ["coin", (-32.0, 32.0), "coin", "coin", "coin", (-18.0, 18.0), "coin", (0.5, 1.5)]
    # all coins 0: unchanged
    rng = _ScriptedRng([0, 0, 0, 0, 0], [])
    assert np.array_equal(photometric_distort(base, rng), base) and rng.exhausted()


def test_photometric_with_a_real_generator_applies_each_part_about_half_the_time():
    base = _uniform((120, 100, 80), shape=(2, 2))
    changed = 0
    n = 400
    for seed in range(n):
        out = photometric_distort(base, np.random.default_rng(seed))
        assert out.dtype == np.float32 and (out >= 0).all() and (out <= 255).all()
        changed += not np.allclose(out, base, atol=1e-3)
    # unchanged only when all four parts are skipped: probability 1/16
    assert 0.9 * n <= changed <= 0.98 * n


def test_channel_swap_is_off_by_default_and_permutes_when_on():
    base = _uniform((200, 100, 60))
    rng = _ScriptedRng([0, 0, 0, 0, 0, 1], [])
    rng.permutation = lambda n: (rng.calls.append(("permutation", n)), np.array([2, 0, 1]))[1]
    np.testing.assert_allclose(_colour(photometric_distort(base, rng, channel_swap=True)), [60, 200, 100])
    assert rng.exhausted() and rng.calls[-2:] == ["coin", ("permutation", 3)]
    assert not ImageTransform().channel_swap and not ImageTransform.from_config({}, train=True).channel_swap
    assert ImageTransform.from_config({"channel_swap": True}, train=True).channel_swap
    # with a real generator: about half the draws permute the channels of a colour with no other change
    perms = set()
    for seed in range(64):
        rng = np.random.default_rng(seed)
        out = _colour(photometric_distort(_uniform((200, 100, 60), (1, 1)), rng, channel_swap=True))
        perms.add(tuple(int(np.argmax(out == v)) if np.any(np.isclose(out, v)) else -1 for v in (200, 100, 60)))
    assert len(perms) >= 4


# ------------------------------------------------------------------------------------------
# random crop


def test_random_crop_box_bounds_and_coverage():
    h, w = 375, 500
    boxes = np.array([random_crop_box(h, w, 0.8, np.random.default_rng(s)) for s in range(500)])
    top, left, ch, cw = boxes.T
    assert (ch >= math.ceil(0.8 * h)).all() and (ch <= h).all()
    assert (cw >= math.ceil(0.8 * w)).all() and (cw <= w).all()
    assert (top >= 0).all() and (top + ch <= h).all() and (left >= 0).all() and (left + cw <= w).all()
    assert ch.min() <= 305 and ch.max() >= 370 and cw.min() <= 410 and cw.max() >= 495  # whole range used
    assert len(set(top.tolist())) > 30 and len(set(left.tolist())) > 30  # positions vary
    # crops with a pixel height/width ratio outside [1/2, 2] are redrawn ...
    boxes = [random_crop_box(100, 200, 0.8, np.random.default_rng(s)) for s in range(200)]
    ratios = [ch / cw for _, _, ch, cw in boxes]
    assert min(ratios) >= 0.5 and max(ratios) > 0.55
    # ... and an image where no crop can satisfy it is left whole
    assert all(random_crop_box(100, 400, 0.8, np.random.default_rng(s)) == (0, 0, 100, 400) for s in range(20))
    # disabled: the full image, without touching the generator
    for r in (0.0, 1.0):
        rng = np.random.default_rng(0)
        assert random_crop_box(h, w, r, rng) == (0, 0, h, w)
        assert rng.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)


def test_train_crop_keeps_at_least_the_min_ratio_of_each_side(tmp_path):
    h, w = 150, 200
    yy, xx = np.mgrid[0:h, 0:w]
    grad = np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)  # R = column, G = row
    path = _save(tmp_path / "grad.png", grad)
    t = _plain(size=64, crop_min_ratio=0.8)
    seen = set()
    for seed in range(30):
        out = t({"inputs": path}, np.random.default_rng(seed))["inputs"]
        # exactly PIL's resize of the crop the same generator draws first
        top, left, ch, cw = random_crop_box(h, w, 0.8, np.random.default_rng(seed))
        expected = Image.fromarray(grad[top : top + ch, left : left + cw]).resize((64, 64), Image.BILINEAR)
        np.testing.assert_allclose(out, (np.asarray(expected, np.float64) - MEAN) / STD, atol=1e-5)
        # and the visible coordinate span covers >= 80% of each side
        px = out * STD + MEAN
        assert px[..., 0].max() - px[..., 0].min() >= 0.8 * w - 3
        assert px[..., 1].max() - px[..., 1].min() >= 0.8 * h - 3
        seen.add((round(float(px[..., 0].min())), round(float(px[..., 1].min()))))
    assert len(seen) > 10  # different crops for different seeds


# ------------------------------------------------------------------------------------------
# cache, pickling, config


def _count_decodes(monkeypatch):
    calls = []
    real = images.decode_image

    def counting(src):
        calls.append(src)
        return real(src)

    monkeypatch.setattr(images, "decode_image", counting)
    return calls


def test_cache_hits_skip_decoding_and_change_nothing(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.jpg", _natural(60, 80))
    raw = open(path, "rb").read()
    plain_eval, plain_train = ImageTransform(size=32), ImageTransform(train=True, size=32)
    expected_eval = plain_eval({"inputs": path})["inputs"]
    expected_train = [plain_train({"inputs": path}, np.random.default_rng(s))["inputs"] for s in range(6)]

    calls = _count_decodes(monkeypatch)
    ev = ImageTransform(size=32, cache=True)
    for _ in range(3):
        assert np.array_equal(ev({"inputs": path})["inputs"], expected_eval)
    assert len(calls) == 1 and ev.cache_size() == 1
    assert ev._cache[path].shape == (32, 32, 3)  # eval caches decoded + resized
    for _ in range(2):
        assert np.array_equal(ev({"inputs": raw})["inputs"], expected_eval)  # bytes are keys too
    assert len(calls) == 2 and ev.cache_size() == 2

    calls.clear()
    tr = ImageTransform(train=True, size=32, cache=True)
    outs = [tr({"inputs": path}, np.random.default_rng(s))["inputs"] for s in range(6)]
    assert len(calls) == 1
    assert all(np.array_equal(a, b) for a, b in zip(outs, expected_train))  # identical to no cache
    assert len({o.tobytes() for o in outs}) == 6  # crops still vary on cache hits
    cached = tr._cache[path]
    assert cached.shape == (60, 80, 3) and not cached.flags.writeable  # train caches the full image

    calls.clear()
    nocrop = ImageTransform(train=True, size=32, cache=True, crop_min_ratio=0.0)
    for s in range(3):
        nocrop({"inputs": path}, np.random.default_rng(s))
    assert len(calls) == 1 and nocrop._cache[path].shape == (32, 32, 3)  # no crop: resized

    calls.clear()
    for s in range(4):
        plain_train({"inputs": path}, np.random.default_rng(s))
    assert len(calls) == 4 and plain_train.cache_size() == 0  # no cache: every call decodes
    tr.clear_cache()
    assert tr.cache_size() == 0


def test_pickled_transform_is_equal_with_an_empty_cache(tmp_path):
    path = _save(tmp_path / "a.png", _natural(20, 20))
    t = ImageTransform(train=True, size=16, cache=True, flip_prob=0.3, mean=[1, 2, 3], std=[4, 5, 6])
    t({"inputs": path}, np.random.default_rng(0))
    assert t.cache_size() == 1
    u = pickle.loads(pickle.dumps(t))
    assert u == t and hash(u) == hash(t) and u.cache_size() == 0
    assert u.mean == (1.0, 2.0, 3.0)  # lists from a config become tuples
    a = t({"inputs": path}, np.random.default_rng(4))["inputs"]
    b = u({"inputs": path}, np.random.default_rng(4))["inputs"]
    assert np.array_equal(a, b) and u.cache_size() == 1
    assert t._cache is not u._cache


def test_from_config_defaults_and_overrides():
    d = image_defaults()
    assert set(d.keys()) == {"image_size", "augment", "flip_prob", "photometric", "crop_min_ratio", "cache_images",
                             "channel_swap", "auto_augment", "randaugment_ops", "randaugment_magnitude",
                             "cutout_factor"}
    assert (d.image_size, d.augment, d.flip_prob, d.photometric, d.crop_min_ratio, d.cache_images,
            d.channel_swap) == (224, True, 0.5, True, 0.8, False, False)
    empty = ml_collections.ConfigDict()
    assert ImageTransform.from_config(empty, train=True) == ImageTransform(train=True)
    assert ImageTransform.from_config(empty, train=False) == ImageTransform(train=False)
    cfg = ml_collections.ConfigDict(dict(image_size=96, flip_prob=0.25, photometric=False, crop_min_ratio=0.9,
                                         cache_images=True, name="voc_lt"))
    t = ImageTransform.from_config(cfg, train=True)
    fields = (t.size, t.train, t.flip_prob, t.photometric, t.crop_min_ratio, t.cache)
    assert fields == (96, True, 0.25, False, 0.9, True)
    assert t.cache_size() == 0 and t._cache == {}
    cfg.augment = False
    assert ImageTransform.from_config(cfg, train=True).train is False
    assert ImageTransform.from_config({"image_size": 32}, train=False).size == 32  # plain dicts work too


def test_invalid_settings_raise_with_the_field_name():
    with pytest.raises(ValueError, match="image_size"):
        ImageTransform(size=0)
    with pytest.raises(ValueError, match="image_size"):
        ImageTransform.from_config({"image_size": 224.5}, train=True)
    with pytest.raises(ValueError, match="crop_min_ratio"):
        ImageTransform(crop_min_ratio=1.5)
    with pytest.raises(ValueError, match="flip_prob"):
        ImageTransform(flip_prob=-0.1)
    with pytest.raises(ValueError, match="std"):
        ImageTransform(std=(1.0, 0.0, 1.0))


def test_transform_in_the_training_pipeline(tmp_path):
    from ltjax.data.pipeline import train_dataset
    from ltjax.data.sampling import UniformSampler

    paths = [_save(tmp_path / f"{i}.jpg", _natural(30 + i, 40, seed=i)) for i in range(6)]

    class PathSplit:
        labels = np.eye(6, 3, dtype=np.float32)[np.arange(6) % 3]

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {"inputs": paths[i], "labels": self.labels[i]}

    t = ImageTransform(train=True, size=16)
    batches = list(train_dataset(PathSplit(), UniformSampler(6, seed=0), 4, 3, transform=t, seed=1,
                                 process_index=0, process_count=1, read_threads=0))
    again = list(train_dataset(PathSplit(), UniformSampler(6, seed=0), 4, 3, transform=t, seed=1,
                               process_index=0, process_count=1, read_threads=0))
    assert len(batches) == 3
    assert batches[0]["inputs"].shape == (4, 16, 16, 3) and batches[0]["inputs"].dtype == np.float32
    assert batches[0]["labels"].shape == (4, 3)
    for a, b in zip(batches, again):
        assert np.array_equal(a["inputs"], b["inputs"])  # augmentation depends only on (seed, position)


# ------------------------------------------------------------------------------------------
# throughput (printed, not asserted)


def _rate(fn, seconds=0.6):
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def test_decode_throughput_report(tmp_path, capsys):
    path = _save(tmp_path / "voc_like.jpg", _natural(375, 500), quality=90)
    raw = open(path, "rb").read()
    rng = np.random.default_rng(0)
    ev, evc = ImageTransform(), ImageTransform(cache=True)
    tr, trc = ImageTransform(train=True), ImageTransform(train=True, cache=True)
    rates = {
        "decode_image(path)": _rate(lambda: decode_image(path)),
        "decode_image(bytes)": _rate(lambda: decode_image(raw)),
        "eval transform, no cache": _rate(lambda: ev({"inputs": path})),
        "eval transform, cache": _rate(lambda: evc({"inputs": path})),
        "train transform, no cache": _rate(lambda: tr({"inputs": path}, rng)),
        "train transform, cache": _rate(lambda: trc({"inputs": path}, rng)),
    }
    with capsys.disabled():
        print(f"\n500x375 JPEG ({len(raw)} bytes), images per second on one core:")
        for k, v in rates.items():
            print(f"  {k:28s} {v:8.0f}")
    assert all(v > 0 for v in rates.values())
