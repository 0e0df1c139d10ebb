"""Calibration rows (ltjax/calibration.py): the class-frequency floor and the colour-only score, checked
against values worked out independently."""
import colorsys

import numpy as np
import pytest

from ltjax import calibration
from ltjax.data import ArraySplit, Dataset, make_meta
from ltjax.defaults import experiment_config


def test_frequency_baseline_bce_is_the_label_entropy_and_its_ap_the_prevalence():
    rng = np.random.default_rng(0)
    train = (rng.random((200, 5)) < [0.5, 0.3, 0.1, 0.05, 0.02]).astype(np.float32)
    test = (rng.random((100, 5)) < 0.2).astype(np.float32)
    p = train.mean(0)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p)).mean()  # BCE of the marginals on their own split
    scores = calibration.frequency_scores(train, len(train))
    assert calibration.binary_cross_entropy(scores, train) == pytest.approx(entropy, rel=1e-6)
    groups_cfg = experiment_config("synthetic_lt", "mlp", "bce").data.groups
    groups_cfg.mode = "quantile"
    meta = make_meta("toy", [f"c{i}" for i in range(5)], train, groups_cfg, (3,))
    ds = Dataset(meta, {"train": ArraySplit(np.zeros((200, 3), np.float32), train),
                        "test": ArraySplit(np.zeros((100, 3), np.float32), test)})
    (row,) = calibration.calibration_rows(ds)  # a features dataset: no colour row
    assert row["name"] == "class frequency"
    # a constant score ranks nothing: each class's AP is its test prevalence
    assert row["mAP"] == pytest.approx(test.mean(0)[test.sum(0) > 0].mean(), rel=1e-5)
    assert row["bce_train"] == pytest.approx(entropy, rel=1e-6)


def test_hue_histogram_matches_colorsys():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(1, 6, 7, 3)).astype(np.uint8)
    want = np.zeros(calibration.HUE_BINS)
    for r, g, b in img[0].reshape(-1, 3) / 255.0:
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        if s > calibration.MIN_SATURATION and v * 255 > calibration.MIN_VALUE:
            want[min(int(h * 360 // 30), calibration.HUE_BINS - 1)] += 1
    np.testing.assert_allclose(calibration.hue_histograms(img)[0], want / 42, atol=1e-6)


def test_colour_score_ranks_images_by_the_amount_of_their_class_colour():
    gray = np.full((8, 8, 3), 200, np.uint8)

    def image(red_px, blue_px):
        x = gray.copy()
        x.reshape(-1, 3)[:red_px] = (230, 50, 30)
        x.reshape(-1, 3)[red_px:red_px + blue_px] = (30, 100, 230)
        return x

    train = np.stack([image(10, 0), image(12, 0), image(0, 9), image(0, 11)])
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)  # class 0 is red, class 1 blue
    test = np.stack([image(20, 0), image(5, 0), image(0, 20), image(3, 3)])
    s = calibration.colour_scores(calibration.hue_histograms(train), y, calibration.hue_histograms(test))
    assert np.argsort(-s[:, 0]).tolist()[:2] == [0, 1] and np.argmax(s[:, 1]) == 2
