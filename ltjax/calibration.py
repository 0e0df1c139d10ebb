"""Calibration rows for benchmark reports: what a score with no (deep) learning reaches on the same split.

A long-tail table is only readable next to its floor.  Two rows, both under the same protocol as the
methods (``ltjax.metrics.evaluate``: mAP over classes with test positives, head / medium / tail groups
from the training counts):

* **class frequency**: every test example scored with each class's training frequency ``n_c / N``.  Its
  mAP is each class's test prevalence (a constant score ranks nothing); its binary cross-entropy on the
  TRAINING split, ``bce_train``, is the loss a model reaches by learning only the label marginals, so a
  run whose training loss ends above it has underfit (issue 13 found the former tiles recipe there);
  ``bce_test`` is the same on the test split.
* **colour only** (image datasets): every image reduced to a hue histogram of its saturated pixels
  (12 bins of 30 degrees, pixels with HSV saturation > 0.3 and value > 50, as fractions of all pixels),
  and class ``c`` scored by ``<h, mu_c+ - mu_c->``, the difference of the mean histograms of the training
  images with and without ``c``.  Nothing is fitted beyond class means; on ``tiles_voc_lt`` it measures
  the amount of red or blue in an image, the cue a model can use before it learns any shape.

Images are read as the evaluation transform reads them (decoded, resized to ``data.image_size``).
"""
from __future__ import annotations

import numpy as np

HUE_BINS = 12
MIN_SATURATION = 0.3
MIN_VALUE = 50.0
EPS = 1e-6


def frequency_scores(train_labels: np.ndarray, num_examples: int) -> np.ndarray:
    """[N, C] scores: each class's training frequency for every example."""
    p = np.asarray(train_labels, np.float64).mean(axis=0)
    return np.broadcast_to(p, (int(num_examples), p.shape[0])).astype(np.float32)


def binary_cross_entropy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over every (example, class) entry of the BCE of probabilities ``scores``, clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(scores, np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def hue_histograms(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB -> float32 [N, HUE_BINS]: the fraction of each image's pixels that are
    saturated (S > 0.3, V > 50) with a hue in each 30-degree bin."""
    from ltjax.data.images import rgb_to_hsv

    out = np.empty((len(images), HUE_BINS), np.float32)
    for i, img in enumerate(images):
        hsv = rgb_to_hsv(np.asarray(img, np.float32))
        h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        keep = (s > MIN_SATURATION) & (v > MIN_VALUE)
        bins = np.minimum((h[keep] / (360.0 / HUE_BINS)).astype(np.int64), HUE_BINS - 1)
        out[i] = np.bincount(bins, minlength=HUE_BINS) / float(h.size)
    return out


def colour_scores(train_hist: np.ndarray, train_labels: np.ndarray, test_hist: np.ndarray) -> np.ndarray:
    """[N_test, C]: ``<h, mu_c+ - mu_c->`` (module docstring); a class with no positive (or no negative)
    training image gets the zero direction."""
    y = np.asarray(train_labels, np.float64)
    h = np.asarray(train_hist, np.float64)
    pos, neg = y.sum(0), (1 - y).sum(0)
    mu_pos = (y.T @ h) / np.maximum(pos, 1)[:, None]
    mu_neg = ((1 - y).T @ h) / np.maximum(neg, 1)[:, None]
    direction = np.where(((pos > 0) & (neg > 0))[:, None], mu_pos - mu_neg, 0.0)
    return (np.asarray(test_hist, np.float64) @ direction.T).astype(np.float32)


def _report(scores, labels, meta) -> dict:
    from ltjax import metrics

    r = metrics.evaluate(scores, labels, meta.groups, meta.class_counts, meta.class_names, top_k=())
    return {"mAP": r["mAP"], "group_mAP": r["group_mAP"], "group_sizes": r["group_sizes"]}


def calibration_rows(dataset, split: str = "test", image_size: int | None = None) -> list[dict]:
    """The calibration rows (module docstring) of a :class:`ltjax.data.base.Dataset` on ``split``:
    ``[{"name", "description", "mAP", "group_mAP", "group_sizes", ...}]``."""
    meta = dataset.meta
    train, test = dataset.split("train"), dataset.split(split)
    freq_test = frequency_scores(train.labels, len(test))
    rows = [{
        "name": "class frequency",
        "description": "every example scored with the training frequency n_c / N of each class (no learning)",
        **_report(freq_test, test.labels, meta),
        "bce_train": binary_cross_entropy(frequency_scores(train.labels, len(train)), train.labels),
        "bce_test": binary_cross_entropy(freq_test, test.labels),
    }]
    if meta.input_kind == "image":
        from ltjax.data.on_device import image_store

        size = int(image_size or meta.input_shape[0])
        hist = {name: hue_histograms(image_store(s, (size, size)).inputs) for name, s in (("train", train), (split, test))}
        scores = colour_scores(hist["train"], train.labels, hist[split])
        rows.append({
            "name": "colour only",
            "description": "hue histogram of the saturated pixels scored against the difference of the class's "
                           "positive and negative training means (no learning beyond class means)",
            **_report(scores, test.labels, meta),
        })
    return rows


def format_rows(rows: list[dict], groups: list[str]) -> list[str]:
    """Markdown table rows (mAP total, then each group, percent) for the calibration rows."""
    from ltjax.report import _pct

    out = []
    for r in rows:
        cells = [_pct(r["mAP"])] + [_pct(r["group_mAP"].get(g)) for g in groups]
        extra = f"; training BCE {r['bce_train']:.4f}" if "bce_train" in r else ""
        out.append(f"| *{r['name']}* (calibration{extra}) | " + " | ".join(cells))
    return out
