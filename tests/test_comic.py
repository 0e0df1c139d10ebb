"""COMIC (ltjax/methods/comic.py): MFM, RLC, the cosine classifier, moving logits, kappa, streams, sharding,
resume."""
from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.methods import METHODS, comic
from ltjax.training.experiment import Experiment
from builtin_datasets import every_dataset_case, tiny_run_config
from helpers import set_fields, small_synthetic_config
from test_tiles import cache, mnist  # noqa: F401  (fixtures for the tiles_voc_lt case below)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _mfm_numpy(z, y, gp, gn, clip):
    p = _sigmoid(z)
    pm = np.maximum(p - clip, 0.0)
    pos = -((1 - p) ** gp) * np.log(p)
    neg = -(pm ** gn) * np.log(np.minimum(1 - p + clip, 1.0))
    return np.where(y > 0.5, pos, neg)


def test_mfm_terms_and_gradient_against_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (5, 4)).astype(np.float32)
    y = (rng.random((5, 4)) < 0.4).astype(np.float32)
    gp = np.array([0.0, 0.5, 1.0, 2.0], np.float32)
    gn = np.array([3.0, 3.5, 4.0, 0.0], np.float32)
    got = np.asarray(comic.mfm_terms(jnp.asarray(z), jnp.asarray(y), gp, gn, 0.05))
    np.testing.assert_allclose(got, _mfm_numpy(z.astype(np.float64), y, gp, gn, 0.05), rtol=1e-5, atol=1e-6)
    # the focal factors carry no gradient: d/dz = factor * d(-log term)/dz
    g = np.asarray(jax.grad(lambda v: jnp.sum(comic.mfm_terms(v, jnp.asarray(y), gp, gn, 0.05)))(jnp.asarray(z)))
    p = _sigmoid(z.astype(np.float64))
    pm = np.maximum(p - 0.05, 0)
    shifted = 1 - p + 0.05 < 1
    d_neg = np.where(shifted, p * (1 - p) / (1 - p + 0.05), 0.0) * pm ** gn
    want = np.where(y > 0.5, -((1 - p) ** gp) * (1 - p), d_neg)
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)


def test_head_tail_factor_and_the_factor_switches_by_hand():
    counts = np.array([100, 10, 1, 0])
    g = comic.head_tail_factor(counts)
    want = (1 - np.log(np.array([100, 10, 1, 1]) / 100.0)) ** (1 / 3)
    np.testing.assert_allclose(g, want, rtol=1e-6)
    assert g[0] == 1.0 and g[2] > g[1] > g[0]
    np.testing.assert_allclose(np.asarray(comic.head_tail_factor_jnp(jnp.asarray(counts))), want, rtol=1e-5)
    cfg = comic._defaults()
    gp, gn = comic.gammas(cfg, g)
    np.testing.assert_allclose(gp, 0.0 * g)
    np.testing.assert_allclose(gn, 3.0 + g)
    cfg.mfm_factors = "pn"
    np.testing.assert_allclose(comic.gammas(cfg, g)[1], np.full(4, 3.0))
    cfg.mfm_factors = "ht"
    np.testing.assert_allclose(comic.gammas(cfg, g)[1], g)


def test_cosine_classifier_moving_logits_and_kappa_against_numpy():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(3, 8)).astype(np.float32)
    w = rng.normal(size=(5, 8)).astype(np.float32)
    e = rng.normal(size=(8,)).astype(np.float32)
    rho, eta = 16.0, 1 / 32
    for k in (1, 2):
        fk, wk, ek = f.reshape(3, k, -1), w.reshape(5, k, -1), e.reshape(k, -1)
        fu = fk / np.linalg.norm(fk, axis=-1, keepdims=True)
        wn = wk / (np.linalg.norm(wk, axis=-1, keepdims=True) + eta)
        z = rho / k * np.einsum("bkd,ckd->bc", fu, wn)
        np.testing.assert_allclose(np.asarray(comic.cosine_logits(f, w, rho, eta, k)), z, rtol=1e-5, atol=1e-5)
        eu = ek / np.linalg.norm(ek, axis=-1, keepdims=True)
        tde = np.zeros((3, 5))
        for j in range(k):
            cos = fu[:, j] @ eu[j]  # [B]
            tde += np.outer(cos, wk[:, j] @ eu[j] / (np.linalg.norm(wk[:, j], axis=-1) + eta))
        for sign in (-1.0, 2.0):
            got = comic.moving_logits(jnp.asarray(z), f, w, e, sign, rho, eta, k)
            np.testing.assert_allclose(np.asarray(got), z + sign * rho / k * tde, rtol=1e-5, atol=1e-4)
    # e = 0 (before the first step): the moving logits are the logits
    z1 = comic.cosine_logits(f, w, rho, eta)
    np.testing.assert_allclose(np.asarray(comic.moving_logits(z1, f, w, np.zeros(8), -1.0, rho, eta)), np.asarray(z1))
    kh, kt = comic.kappa(jnp.float32(0.3), jnp.float32(0.6), 2.0)
    np.testing.assert_allclose([float(kh), float(kt)], [0.09 / 0.45, 0.36 / 0.45], rtol=1e-6)


def test_recall_rule_by_hand():
    p = jnp.array([[0.8, 0.75, 0.95, 0.9]])
    y = jnp.array([[0.0, 0.0, 0.0, 1.0]])
    ref = jnp.array([[0.1, 0.8, 0.9, 0.1]])  # max(0.7, ref) = 0.7, 0.8, 0.9, 0.7
    np.testing.assert_array_equal(np.asarray(comic.recall(p, y, ref, 0.7)), [[1, 0, 1, 0]])


def _one_branch_setup(**cfg_over):
    """COMIC without the balancer on a 2-example, 3-class batch with hand-picked logits."""
    cfg = comic._defaults()
    cfg.htb = False
    cfg.update(cfg_over)
    z = jnp.array([[2.0, -1.0, 3.0], [0.5, 1.5, -2.0]])
    outputs = {"z_balanced": z, "logits": z}
    y = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    state = {"P_sum": jnp.zeros(3), "P_count": jnp.zeros(3), "seen": jnp.float32(64), "recalled": jnp.zeros(3),
             "counts": jnp.array([40.0, 10.0, 2.0]), "num_train": jnp.float32(64), "steps": jnp.float32(2),
             "steps_per_epoch": jnp.float32(2), "epoch_recalls": jnp.zeros((4, 3))}
    stats = type("S", (), {"class_counts": np.array([40.0, 10.0, 2.0]), "num_train": 64})()
    return cfg, outputs, {"labels": y, "hidden": jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])}, state, stats


def test_a_recalled_label_switches_to_the_positive_branch():
    """p = sigma(3) > 0.7 on the unlabeled entry (0, 2): L_rlc trains it as a positive; L_mfm does not."""
    cfg, outputs, batch, state, stats = _one_branch_setup(mfm=False, lambda_m=0.0, lambda_c=1.0)
    z, y = np.asarray(outputs["z_balanced"], np.float64), np.asarray(batch["labels"])
    corrected = y.copy()
    corrected[0, 2] = 1.0  # sigma(3) = 0.95 > 0.7; sigma(2) is on a labelled positive, sigma(1.5) too
    bce = lambda t: float(np.mean(np.sum(-(t * np.log(_sigmoid(z)) + (1 - t) * np.log(1 - _sigmoid(z))), -1)))  # noqa: E731
    loss, aux = comic.comic_loss(outputs, batch, stats, cfg, state)
    np.testing.assert_allclose(float(loss), bce(corrected), rtol=1e-5)
    assert float(aux["recalled"]) == 1.0
    np.testing.assert_allclose(float(aux["l_mfm"]), bce(y), rtol=1e-5)
    # before rlc_start_epoch epochs nothing is recalled
    loss0, aux0 = comic.comic_loss(outputs, batch, stats, cfg, {**state, "steps": jnp.float32(1)})
    np.testing.assert_allclose(float(loss0), bce(y), rtol=1e-5)
    # tau above every probability: nothing recalled either
    cfg.tau = 0.99
    np.testing.assert_allclose(float(comic.comic_loss(outputs, batch, stats, cfg, state)[0]), bce(y), rtol=1e-5)


def test_rlc_class_weights_count_the_recalls():
    """With MFM the RLC term's head-tail factor uses n'_c = n_c + N * recalled_c / seen."""
    cfg, outputs, batch, state, stats = _one_branch_setup(lambda_m=0.0, lambda_c=1.0)
    state = {**state, "recalled": jnp.array([0.0, 0.0, 32.0])}  # n'_2 = 2 + 64 * 32 / 64 = 34
    z = np.asarray(outputs["z_balanced"], np.float64)
    t = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    g = comic.head_tail_factor(np.array([40.0, 10.0, 34.0]))
    want = np.mean(np.sum(_mfm_numpy(z, t, 0.0 * g, 3.0 + g, 0.05), -1))
    np.testing.assert_allclose(float(comic.comic_loss(outputs, batch, stats, cfg, state)[0]), want, rtol=1e-5)


@pytest.mark.parametrize("mode", ["positives", "running"])
def test_p_c_is_a_running_mean_and_the_recall_counts_per_epoch(mode):
    cfg, outputs, batch, state, stats = _one_branch_setup(rlc_mean=mode)
    p1 = _sigmoid(np.asarray(outputs["z_balanced"], np.float64))
    s1 = comic.comic_update_state(state, outputs, batch, cfg)
    z2 = jnp.array([[-1.0, 2.5, 0.0], [1.0, 1.0, 1.0]])
    y2 = jnp.array([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    s2 = comic.comic_update_state(s1, {"z_balanced": z2, "logits": z2}, {"labels": y2}, cfg)
    p = np.concatenate([p1, _sigmoid(np.asarray(z2, np.float64))])
    y = np.concatenate([np.asarray(batch["labels"]), np.asarray(y2)])
    w = y if mode == "positives" else np.ones_like(y)
    want = (p * w).sum(0) / np.maximum(w.sum(0), 1)
    np.testing.assert_allclose(np.asarray(s2["P_sum"] / jnp.maximum(s2["P_count"], 1)), want, rtol=1e-5)
    # step 2 of 2 per epoch: epoch index 1; the first batch recalled (0, 2), a hidden positive: a true recall
    np.testing.assert_array_equal(np.asarray(s1["epoch_recalls"])[1], [1, 1, 1])
    assert float(s2["steps"]) == 4 and float(s2["seen"]) == 68


def _config(**over):
    c = small_synthetic_config(**{"data.missing_ratio": 0.4, "train.num_epochs": 2})
    c.method = METHODS.get("comic").defaults()
    c.method.branch_dim = 16
    c.method.rlc_start_epoch = 0.5
    return set_fields(c, over)


def test_the_three_streams_deliver_what_their_samplers_alone_would():
    from ltjax.data.sampling import ClassAwareSampler, ReverseSampler, UniformSampler

    exp = Experiment(_config())
    plan = exp.phases[0]
    assert plan.streams == ("main", "tail", "balanced")
    assert [type(plan.samplers[s]) for s in plan.streams] == [UniformSampler, ReverseSampler, ClassAwareSampler]
    train = exp.dataset.split("train")
    bs = int(exp.config.data.batch_size)
    for s in plan.streams:
        it = exp.feed.train_stream(plan.samplers[s], plan.length, plan.tags[s])
        for k in range(3):
            batch = next(it)
            idx = plan.samplers[s].indices(np.arange(k * bs, (k + 1) * bs))
            np.testing.assert_array_equal(batch["labels"], train.labels[idx])
            np.testing.assert_array_equal(batch["hidden"], train.hidden_mask[idx])
        it.close() if hasattr(it, "close") else None
    # the reverse stream's class frequencies follow n_max / n_c (over the observed labels)
    rev = plan.samplers["tail"]
    counts = train.labels.sum(0)
    np.testing.assert_allclose(rev.class_probs, (counts.max() / counts) / (counts.max() / counts).sum(), rtol=1e-6)


def test_sharded_comic_step_equals_single_device_step():
    def run(mesh_data):
        exp = Experiment(_config(**{"mesh.data": mesh_data, "data.batch_size": 64, "method.rlc_start_epoch": 0.0}))
        plan = exp.phases[0]
        its = {s: exp.feed.train_stream(plan.samplers[s], plan.length, plan.tags[s]) for s in plan.streams}
        state, step = exp.initial_state(), exp.phase_step(0)
        for _ in range(3):
            state, m = step(state, {s: exp.global_batch(next(it)) for s, it in its.items()}, exp.train_rng)
        return jax.device_get(state), float(m["loss"])

    s1, l1 = run(1)
    s8, l8 = run(8)
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    chex.assert_trees_all_close(s1.params, s8.params, atol=1e-5, rtol=1e-4)
    chex.assert_trees_all_close(s1.method_state, s8.method_state, atol=1e-4, rtol=1e-4)
    assert {"branch_head", "branch_tail", "branch_balanced", "attention", "classifier_head"} <= set(s8.params)
    assert float(s8.method_state["steps"]) == 3 and np.linalg.norm(s8.method_state["e_head"]) > 0


@pytest.mark.slow  # two 32-step COMIC runs through the loop: ~18 s here
def test_an_interrupted_run_resumes_bit_identically_with_its_method_state(tmp_path, monkeypatch):
    from ltjax.data import partial
    from ltjax.training import loop

    config = _config(**{"train.checkpoint_every": 4, "train.log_every": 4})
    full_dir, part_dir = str(tmp_path / "full"), str(tmp_path / "part")
    full = loop.train_and_evaluate(config, full_dir)
    real, calls, armed = loop.Experiment.global_batch, [], [True]

    def dies(self, host_batch):  # 3 streams per step: dies inside step 11 (checkpoint at 8)
        calls.append(1)
        if armed[0] and len(calls) == 31:
            armed[0] = False
            raise KeyboardInterrupt("killed")
        return real(self, host_batch)

    monkeypatch.setattr(loop.Experiment, "global_batch", dies)
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, part_dir)
    calls.clear()
    resumed = loop.train_and_evaluate(config, part_dir)
    assert len(calls) == 3 * (32 - 8)
    assert json.dumps(full, sort_keys=True) == json.dumps(resumed, sort_keys=True)
    a = Experiment(config).restore(full_dir)[0]
    b = Experiment(config).restore(part_dir)[0]
    chex.assert_trees_all_equal(jax.device_get(a.params), jax.device_get(b.params))
    chex.assert_trees_all_equal(jax.device_get(a.method_state), jax.device_get(b.method_state))
    # the RLC analysis: one row per epoch; each epoch of the uniform main stream sees every hidden positive once
    hidden = len(partial.read_hidden(full_dir))
    rows = full["method_summary"]["rlc_per_epoch"]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["hidden_seen"] == hidden for r in rows)
    assert all(0 <= r["true"] <= r["recalled"] and r["true"] + r["false"] == r["recalled"] for r in rows)
    assert full["partial_labels"]["hidden"] == hidden


def test_switches_one_branch_without_htb_and_every_test_branch_scores():
    exp = Experiment(_config(**{"method.htb": False}))
    assert exp.phases[0].streams == ("main",)
    assert not any(k.startswith(("branch_head", "attention")) for k in exp.abstract_variables["params"])
    c = _config()
    exp = Experiment(c)
    state = exp.initial_state()
    rng = np.random.default_rng(0)  # a state after some training: non-zero directions, kappa_h off 0.5
    mstate = dict(jax.device_get(state.method_state))
    mstate.update(e_head=rng.normal(size=16).astype(np.float32), e_tail=rng.normal(size=16).astype(np.float32),
                  kappa_head=np.float32(0.3))
    x = np.asarray(exp.dataset.split("test").get_batch(np.arange(16))["inputs"])
    outputs = exp.model.apply({"params": jax.device_get(state.params)}, x, train=False)
    maps = {}
    for branch in comic.TEST_BRANCHES:
        c.method.test_branch = branch
        maps[branch] = np.asarray(comic.comic_scores(outputs, mstate, c.method))
        assert maps[branch].shape == (16, exp.meta.num_classes)
    z = {b: np.asarray(v, np.float64) for b, v in comic.branch_logits(outputs, mstate, c.method).items()}
    np.testing.assert_allclose(maps["head"], _sigmoid(z["head"]), rtol=1e-5)
    np.testing.assert_allclose(maps["tail"], _sigmoid(z["tail"]), rtol=1e-5)
    np.testing.assert_allclose(maps["balanced"], _sigmoid(z["balanced"]), rtol=1e-5)
    np.testing.assert_allclose(maps["htb"], 0.3 * _sigmoid(z["head"] + z["balanced"])
                               + 0.7 * _sigmoid(z["tail"] + z["balanced"]), rtol=1e-5)
    np.testing.assert_allclose(maps["mean"], (maps["head"] + maps["tail"] + maps["balanced"]) / 3, rtol=1e-5)
    assert not np.allclose(z["head"], np.asarray(outputs["z_head"]))  # the moving logits moved
    c.method.test_branch = "nope"
    with pytest.raises(ValueError, match="test_branch"):
        Experiment(c)


def test_comic_configs_rows_and_missing_data_stops_at_once(tmp_path):
    from ltjax.config import load_config
    from ltjax.training.optim import make_optimizer
    from helpers import REPO, run_module

    c = load_config(str(REPO / "configs" / "comic_voc.py"))
    assert c.data.missing_ratio == 0.4 and c.method.name == "comic" and c.optimizer.name == "adam"
    assert c.optimizer.param_groups.classifiers.lr_mult == 0.1 and c.train.num_epochs == 40
    assert load_config(str(REPO / "configs" / "comic_voc.py") + ":no_htb").method.htb is False
    assert load_config(str(REPO / "configs" / "comic_coco.py") + ":mfm_pn").method.mfm_factors == "pn"
    # the classifier group matches the COMIC classifiers and nothing else
    exp = Experiment(_config())
    params = exp.abstract_variables["params"]
    make_optimizer(c.optimizer, lambda s: 1e-3, None, params)
    names = [k for k in params if "classifier_" in k]
    assert sorted(names) == ["classifier_balanced", "classifier_head", "classifier_tail"]
    r = run_module("ltjax.train", "--config", "configs/comic_voc.py", "--workdir", str(tmp_path / "run"),
                   f"--config.data.root={tmp_path / 'nowhere'}", timeout=120)
    assert r.returncode != 0 and "VOCdevkit" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_the_accumulated_directions_by_hand():
    cfg = comic._defaults()
    rng = np.random.default_rng(2)
    fh, ft = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    e0h, e0t = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    w = rng.normal(size=(3, 6)).astype(np.float32)

    def stream(f):
        z = comic.cosine_logits(f, w, 16.0, 1 / 32)
        return {"f_head": f, "f_tail": f, "f_balanced": f, "w_head": w, "w_tail": w, "w_balanced": w,
                "z_head": z, "z_tail": z, "z_balanced": z, "logits": z}

    outputs = {"main": stream(fh), "tail": stream(ft), "balanced": stream(fh)}
    y = np.zeros((4, 3), np.float32)
    batch = {s: {"labels": y} for s in outputs}
    state = {"P_sum": jnp.zeros(3), "P_count": jnp.zeros(3), "seen": jnp.float32(0), "recalled": jnp.zeros(3),
             "counts": jnp.array([5.0, 3.0, 1.0]), "num_train": jnp.float32(8), "steps": jnp.float32(0),
             "steps_per_epoch": jnp.float32(2), "epoch_recalls": jnp.zeros((2, 3)), "e_head": jnp.asarray(e0h),
             "e_tail": jnp.asarray(e0t), "kappa_head": jnp.float32(0.5)}
    new = comic.comic_update_state(state, outputs, batch, cfg)
    np.testing.assert_allclose(np.asarray(new["e_head"]), 0.9 * e0h + fh.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new["e_tail"]), 0.9 * e0t + ft.mean(0), rtol=1e-5)
    assert 0.0 < float(new["kappa_head"]) < 1.0  # the first step's kappa_h (no running mean yet)


@pytest.mark.slow  # three small COMIC processes: ~45 s here
def test_kill_9_mid_run_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    """python -m ltjax.train on COMIC killed with SIGKILL mid-run (checkpoint every 2 steps, saved in the
    background), then started again: records, evaluation, parameters and method state equal an uninterrupted
    run's."""
    import os

    from helpers import assert_same_final_states, kill_and_resume

    args = ["--config", "configs/synthetic_lt.py:comic", "--config.data.num_train=512", "--config.data.num_test=128",
            "--config.data.missing_ratio=0.4", "--config.train.num_epochs=4", "--config.train.checkpoint_every=2",
            "--config.train.log_every=2", "--config.method.branch_dim=16", "--config.method.rlc_start_epoch=1",
            "--config.mesh.data=1", "--config.train.progress_bar=off"]
    ref, killed, resumed_at = kill_and_resume(args, tmp_path, 12)  # 4 epochs of 8 steps: after the first epoch
    assert 12 <= resumed_at < 32, resumed_at

    def records(workdir):
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [{k: v for k, v in row.items() if k != "examples_per_s"} for row in rows if row["kind"] == "train"]

    assert records(killed) == records(ref)
    a, b = (json.loads(open(os.path.join(d, "eval.json")).read()) for d in (ref, killed))
    assert a["per_class"] == b["per_class"] and a["method_summary"] == b["method_summary"]
    assert_same_final_states(ref, killed)


# ---- every built-in dataset --------------------------------------------------------------------------


@pytest.mark.slow  # one tiny COMIC run per dataset and input kind (13 cases): ~4-8 min here
@pytest.mark.parametrize("name,kind", every_dataset_case())
def test_comic_runs_on_every_registered_dataset(name, kind, tmp_path, request):
    """COMIC at 30 % missing through the loop (three streams, RLC from the start, evaluation) on a small copy
    of every registered dataset: finite losses and scores, the hidden pairs stored, the RLC analysis kept."""
    from ltjax.data import partial
    from ltjax.training import loop

    c, num_classes = tiny_run_config(name, kind, tmp_path, request, "comic")
    c.data.missing_ratio = 0.3
    c.method.branch_dim = 16
    c.method.rlc_start_epoch = 0.0
    workdir = tmp_path / "run"
    result = loop.train_and_evaluate(c, str(workdir))
    exp = Experiment(c)
    assert exp.meta.name == name and exp.meta.input_kind == kind
    assert num_classes is None or exp.meta.num_classes == num_classes
    assert exp.phases[0].streams == ("main", "tail", "balanced")
    assert np.isfinite(result["mAP"]) and 0 < result["mAP"] <= 1
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["kind"] == "train"][-1] == 3
    assert all(np.isfinite(r["loss"]) for r in rows if r["kind"] == "train")
    hidden = partial.read_hidden(str(workdir))
    assert len(hidden) == result["partial_labels"]["hidden"] > 0
    (epoch,) = result["method_summary"]["rlc_per_epoch"]
    assert epoch["true"] + epoch["false"] == epoch["recalled"] and epoch["true"] <= epoch["hidden_seen"]
