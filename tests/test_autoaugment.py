"""ltjax.data.autoaugment: magnitude tables, each operation against numpy, the policies' draws, Cutout, and
the training transform / device pipeline wiring."""
import collections

import numpy as np
import pytest
from PIL import Image

from ltjax.data import autoaugment as aa
from ltjax.data.images import ImageTransform, image_defaults


def _img(seed=0, h=24, w=32):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def _op(img, op, mag):
    return np.asarray(aa.apply_op(Image.fromarray(img), op, mag))


def test_magnitudes_equal_torchvision_tables():
    # torchvision's tables written independently with numpy: linspace over `bins` levels
    h, w, bins = 40, 60, 31
    for level in (0, 9, 17, 30):
        assert aa.magnitude("ShearX", level, bins, h, w) == pytest.approx(np.linspace(0, 0.3, bins)[level])
        assert aa.magnitude("TranslateX", level, bins, h, w) == pytest.approx(
            np.linspace(0, 150 / 331 * w, bins)[level])
        assert aa.magnitude("TranslateY", level, bins, h, w) == pytest.approx(
            np.linspace(0, 150 / 331 * h, bins)[level])
        assert aa.magnitude("Rotate", level, bins, h, w) == pytest.approx(np.linspace(0, 30, bins)[level])
        assert aa.magnitude("Color", level, bins, h, w) == pytest.approx(np.linspace(0, 0.9, bins)[level])
        assert aa.magnitude("Solarize", level, bins, h, w) == pytest.approx(np.linspace(255, 0, bins)[level])
    posterize = 8 - np.round(np.arange(bins) / ((bins - 1) / 4)).astype(int)
    assert [aa.magnitude("Posterize", i, bins, h, w) for i in range(bins)] == list(posterize)
    assert aa.magnitude("Posterize", 9, 10, h, w) == 4  # AutoAugment's 10-level table: 8 - round(9 / 2.25)
    with pytest.raises(ValueError, match="level must lie"):
        aa.magnitude("Rotate", 31, 31, h, w)


def test_pixel_operations_against_numpy():
    x = _img()
    np.testing.assert_array_equal(_op(x, "Identity", 0), x)
    np.testing.assert_array_equal(_op(x, "Invert", 0), 255 - x)
    np.testing.assert_array_equal(_op(x, "Solarize", 100), np.where(x >= 100, 255 - x, x))
    np.testing.assert_array_equal(_op(x, "Posterize", 3), x & np.uint8(0b11100000))
    # Brightness 1 + m blends with black: PIL rounds x * factor and clips
    np.testing.assert_allclose(_op(x, "Brightness", -0.5).astype(int), np.clip(np.round(x * 0.5), 0, 255), atol=1)
    # AutoContrast stretches every channel's min..max to 0..255
    y = _op((x // 2 + 40).astype(np.uint8), "AutoContrast", 0)
    assert (y.reshape(-1, 3).min(0) == 0).all() and (y.reshape(-1, 3).max(0) == 255).all()
    # Equalize flattens the histogram: 16 equally frequent levels 100..115 spread over 0..255, order kept
    ramp = np.repeat(np.arange(100, 116, dtype=np.uint8), 64).reshape(32, 32, 1).repeat(3, axis=2)
    eq = _op(ramp, "Equalize", 0)[::2, 0, 0].astype(int)
    assert eq[0] == 0 and eq[-1] == 255 and (np.diff(eq) >= 0).all() and len(set(eq)) >= 12


def test_geometric_operations_move_content():
    x = _img(1)
    t = _op(x, "TranslateX", 5)  # content moves right by 5 px, black comes in on the left
    np.testing.assert_array_equal(t[:, 5:], x[:, :-5])
    assert (t[:, :5] == 0).all()
    t = _op(x, "TranslateY", -3.7)  # int() toward zero: up by 3
    np.testing.assert_array_equal(t[:-3], x[3:])
    assert (t[-3:] == 0).all()
    for op in ("ShearX", "ShearY", "Rotate"):
        np.testing.assert_array_equal(_op(x, op, 0.0), x)
    s = _op(x, "ShearX", 0.25)  # row r reads input column c + 0.25 r (nearest); row 0 unchanged
    np.testing.assert_array_equal(s[0], x[0])
    r = 8
    np.testing.assert_array_equal(s[r, :20], x[r, 2:22])
    sq = _img(2, 31, 31)
    np.testing.assert_array_equal(_op(sq, "Rotate", 90), np.rot90(sq))  # counter-clockwise about the centre


def test_randaugment_draws_ops_uniformly_and_deterministically(monkeypatch):
    x = _img()
    a = aa.augment(x, np.random.default_rng(7), "randaugment")
    np.testing.assert_array_equal(a, aa.augment(x, np.random.default_rng(7), "randaugment"))
    assert not all(np.array_equal(a, aa.augment(x, np.random.default_rng(s), "randaugment")) for s in range(8, 12))
    np.testing.assert_array_equal(aa.augment(x, np.random.default_rng(0), "randaugment", num_ops=0), x)

    seen, mags = collections.Counter(), collections.defaultdict(set)

    def record(img, op, mag):
        seen[op] += 1
        mags[op].add(mag)
        return img

    monkeypatch.setattr(aa, "apply_op", record)
    rng = np.random.default_rng(0)
    n = 5600
    for _ in range(n // 2):
        aa.rand_augment(Image.fromarray(x), rng, num_ops=2, level=9)
    expected = n / len(aa.RANDAUGMENT_OPS)
    assert set(seen) == set(aa.RANDAUGMENT_OPS)
    for op, count in seen.items():  # binomial: 5 sigma
        assert abs(count - expected) < 5 * np.sqrt(expected), (op, count)
    assert mags["Rotate"] == {9.0, -9.0} and mags["Posterize"] == {7.0} and mags["Identity"] == {0.0}


def test_autoaugment_applies_sub_policies_with_their_probabilities(monkeypatch):
    calls = collections.Counter()

    def record(img, op, mag):
        calls[op] += 1
        return img

    monkeypatch.setattr(aa, "apply_op", record)
    rng = np.random.default_rng(1)
    n = 20000
    for _ in range(n):
        aa.auto_augment(Image.fromarray(_img()), rng)
    expected = collections.Counter()
    for sub in aa.IMAGENET_POLICY:
        for op, p, _ in sub:
            expected[op] += p * n / len(aa.IMAGENET_POLICY)
    for op, e in expected.items():
        assert abs(calls[op] - e) < 5 * np.sqrt(e) + 1, (op, calls[op], e)
    assert "TranslateX" not in calls


def test_cutout_box_colour_and_border():
    x = _img(3, 20, 20)
    rng = np.random.default_rng(5)
    y = aa.cutout(x, 0.5, rng)
    changed = np.any(y != x, axis=-1)
    rows, cols = np.nonzero(changed)
    box = y[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (box == box[0, 0]).all()  # one colour
    assert rows.max() - rows.min() + 1 <= 10 and cols.max() - cols.min() + 1 <= 10
    # redo the draws by hand: centre, then colour
    r2 = np.random.default_rng(5)
    cy, cx = r2.integers(20), r2.integers(20)
    colour = r2.integers(0, 256, size=3)
    ref = x.copy()
    ref[max(cy - 5, 0):min(cy + 5, 20), max(cx - 5, 0):min(cx + 5, 20)] = colour
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(x, _img(3, 20, 20))  # input untouched


def test_transform_wiring_and_errors():
    d = image_defaults()
    assert d.auto_augment == "" and d.cutout_factor == 0.0 and d.randaugment_magnitude == 9
    d.update(image_size=16, auto_augment="randaugment", cutout_factor=0.5, photometric=False, flip_prob=0.0,
             crop_min_ratio=1.0)
    t = ImageTransform.from_config(d, train=True)
    assert t.automatic and not ImageTransform.from_config(d, train=False).automatic
    x = _img(4, 16, 16)
    out = t({"inputs": x}, np.random.default_rng(3))["inputs"]
    ref = aa.augment(x, np.random.default_rng(3), "randaugment", cutout_factor=0.5)
    np.testing.assert_allclose(out, (ref - np.array(t.mean)) / np.array(t.std), rtol=1e-5, atol=1e-5)
    for field, value, match in (("auto_augment", "randaug", "data.auto_augment must be one of"),
                                ("randaugment_magnitude", 31, "randaugment_magnitude"),
                                ("cutout_factor", 1.5, "cutout_factor")):
        bad = image_defaults()
        bad[field] = value
        with pytest.raises(ValueError, match=match):
            ImageTransform.from_config(bad, train=True)
