"""HTTN / EHTTN / imprinting (ltjax/methods/httn.py): split, prototypes, transfer, tail attention, assembly,
ensemble scores, the head loss and a run through the loop."""
from __future__ import annotations

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.methods import METHODS, httn
from ltjax.training.experiment import Experiment
from builtin_datasets import registered_text_datasets, tiny_run_config
from helpers import set_fields, small_synthetic_config


def test_tail_split_by_count_with_ties_by_index_and_by_threshold():
    counts = np.array([50, 3, 7, 3, 100, 7])
    np.testing.assert_array_equal(httn.tail_mask(counts, l_tail=3), [0, 1, 1, 1, 0, 0])  # 3, 3, then 7 (class 2)
    np.testing.assert_array_equal(httn.tail_mask(counts, tail_max=10), [0, 1, 1, 1, 0, 1])
    with pytest.raises(ValueError, match="l_tail"):
        httn.tail_mask(counts, l_tail=6)
    with pytest.raises(ValueError, match="head / tail split"):
        httn.tail_mask(counts)


def test_prototypes_are_normalised_means_of_seeded_draws():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 6))
    labels = (rng.random((40, 4)) < 0.3).astype(np.float32)
    labels[:, 3] = 0
    labels[5, 3] = 1  # one document only
    p = httn.prototypes(emb, labels, [0, 1, 3], shots=5, seed=7, round_=2)
    for i, c in enumerate([0, 1, 3]):
        docs = httn.draw(labels, c, 5, 7, 2)
        assert len(docs) == min(5, int(labels[:, c].sum())) and np.all(labels[docs, c] == 1)
        m = emb[docs].mean(0)
        np.testing.assert_allclose(p[i], m / np.linalg.norm(m), rtol=1e-10)
    np.testing.assert_array_equal(httn.draw(labels, 0, 5, 7, 2), httn.draw(labels, 0, 5, 7, 2))  # reproducible
    assert not np.array_equal(httn.draw(labels, 0, 5, 7, 2), httn.draw(labels, 0, 5, 7, 3))  # another round
    np.testing.assert_array_equal(httn.draw(labels, 3, 5, 7, 0), [5])
    empty = np.zeros((40, 1), np.float32)
    assert np.all(httn.prototypes(emb, empty, [0], 5, 0, 0) == 0)


def test_the_transfer_learner_recovers_a_known_linear_map():
    rng = np.random.default_rng(1)
    w_true = rng.normal(size=(8, 8))
    protos = rng.normal(size=(120, 8))
    weights = protos @ w_true.T
    np.testing.assert_allclose(httn.fit_transfer(protos, weights), w_true, rtol=1e-8, atol=1e-8)
    noisy = weights + rng.normal(scale=1e-3, size=weights.shape)
    np.testing.assert_allclose(httn.fit_transfer(protos, noisy), w_true, atol=1e-3)


def test_tail_attention_and_weights_by_hand():
    p_head = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p_tail = np.array([[0.8, 0.6], [0.0, 0.0]])  # the second tail label has no document
    transfer = np.array([[2.0, 0.0], [1.0, 1.0]])
    got = httn.tail_weights(p_tail, p_head, transfer)
    s = p_tail[0] @ p_head.T  # 0.8, 0.6, 0.96
    a = np.exp(s) / np.exp(s).sum()
    p_new = (a @ p_head + p_tail[0]) / 2
    np.testing.assert_allclose(got[0], transfer @ p_new, rtol=1e-12)
    np.testing.assert_array_equal(got[1], [0.0, 0.0])
    np.testing.assert_array_equal(httn.tail_weights(p_tail, p_head, None), p_tail)  # imprinting


def test_assembly_keeps_head_rows_and_puts_tail_rows_at_their_classes():
    head = np.arange(12.0).reshape(4, 3)
    is_tail = np.array([0, 1, 0, 1], np.float32)
    tail = np.array([[-1.0, -1, -1], [-2.0, -2, -2]])
    out = httn.assemble(head, tail, is_tail)
    np.testing.assert_array_equal(out[[0, 2]], head[[0, 2]])
    np.testing.assert_array_equal(out[[1, 3]], tail)
    np.testing.assert_array_equal(head, np.arange(12.0).reshape(4, 3))  # not modified in place


def test_the_pass_fits_on_head_pairs_and_ehttn_draw_0_is_httn():
    rng = np.random.default_rng(3)
    labels = (rng.random((60, 5)) < 0.4).astype(np.float32)
    emb = rng.normal(size=(60, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    head_w = rng.normal(size=(5, 4))
    is_tail = np.array([0, 0, 1, 0, 1], np.float32)
    cfg = METHODS.get("ehttn").defaults()
    cfg.rounds, cfg.ensemble = 4, 3
    sets, w, info = httn.transfer_classifiers(emb, labels, head_w, is_tail, cfg, seed=0)
    assert sets.shape == (3, 5, 4) and info["head_labels"] == 3 and info["tail_labels"] == 2
    for g in range(3):
        np.testing.assert_allclose(sets[g][[0, 1, 3]], head_w[[0, 1, 3]], rtol=1e-6)
    assert not np.allclose(sets[0][2], sets[1][2])  # the draws differ
    cfg1 = METHODS.get("httn").defaults()
    cfg1.rounds = 4
    one, w1, _ = httn.transfer_classifiers(emb, labels, head_w, is_tail, cfg1, seed=0)
    np.testing.assert_allclose(one[0], sets[0], rtol=1e-6)
    np.testing.assert_allclose(w1, w, rtol=1e-10)
    # by hand: the least-squares fit of the S x |head| pairs, the tail rows from draw 0
    head = [0, 1, 3]
    per_round = np.stack([httn.prototypes(emb, labels, head, 5, 0, k) for k in range(4)])
    want_w = httn.fit_transfer(per_round.reshape(-1, 4), np.tile(head_w[head], (4, 1)))
    np.testing.assert_allclose(w, want_w, rtol=1e-8)
    p_tail = httn.prototypes(emb, labels, [2, 4], 5, 0, 4)
    np.testing.assert_allclose(one[0][[2, 4]], httn.tail_weights(p_tail, per_round.mean(0), want_w), rtol=1e-5)


def test_ehttn_scores_are_the_mean_of_its_members_sigmoids():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(3, 4)).astype(np.float32)
    sets = rng.normal(size=(5, 6, 4)).astype(np.float32)
    cfg = METHODS.get("ehttn").defaults()
    got = httn.httn_scores({"features": jnp.asarray(feats), "logits": None}, {"classifiers": jnp.asarray(sets)}, cfg)
    want = np.mean([1 / (1 + np.exp(-(feats @ s.T))) for s in sets], axis=0)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_the_head_phase_trains_on_head_labels_of_head_documents_only():
    y = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # doc 1 has only the tail label 2
    z = jnp.array([[0.3, -1.0, 2.0], [1.0, 0.5, -2.0], [0.0, 0.2, 0.1]])
    state = {"is_tail": jnp.array([0.0, 0.0, 1.0])}
    cfg = METHODS.get("httn").defaults()
    got, _ = httn._head_loss({"logits": z}, {"labels": y}, None, cfg, state)
    zz, yy = np.asarray(z)[[0, 2]][:, :2], np.asarray(y)[[0, 2]][:, :2]
    bce = -(yy * np.log(1 / (1 + np.exp(-zz))) + (1 - yy) * np.log(1 - 1 / (1 + np.exp(-zz))))
    np.testing.assert_allclose(float(got), bce.mean(), rtol=1e-5)
    cfg.head_docs = "all"
    zz, yy = np.asarray(z)[:, :2], np.asarray(y)[:, :2]
    bce = -(yy * np.log(1 / (1 + np.exp(-zz))) + (1 - yy) * np.log(1 - 1 / (1 + np.exp(-zz))))
    np.testing.assert_allclose(float(httn._head_loss({"logits": z}, {"labels": y}, None, cfg, state)[0]), bce.mean(),
                               rtol=1e-5)


def _config(name="httn", **over):
    c = small_synthetic_config(**{"train.num_epochs": 1, "mesh.data": 1})
    c.method = METHODS.get(name).defaults()
    c.method.l_tail = 4
    c.method.rounds = 3
    c.method.shots = 2
    return set_fields(c, over)


def test_a_run_through_the_loop_writes_the_transfer_into_the_classifier(tmp_path):
    from ltjax.training import loop

    c = _config("ehttn", **{"method.ensemble": 3, "train.keep_checkpoints": 10})
    result = loop.train_and_evaluate(c, str(tmp_path))
    exp = Experiment(c)
    phases = json.load(open(os.path.join(tmp_path, "phases.json")))
    assert [p["name"] for p in phases] == ["head", "transfer"]
    after, _ = exp.restore(str(tmp_path))
    before, _ = exp.restore(str(tmp_path), step=phases[0]["steps"])
    is_tail = np.asarray(after.method_state["is_tail"]) > 0.5
    w0, w1 = np.asarray(before.params["classifier"]), np.asarray(after.params["classifier"])
    np.testing.assert_array_equal(w1[~is_tail], w0[~is_tail])  # head rows untouched by the transfer
    assert not np.allclose(w1[is_tail], w0[is_tail])
    sets = np.asarray(after.method_state["classifiers"])
    np.testing.assert_allclose(sets[0], w1, rtol=1e-6)  # HTTN = draw 0
    chex.assert_trees_all_equal(jax.device_get(before.params["backbone"]), jax.device_get(after.params["backbone"]))
    assert result["method_summary"]["l_tail"] == 4 and "mAP_tail_split" in result["method_summary"]


def test_httn_configs_and_missing_data_stops_at_once(tmp_path):
    from ltjax.config import load_config
    from helpers import REPO, run_module

    c = load_config(str(REPO / "configs" / "httn_aapd.py"))
    assert (c.method.name, c.method.l_tail, c.method.shots, c.method.rounds) == ("httn", 18, 5, 30)
    assert c.model.name == "text_bilstm" and c.optimizer.lr == 1e-3 and c.data.root.endswith("aapd")
    assert load_config(str(REPO / "configs" / "httn_rcv1.py") + ":ehttn,14").method.l_tail == 14
    e = load_config(str(REPO / "configs" / "httn_eurlex.py") + ":imprinting")
    assert (e.method.l_tail, e.method.shots, e.method.tail_weights) == (1238, 1, "imprint")
    assert load_config(str(REPO / "configs" / "httn_aapd.py") + ":bce").method.name == "bce"
    r = run_module("ltjax.train", "--config", "configs/httn_aapd.py", "--workdir", str(tmp_path / "run"),
                   f"--config.data.root={tmp_path / 'nowhere'}", timeout=120)
    assert r.returncode != 0 and "text_train" in r.stdout + r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # three small HTTN processes on a tiny corpus: ~45 s here
def test_kill_9_between_the_phases_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    """Killed right after the head phase's last checkpoint (before or inside the transfer pass), then started
    again: the pass repeats from the boundary and everything equals a run that was never killed."""
    from helpers import assert_same_final_states, kill_and_resume
    from test_text import write_lines

    words = ["codes", "capacity", "learning", "graphs", "quantum", "bandits", "sparse", "deep"]
    labels = ["cs.IT", "cs.LG", "math.IT", "stat.ML", "quant-ph", "cs.DS"]
    rng = np.random.default_rng(0)

    def docs(n):
        return [(" ".join(rng.choice(words, 5)), " ".join(sorted(set(rng.choice(labels, 2, p=[.4, .3, .1, .1, .05, .05])))))
                for _ in range(n)]

    root = write_lines(tmp_path / "corpus", {"train": docs(64), "test": docs(16)})
    args = ["--config", "configs/text.py:ehttn,text_bilstm", f"--config.data.root={root}", "--config.data.storage=files",
            "--config.data.min_freq=1", "--config.data.max_length=8", "--config.data.batch_size=8",
            "--config.data.eval_batch_size=16", "--config.data.groups.mode=quantile", "--config.eval.top_k=(1,)",
            "--config.model.embed_dim=8", "--config.model.lstm_hidden=4", "--config.method.l_tail=2",
            "--config.method.rounds=3", "--config.method.ensemble=4", "--config.method.dim=8",
            "--config.method.phases.head.steps=12", "--config.train.checkpoint_every=1", "--config.train.log_every=1",
            "--config.mesh.data=1", "--config.train.progress_bar=off"]
    ref, killed, resumed_at = kill_and_resume(args, tmp_path, 12)
    assert resumed_at >= 12
    a, b = (json.load(open(os.path.join(d, "eval.json"))) for d in (ref, killed))
    assert a["per_class"] == b["per_class"] and a["method_summary"] == b["method_summary"]
    assert_same_final_states(ref, killed)


def test_imprinted_tail_rows_are_the_normalised_prototypes():
    rng = np.random.default_rng(5)
    labels = (rng.random((50, 4)) < 0.5).astype(np.float32)
    emb = rng.normal(size=(50, 3))
    head_w = rng.normal(size=(4, 3)) * 3
    is_tail = np.array([0, 1, 0, 0], np.float32)
    cfg = METHODS.get("imprinting").defaults()
    cfg.rounds = 2
    sets, w, _ = httn.transfer_classifiers(emb, labels, head_w, is_tail, cfg, seed=1)
    assert w is None
    p_tail = httn.prototypes(emb, labels, [1], 5, 1, 2)  # the first draw after the 2 head rounds
    np.testing.assert_allclose(sets[0][1], p_tail[0], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(sets[0][1]), 1.0, rtol=1e-5)


@pytest.mark.slow  # one tiny HTTN and EHTTN run per text dataset (5): ~2 min here
@pytest.mark.parametrize("name", registered_text_datasets())
def test_httn_and_ehttn_run_on_every_registered_text_dataset(name, tmp_path, request):
    """HTTN's head phase, the prototype / transfer pass and the evaluation through the loop on a small copy
    of every registered text dataset (tests/builtin_datasets.py), then EHTTN from the same head phase:
    finite scores, head rows untouched, every tail row written."""
    from ltjax.training import loop

    runs = {}
    for method in ("httn", "ehttn"):
        c, num_classes = tiny_run_config(name, "text", tmp_path, request, method)
        c.method.l_tail, c.method.rounds, c.method.shots = 2, 2, 1
        if method == "ehttn":
            c.method.ensemble = 2
        workdir = tmp_path / method
        result = loop.train_and_evaluate(c, str(workdir))
        exp = Experiment(c)
        assert exp.meta.name == name and exp.meta.input_kind == "text"
        assert num_classes is None or exp.meta.num_classes == num_classes
        assert np.isfinite(result["mAP"]) and result["method_summary"]["l_tail"] == 2
        phases = json.load(open(workdir / "phases.json"))
        after, _ = exp.restore(str(workdir))
        before, _ = exp.restore(str(workdir), step=phases[0]["steps"])
        is_tail = np.asarray(after.method_state["is_tail"]) > 0.5
        w0, w1 = np.asarray(before.params["classifier"]), np.asarray(after.params["classifier"])
        assert is_tail.sum() == 2
        np.testing.assert_array_equal(w1[~is_tail], w0[~is_tail])
        assert np.isfinite(w1).all() and not np.allclose(w1[is_tail], w0[is_tail])
        runs[method] = w1
    np.testing.assert_allclose(runs["ehttn"], runs["httn"], rtol=1e-6)  # EHTTN's draw 0 is HTTN's classifier
