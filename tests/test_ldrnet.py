"""LDRNet (ltjax/methods/ldrnet.py): class-label Gaussians from the passes against numpy (sharded and not),
reverse-sampling probabilities and virtual samples, which parameters each EM step trains, the query layout,
fallbacks for thin cells, and clear errors."""
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import set_fields
from test_on_device import _png_dataset

from ltjax.defaults import experiment_config
from ltjax.methods import ldrnet
from ltjax.training.loop import Experiment


def _config(**over):
    c = experiment_config("custom", "glyphnet", "ldrnet")
    c.model.widths, c.model.convs = (8, 8, 16), 1
    c.model.frozen_stages, c.model.norm_eval = -1, False
    c.method.language = "none"
    c.method.width, c.method.heads, c.method.mlp_dim, c.method.depth = 16, 2, 32, 1
    c.data.image_size = 32
    c.data.augment = False
    c.data.batch_size = 8
    c.data.eval_batch_size = 16  # 24 training images: a full batch and a padded one
    c.optimizer.name, c.optimizer.lr = "adam", 1e-3
    c.schedule.warmup_steps = 0
    c.train.progress_bar = "off"
    c.eval.top_k = (1, 3)
    for phase in ("stage1", "m_step", "e_step"):
        c.method.phases[phase].steps = 2
    return set_fields(c, over)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    return _png_dataset(str(tmp_path_factory.mktemp("png")))


def _records(workdir):
    """The train and pass records of a run's metrics.jsonl, without the timing fields."""
    import os

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in row.items() if k not in ("examples_per_s", "seconds")} for row in rows
            if row["kind"] in ("train", "pass")]


def _class_features(exp, state):
    split = exp.dataset.split("train")
    x = np.stack([exp.dataset.eval_transform(split[i])["inputs"] for i in range(len(split))])
    out = exp.model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
    return np.asarray(out["class_features"], np.float64), np.asarray(split.labels)


@pytest.mark.parametrize("covariance,devices", [
    ("full", 8), pytest.param("diagonal", 1, marks=pytest.mark.slow)])  # (the diagonal case: ~8 s, make test-slow)
def test_gaussians_from_the_passes_equal_numpy_sharded_and_not(pngs, covariance, devices):
    """Both passes (means, then centred second moments) against numpy's mean and unbiased covariance of the
    class features, label 0 and label 1 apart; full factors on 8 devices, diagonal ones on 1."""
    exp = Experiment(_config(**{"mesh.data": devices, "method.covariance": covariance}), dataset=pngs)
    state = exp.initial_state()
    state, info = exp.run_pass(1, state)
    assert info == {"cells_empty": 0, "cells_single": 0}
    state, _ = exp.run_pass(2, state)
    ms = jax.device_get(state.method_state)
    x, y = _class_features(exp, exp.initial_state())
    ridge_level = []
    for c in range(y.shape[1]):
        for j in (0, 1):
            rows = x[(y[:, c] > 0) == bool(j), c]
            assert len(rows) >= 2
            np.testing.assert_allclose(ms["mu"][c, j], rows.mean(0), rtol=1e-4, atol=1e-5)
            cov = np.cov(rows, rowvar=False, ddof=1)
            ridge_level.append(np.trace(cov) / cov.shape[0])
    level = 1e-3 * np.mean(ridge_level)  # method.ridge x the mean variance over the cells
    for c in range(y.shape[1]):
        for j in (0, 1):
            rows = x[(y[:, c] > 0) == bool(j), c]
            cov = np.cov(rows, rowvar=False, ddof=1)
            if covariance == "full":
                chol = ms["scale"][c, j].astype(np.float64)
                np.testing.assert_allclose(chol @ chol.T, cov + level * np.eye(len(cov)), rtol=2e-3, atol=2e-5)
                assert np.allclose(chol, np.tril(chol))
            else:
                np.testing.assert_allclose(ms["scale"][c, j] ** 2, np.diag(cov) + level, rtol=2e-3, atol=2e-5)


def test_reverse_probabilities_and_virtual_samples():
    counts, n = np.array([500, 100, 20, 4]), 600
    f = counts / n
    w = (1 / (f + 1e-9)) ** 0.9
    np.testing.assert_allclose(ldrnet.reverse_probabilities(counts, n, 0.9), w / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(ldrnet.reverse_probabilities(counts, n, 0.0), 0.25, rtol=1e-6)
    # Table 6's uniform sampling: virtual label rates equal the training images' own (p_c = F_c)
    np.testing.assert_allclose(ldrnet.reverse_probabilities(counts, n, 0.9, "uniform"), counts / n, rtol=1e-6)
    rng = np.random.default_rng(0)
    c, d = 4, 3
    mu = rng.normal(size=(c, 2, d)).astype(np.float32)
    a = rng.normal(size=(c, 2, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
    state = {"mu": jnp.asarray(mu), "scale": jnp.asarray(np.linalg.cholesky(cov), jnp.float32),
             "p": jnp.asarray(ldrnet.reverse_probabilities(counts, n, 0.9))}
    key = jax.random.key(3)
    x, y = ldrnet.sample_virtual(key, state, 20000)
    x2, y2 = ldrnet.sample_virtual(key, state, 20000)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x, y = np.asarray(x, np.float64), np.asarray(y)
    p = np.asarray(state["p"])
    assert np.all(np.abs(y.mean(0) - p) < 5 * np.sqrt(p * (1 - p) / 20000))  # eq. 13: label 1 with prob p_c
    for cc in range(c):
        for j in (0, 1):
            rows = x[y[:, cc] == j, cc]
            if len(rows) < 500:
                continue
            np.testing.assert_allclose(rows.mean(0), mu[cc, j], atol=6 * np.sqrt(np.diag(cov[cc, j]).max() / len(rows)))
            np.testing.assert_allclose(np.cov(rows, rowvar=False), cov[cc, j], rtol=0.15, atol=0.05)
    # diagonal factors: per-dimension standard deviations
    diag = {**state, "scale": jnp.asarray(np.sqrt(np.einsum("cjdd->cjd", cov)), jnp.float32)}
    xd, yd = ldrnet.sample_virtual(key, diag, 20000)
    rows = np.asarray(xd)[np.asarray(yd)[:, 3] == 1, 3]  # the rarest class: label 1 drawn most often
    np.testing.assert_allclose(rows.std(0), np.sqrt(np.diag(cov[3, 1])), rtol=0.05)


def test_thin_cells_fall_back_without_nans():
    count = np.array([[5, 0], [4, 1], [3, 2]], np.float64)
    d = 2
    rng = np.random.default_rng(1)
    m2 = np.zeros((3, 2, d, d))
    for c in range(3):
        for j in (0, 1):
            if count[c, j] >= 2:
                a = rng.normal(size=(d, d))
                m2[c, j] = (count[c, j] - 1) * (a @ a.T + np.eye(d))
    chol = ldrnet.stats_from_moments(count, m2, 1e-3)
    assert np.isfinite(chol).all()
    cov = chol @ np.swapaxes(chol, -1, -2)
    good = [(0, 0), (1, 0), (2, 0), (2, 1)]
    pooled = np.mean([m2[c, j] / (count[c, j] - 1) for c, j in good], axis=0)
    level = np.mean([np.trace(m2[c, j] / (count[c, j] - 1)) / d for c, j in good])
    np.testing.assert_allclose(cov[0, 1], pooled + 1e-3 * level * np.eye(d), rtol=1e-5)  # empty cell
    np.testing.assert_allclose(cov[1, 1], pooled + 1e-3 * level * np.eye(d), rtol=1e-5)  # one example

    import ml_collections

    class Ctx:
        gathered = {"count": count.astype(np.float32),
                    "sum": np.stack([count * 1.0, count * 2.0], axis=-1).astype(np.float32)}
        state = {"mu": np.zeros((3, 2, 2), np.float32), "p": np.zeros(3, np.float32)}
        labels = (np.arange(5)[:, None] < count[:, 1][None]).astype(np.float32)  # 0, 1, 2 positives of 5
        config = ml_collections.ConfigDict({"method": {"alpha": 1.5, "sampling": "reverse"}})

    out = ldrnet.finish_means(Ctx).state
    mu = out["mu"]
    np.testing.assert_allclose(mu[:, 0], [[1, 2]] * 3)
    np.testing.assert_allclose(mu[0, 1], [1, 2])  # the empty cell: the other classes' label-1 means
    # p_c comes from the config at every round (eq. 12), not from the state stage 1 left
    np.testing.assert_allclose(out["p"], ldrnet.reverse_probabilities([0, 1, 2], 5, 1.5), rtol=1e-6)


def test_m_step_trains_only_the_classifier_and_e_step_everything_else(pngs):
    exp = Experiment(_config(**{"mesh.data": 1}), dataset=pngs)
    state = exp.initial_state()
    for i in (1, 2):
        state, _ = exp.run_pass(i, state)

    def run(index, state):
        state = exp.enter(index, state)
        plan = exp.phases[index]
        it = exp.feed.train_stream(plan.samplers["main"], plan.length, plan.tags["main"])
        before = jax.device_get(state.params)
        state, m = exp.phase_step(index)(state, {"main": exp.feed.global_batch(next(it))}, exp.train_rng)
        return before, jax.device_get(state.params), state, m

    before, after, state, m = run(3, state)  # m_step_0
    assert np.isfinite(float(m["loss"])) and 0 < float(m["virtual_positive_rate"]) < 1
    assert not np.array_equal(before["classifier"]["kernel"], after["classifier"]["kernel"])
    chex.assert_trees_all_equal({k: v for k, v in before.items() if k != "classifier"},
                                {k: v for k, v in after.items() if k != "classifier"})
    before, after, state, _ = run(4, state)  # e_step_0
    chex.assert_trees_all_equal(before["classifier"], after["classifier"])
    assert not np.array_equal(before["label_queries"], after["label_queries"])
    assert not np.array_equal(before["input_proj"]["kernel"], after["input_proj"]["kernel"])


def test_query_layout_with_a_prompt_and_without_encoder_layers():
    """depth 0: X_class = LayerNorm(L + P_label + P_position[T:T+C]) exactly; the prompt occupies the first T
    positions with its own indicator P_word; logits = <w_c, X_class[c]> + b_c."""
    prompt = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)

    class Trunk(ldrnet.nn.Module):
        @ldrnet.nn.compact
        def __call__(self, x, *, train):
            return ldrnet.nn.Dense(4)(x)

    model = ldrnet.LDRNetModel(backbone=ldrnet.SpatialBackbone(trunk=Trunk()), kind="image", prompt=prompt, num_classes=3, width=8, depth=0, heads=2)
    x = np.random.default_rng(1).normal(size=(2, 2, 3, 5)).astype(np.float32)
    params = model.init(jax.random.key(0), x, train=False)["params"]
    assert params["p_position"].shape == (5 + 3, 8) and params["p_word"].shape == (8,)
    out = model.apply({"params": params}, x, train=False)
    q = np.asarray(params["label_queries"]) + np.asarray(params["p_label"]) + np.asarray(params["p_position"])[5:]
    ln = params["ln_final"]
    want = (q - q.mean(-1, keepdims=True)) / np.sqrt(q.var(-1, keepdims=True) + 1e-6) * ln["scale"] + ln["bias"]
    np.testing.assert_allclose(out["class_features"], np.broadcast_to(want, (2, 3, 8)), rtol=1e-5, atol=1e-5)
    w, b = np.asarray(params["classifier"]["kernel"]), np.asarray(params["classifier"]["bias"])
    np.testing.assert_allclose(out["logits"], (want * w).sum(-1)[None].repeat(2, 0) + b, rtol=1e-5, atol=1e-5)
    none = ldrnet.LDRNetModel(backbone=ldrnet.SpatialBackbone(trunk=Trunk()), kind="image", prompt=None, num_classes=3, width=8, depth=0, heads=2)
    p2 = none.init(jax.random.key(0), x, train=False)["params"]
    assert p2["p_position"].shape == (3, 8) and "p_word" not in p2 and "prompt_mlp_1" not in p2


def test_prompt_and_config_errors():
    import ml_collections

    assert ldrnet.prompt_text(["dog", "dining_table"], "The categories of the image are {}.") == \
        "The categories of the image are dog, dining table."
    with pytest.raises(ValueError, match="must contain"):
        ldrnet.prompt_text(["a"], "no slot")
    m = ldrnet._defaults()
    m.language = "clip"
    with pytest.raises(ValueError, match="clip_weights"):
        ldrnet.prompt_states(m, ["a"])
    for field, value, match in (("covariance", "low", "covariance must be one of"),
                                ("width", 15, "divisible"), ("gce_q", 1.5, "gce_q")):
        bad = ml_collections.ConfigDict(ldrnet._defaults().to_dict())
        bad[field] = value
        with pytest.raises(ValueError, match=match):
            ldrnet._check(bad)
    assert ldrnet.covariance_kind(ml_collections.ConfigDict({"covariance": "auto", "max_cov_gb": 1.0}), 20, 512) == "full"
    assert ldrnet.covariance_kind(ml_collections.ConfigDict({"covariance": "auto", "max_cov_gb": 1.0}), 183, 2048) \
        == "diagonal"


@pytest.mark.parametrize("model", ["text_pool", pytest.param("text_bilstm", marks=pytest.mark.slow)])  # bilstm ~9 s
def test_ldrnet_runs_on_token_sequences_of_a_text_dataset(tmp_path, model):
    """A text backbone's token states (padding masked as keys) are LDRNet's tokens: a report dataset runs."""
    from test_text import data_config, write_lines

    from helpers import train_steps

    c = experiment_config("text_lines", model, "ldrnet")
    c.data = data_config("text_lines", write_lines(tmp_path / "aapd"))
    c.data.batch_size, c.data.eval_batch_size = 2, 2
    c.model.embed_dim = 8
    if model == "text_bilstm":
        c.model.lstm_hidden = 4
    c.method.language = "none"
    c.method.width, c.method.heads, c.method.mlp_dim, c.method.depth = 8, 2, 16, 1
    c.train.progress_bar = "off"
    c.eval.top_k = (1,)
    c.mesh.data = 1
    exp = Experiment(c)
    assert exp.model.kind == "text"
    state, losses_ = train_steps(exp, 2)
    assert np.isfinite(losses_).all()
    from ltjax.models.text import EMBED

    ids = np.array([[3, 4, 0, 0, 0, 0]], np.int32)
    params = jax.device_get(state.params)
    out = exp.model.apply({"params": params}, ids, train=False)
    assert out["class_features"].shape == (1, exp.meta.num_classes, 8)
    # the padding positions are masked keys: what the pad id embeds cannot reach the class features
    moved = jax.tree.map(np.array, params)
    moved["backbone"]["trunk"][EMBED]["embedding"][0] += 5.0
    np.testing.assert_allclose(out["logits"], exp.model.apply({"params": moved}, ids, train=False)["logits"],
                               rtol=1e-5, atol=1e-6)
    moved["backbone"]["trunk"][EMBED]["embedding"][3] += 5.0  # a real token's embedding does
    assert not np.allclose(out["logits"], exp.model.apply({"params": moved}, ids, train=False)["logits"])


def test_minilm_token_states_pool_to_the_sentence_embedding():
    from ltjax.models import minilm

    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32), minilm._encoder_shapes())
    text = "The categories of the image are cat, dog."
    tokens = minilm.encode_tokens(text, params=params)
    assert tokens.ndim == 2 and tokens.shape[1] == 384 and tokens.shape[0] > 5
    np.testing.assert_allclose(tokens.mean(0), minilm.encode_sentences([text], normalize=False, params=params)[0],
                               rtol=1e-4, atol=1e-5)


def test_ldrnet_configs_and_missing_data_stops_at_once(tmp_path):
    from helpers import REPO, run_module

    from ltjax.config import load_config

    c = load_config(str(REPO / "configs" / "ldrnet_chestxray14.py"))
    assert (c.method.name, c.model.name, c.optimizer.name, c.optimizer.lr, c.optimizer.weight_decay,
            c.data.batch_size, c.data.image_size, c.data.crop_min_ratio, c.data.split) == \
        ("ldrnet", "densenet121", "adam", 1e-4, 1e-5, 32, 448, 448 / 512, "patient")
    assert c.train.select_on == "val:auc_macro"  # chosen on the patient split's validation part
    assert load_config(str(REPO / "configs" / "ldrnet_odir5k.py")).train.select_on == "val:odir_final"
    assert load_config(str(REPO / "configs" / "ldrnet_chestxray14.py") + ":stage1").method.rounds == 0
    assert load_config(str(REPO / "configs" / "ldrnet_odir5k.py") + ":uniform").method.sampling == "uniform"
    assert load_config(str(REPO / "configs" / "ldrnet_odir5k.py") + ":no_prompt").method.language == "none"
    # the text recipe (Adam 1e-3) runs LDRNet's E-step at the paper's 1e-4 (configs/text.py)
    t = load_config(str(REPO / "configs" / "iu_xray_reports.py") + ":ldrnet")
    assert (t.optimizer.lr, t.method.phases.e_step.optimizer.lr, t.method.phases.m_step.optimizer.lr) == (1e-3, 1e-4, None)
    with pytest.raises(ValueError, match="arg must be one of full, stage1"):
        load_config(str(REPO / "configs" / "ldrnet_chestxray14.py") + ":nope")
    r = run_module("ltjax.train", "--config", "configs/ldrnet_chestxray14.py", "--workdir", str(tmp_path / "run"),
                   f"--config.data.root={tmp_path / 'nowhere'}", timeout=120)
    assert r.returncode != 0 and "Data_Entry" in r.stdout + r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # two tiny LDRNet runs through the loop, one interrupted inside the EM round: ~40 s here
def test_an_em_round_interrupted_and_resumed_is_bit_identical(pngs, tmp_path, monkeypatch):
    """Interrupted inside the M-step of round 0 (after the passes; its virtual features come from the step's
    key) and resumed in a fresh Experiment: parameters, Gaussians, losses and evaluation equal an
    uninterrupted run's bit for bit."""
    import json

    from ltjax.training import loop

    config = _config(**{"mesh.data": 1, "method.dropout": 0.2, "train.checkpoint_every": 1, "train.log_every": 1})
    full_dir, part_dir = str(tmp_path / "full"), str(tmp_path / "part")
    full = loop.train_and_evaluate(config, full_dir, dataset=pngs)
    real, calls = loop.Experiment.global_batch, []

    def dies(self, host_batch):  # batches: stage1 1-2, (passes), m_step 5-6, e_step 7-8
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(self, host_batch)

    monkeypatch.setattr(loop.Experiment, "global_batch", dies)
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, part_dir, dataset=pngs)
    calls.clear()
    resumed = loop.train_and_evaluate(config, part_dir, dataset=pngs)
    assert len(calls) == 3  # the M-step's second batch and the E-step's two: it went on from the checkpoint
    assert json.dumps(full, sort_keys=True) == json.dumps(resumed, sort_keys=True)

    assert _records(full_dir) == _records(part_dir)
    a = Experiment(config, dataset=pngs).restore(full_dir)[0]
    b = Experiment(config, dataset=pngs).restore(part_dir)[0]
    chex.assert_trees_all_equal(jax.device_get(a.params), jax.device_get(b.params))
    chex.assert_trees_all_equal(jax.device_get(a.method_state), jax.device_get(b.method_state))


def test_backbone_lives_under_backbone_trunk_so_frozen_stages_and_loaders_find_it(pngs):
    """The trunk's parameters sit at backbone/trunk as in every ltjax model: model.frozen_stages freezes
    them (configs/tiles_voc_lt.py:ldrnet freezes glyphnet's first stage) and pretrained loaders find them."""
    exp = Experiment(_config(**{"mesh.data": 1, "model.frozen_stages": 1, "model.norm_eval": True}), dataset=pngs)
    state = exp.initial_state()
    before = jax.device_get(state.params)
    assert set(before["backbone"]["trunk"]) >= {"stem", "stage1_0", "stage2_0"}
    plan = exp.phases[0]
    it = exp.feed.train_stream(plan.samplers["main"], plan.length, plan.tags["main"])
    state, _ = exp.phase_step(0)(state, {"main": exp.feed.global_batch(next(it))}, exp.train_rng)
    after = jax.device_get(state.params)["backbone"]["trunk"]
    for frozen in ("stem", "stage1_0"):
        chex.assert_trees_all_equal(before["backbone"]["trunk"][frozen], after[frozen])
    assert not np.array_equal(before["backbone"]["trunk"]["stage2_0"]["conv"]["kernel"], after["stage2_0"]["conv"]["kernel"])


def test_stage1_only_row_builds(pngs):
    """method.rounds=0 (the stage-1-only row) keeps the m_step / e_step blocks of the defaults: valid, unused."""
    exp = Experiment(_config(**{"mesh.data": 1, "method.rounds": 0}), dataset=pngs)
    assert [p.name for p in exp.phases] == ["stage1"]


@pytest.mark.slow  # three tiny LDRNet runs: ~30 s here
def test_em_rows_branched_from_a_stage1_checkpoint_equal_a_run_from_scratch(pngs, tmp_path):
    """scripts/ablate_ldrnet.py trains stage 1 once per seed (method.rounds=0) and starts every EM row from a
    copy of its final checkpoint: that must give exactly the run trained from scratch."""
    from helpers import import_script

    from ltjax.training.loop import train_and_evaluate

    ablate = import_script("ablate_ldrnet")
    over = {"mesh.data": 1, "method.alpha": 1.5}
    full = train_and_evaluate(_config(**over), str(tmp_path / "full"), dataset=pngs)
    # stage 1 with the default alpha (0.9) and uniform sampling: the branch must still sample with alpha 1.5
    train_and_evaluate(_config(**{"mesh.data": 1, "method.rounds": 0, "method.sampling": "uniform"}),
                       str(tmp_path / "stage1"), dataset=pngs)
    assert ablate.stage1_end(str(tmp_path / "stage1")) == 2
    ablate.branch(str(tmp_path / "stage1"), 2, str(tmp_path / "branch"))
    branched = train_and_evaluate(_config(**over), str(tmp_path / "branch"), dataset=pngs)
    assert [c["ap"] for c in branched["per_class"]] == [c["ap"] for c in full["per_class"]]
    assert branched["mAP"] == full["mAP"] and branched["step"] == full["step"]
    def m_step_losses(d):
        rows = [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines() if line]
        return [r["loss"] for r in rows if r.get("phase") == "m_step_0"]

    assert m_step_losses("branch") == m_step_losses("full")
    assert json.loads((tmp_path / "branch" / "phases.json").read_text()) == \
        json.loads((tmp_path / "full" / "phases.json").read_text())


@pytest.mark.slow  # three LDRNet processes on a tiny corpus: ~60 s here
def test_kill_9_inside_the_em_round_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    """python -m ltjax.train killed with SIGKILL after the passes, inside the M-step / E-step (checkpoint every
    step, saved in the background), then started again: records, evaluation and parameters equal a run that
    was never killed."""
    import os

    from helpers import assert_same_final_states, kill_and_resume
    from test_text import write_lines

    words = ["codes", "capacity", "learning", "graphs", "quantum", "bandits", "sparse", "deep"]
    labels = ["cs.IT", "cs.LG", "math.IT", "stat.ML", "quant-ph"]
    rng = np.random.default_rng(0)

    def docs(n):
        return [(" ".join(rng.choice(words, 5)), " ".join(sorted(set(rng.choice(labels, 2))))) for _ in range(n)]

    root = write_lines(tmp_path / "corpus", {"train": docs(48), "val": docs(8), "test": docs(16)})
    args = ["--config", "configs/text.py:ldrnet", f"--config.data.root={root}", "--config.data.storage=files",
            "--config.data.min_freq=1", "--config.data.max_length=8", "--config.data.batch_size=4",
            "--config.data.eval_batch_size=8", "--config.data.groups.mode=quantile", "--config.eval.top_k=(1,)",
            "--config.model.embed_dim=16", "--config.method.language=none", "--config.method.width=16",
            "--config.method.heads=2", "--config.method.mlp_dim=32", "--config.method.depth=1",
            "--config.method.phases.stage1.steps=4", "--config.method.phases.m_step.steps=8",
            "--config.method.phases.e_step.steps=8", "--config.train.checkpoint_every=1",
            "--config.train.log_every=1", "--config.mesh.data=1"]
    # stage 1 is steps 1-4, the passes 5-6, the M-step 7-14, the E-step 15-22
    ref, killed, resumed_at = kill_and_resume(args, tmp_path, 8)
    assert 8 <= resumed_at < 22, resumed_at  # inside the EM round, after the passes

    assert _records(killed) == _records(ref)
    a, b = (json.loads(open(os.path.join(d, "eval.json")).read()) for d in (ref, killed))
    assert a["mAP"] == b["mAP"] and a["per_class"] == b["per_class"]
    assert_same_final_states(ref, killed)


@pytest.mark.slow  # two small LDRNet runs through the loop on the medical fixtures: ~40 s here
@pytest.mark.parametrize("name,metric", [("chestxray14", "auc_macro"), ("odir5k", "odir_final")])
def test_the_paper_configs_select_on_the_patient_validation_part(name, metric, tmp_path, monkeypatch):
    """configs/ldrnet_{chestxray14,odir5k}.py on their datasets' fixture trees (model and sizes shrunk, every
    other field as shipped): the patient split has a val part, the checkpoint is chosen on it by the config's
    metric among the candidates of every phase, and the test part is scored once, at the end."""
    from helpers import REPO
    from test_medical import make_nih, make_odir

    from ltjax.config import load_config
    from ltjax.training import loop

    c = load_config(str(REPO / "configs" / f"ldrnet_{name}.py"))
    c.unlock()
    root = make_nih(tmp_path / name) if name == "chestxray14" else make_odir(tmp_path / name, fmt="csv")
    small = _config(**{"mesh.data": 1})
    c.data.root, c.data.storage = str(root), "files"
    c.data.image_size, c.data.batch_size, c.data.eval_batch_size = 32, 4, 8
    c.model, c.method = small.model, small.method  # tiny glyphnet, 1-layer encoder, no prompt, 2 steps a phase
    c.method.phases.stage1.steps = 4
    c.train.progress_bar, c.mesh.data = "off", 1
    assert c.train.select_on == f"val:{metric}" and c.data.get("split", "patient") == "patient"  # (ODIR: always)
    scored = []
    predict = loop.Experiment.predict

    def spy(self, params, batch_stats, split_name, method_state=None):
        scored.append(split_name)
        return predict(self, params, batch_stats, split_name, method_state)

    monkeypatch.setattr(loop.Experiment, "predict", spy)
    result = loop.train_and_evaluate(c, str(tmp_path / "run"))
    assert scored[-1] == "test" and set(scored[:-1]) == {"val"}
    sel = result["selection"]
    assert (sel["split"], sel["metric"]) == ("val", metric)
    # candidates: stage 1's epoch ends and end, then the end of the M-step and of the E-step
    assert [s for s, _ in sel["history"]][-2:] == [4 + 2 + 2, 4 + 2 + 2 + 2]
    assert result["step"] == sel["best_step"]
