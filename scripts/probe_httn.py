"""How much tail-label information an HTTN run's extractor holds: the AP of the run's own scores next to
two references computed on the same frozen unit embeddings r^ (the space the prototypes live in).

  python scripts/probe_httn.py RUN_DIR [RUN_DIR ...]   # e.g. runs/httn_iu/iu_xray_reports_httn/seed_0

For the run's tail labels (its ``method.l_tail`` / ``tail_max`` split) and, for comparison, its head labels:

* ``run``: the AP of the run's evaluation scores (HTTN's transferred tail weights, EHTTN's member mean,
  imprinting's prototypes; for the head labels the trained head classifier) -- equal to eval.json's;
* ``class means``: each label scored by cos(r^, mean r^ of *all* its training documents), the best a
  prototype can be (HTTN averages t sampled documents);
* ``linear probe``: a logistic regression per label on the training documents' r^ (scikit-learn, a dev
  dependency; class-balanced, C = 1), the best a linear classifier on this extractor reaches without
  training the extractor.

mAP is over the labels of the group with a positive in the evaluation split (percent), computed with
``ltjax.metrics.average_precision`` (sklearn's AP).  If ``class means`` and ``linear probe`` are far
below the head labels' and close to the run's tail mAP, the extractor, not the transfer, limits the tail.
Writes nothing; the data of the run must be here (the extractor is re-run on the train and eval splits).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def embeddings(exp, state, split: str) -> np.ndarray:
    """The unit embeddings r^ [N, d] of every example of ``split`` (HTTN's ``outputs["embedding"]``)."""
    import jax.numpy as jnp

    out = exp.collect(state, split, lambda outputs, batch: {"e": outputs["embedding"].astype(jnp.float32)})
    return np.asarray(out["e"], np.float64)


def class_mean_scores(train_emb, train_labels, test_emb) -> np.ndarray:
    """[N_test, C]: cos(r^, mean r^ of the label's training documents); 0 for a label without documents."""
    counts = train_labels.sum(axis=0)
    means = (train_labels.T @ train_emb) / np.maximum(counts, 1)[:, None]
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    units = np.where(norms > 0, means / np.maximum(norms, 1e-12), 0.0)
    return test_emb @ units.T


def probe_scores(train_emb, train_labels, test_emb, classes) -> np.ndarray:
    """[N_test, C]: a class-balanced logistic regression per label in ``classes`` (others 0)."""
    from sklearn.linear_model import LogisticRegression

    out = np.zeros((len(test_emb), train_labels.shape[1]))
    for c in classes:
        y = train_labels[:, c] > 0.5
        if y.all() or not y.any():
            continue
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(train_emb, y)
        out[:, c] = clf.decision_function(test_emb)
    return out


def group_map(scores, labels, classes) -> tuple[float, int]:
    """Mean AP (percent) over ``classes`` with a positive in ``labels``, and how many that is."""
    from ltjax.metrics import average_precision

    keep = [c for c in classes if labels[:, c].sum() > 0]
    if not keep:
        return float("nan"), 0
    ap = np.asarray(average_precision(scores[:, keep].astype(np.float32), labels[:, keep].astype(np.float32)))
    return 100 * float(np.mean(ap)), len(keep)


def probe(workdir: str) -> dict:
    """``{"tail": {...}, "head": {...}}``: per group the three mAPs and the number of labels scored."""
    import jax

    from ltjax.predict import load_run

    exp, state, step = load_run(workdir, use_snapshot=False)
    if exp.config.method.name not in ("httn", "ehttn", "imprinting"):
        raise SystemExit(f"{workdir} is a {exp.config.method.name!r} run; this probe reads HTTN-family runs "
                         "(their unit embeddings and head / tail split)")
    split = str(exp.config.eval.split)
    is_tail = np.asarray(jax.device_get(state.method_state)["is_tail"]) > 0.5
    train_labels = np.asarray(exp.dataset.split("train").labels, np.float64)
    run_scores, test_labels = exp.predict(state.params, state.batch_stats, split, state.method_state)
    train_emb, test_emb = embeddings(exp, state, "train"), embeddings(exp, state, split)
    means = class_mean_scores(train_emb, train_labels, test_emb)
    out = {"step": step}
    for group, classes in (("tail", np.flatnonzero(is_tail)), ("head", np.flatnonzero(~is_tail))):
        linear = probe_scores(train_emb, train_labels, test_emb, classes)
        run_map, n = group_map(np.asarray(run_scores), test_labels, classes)
        out[group] = {"labels": n, "run": run_map, "class_means": group_map(means, test_labels, classes)[0],
                      "linear_probe": group_map(linear, test_labels, classes)[0]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories of httn / ehttn / imprinting")
    args = p.parse_args(argv)
    lines = ["| run | group (labels) | run's scores | class means | linear probe |", "|---|---|---|---|---|"]
    results = {}
    for workdir in args.runs:
        results[workdir] = r = probe(workdir)
        for group in ("tail", "head"):
            g = r[group]
            lines.append(f"| {workdir} | {group} ({g['labels']}) | {g['run']:.2f} | {g['class_means']:.2f} | "
                         f"{g['linear_probe']:.2f} |")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
