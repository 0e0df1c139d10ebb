"""CSSFE (ltjax/methods/cssfe.py): the flow mask, the refined CAMs and class features against numpy, the
one-way flow, frozen label embeddings, a sharded step through the training core, the EMA weights in
evaluation, an exact resume, and a few steps on every built-in image dataset."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from builtin_datasets import IMAGE_BUILDERS, registered_image_datasets
from helpers import set_fields, train_steps
from test_on_device import _png_dataset
from test_tiles import cache, mnist  # noqa: F401  (fixtures for the tiles_voc_lt case below)

from ltjax.defaults import experiment_config
from ltjax.methods import cssfe
from ltjax.training.loop import Experiment


def test_flow_mask_equals_a_hand_built_mask_including_empty_groups():
    group_of = np.array([0, 0, 1, 1, 2, 2, 2])  # head / medium / tail sizes 2 / 2 / 3
    want = np.array([
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ], np.float32)
    np.testing.assert_array_equal(cssfe.flow_mask(group_of), want)
    # no medium classes: head sees head only, tail sees everything
    np.testing.assert_array_equal(cssfe.flow_mask([2, 0, 2]), [[1, 1, 1], [0, 1, 0], [1, 1, 1]])


def _numpy_refine(cam, logits, mask, gate, mode):
    if mask is not None:
        logits = np.where(mask > 0, logits, -np.inf) if mode == "neg_inf" else logits * mask
    s = np.exp(logits - logits.max(-1, keepdims=True))
    s = s / s.sum(-1, keepdims=True)
    out = np.zeros_like(cam)
    n, h, w, c = cam.shape
    for b in range(n):
        for y in range(h):
            for x in range(w):
                out[b, y, x] = (cam[b, y, x] + s @ cam[b, y, x]) * gate[:, y, x]
    return out


@pytest.mark.parametrize("mode", ["neg_inf", "multiply"])
def test_refined_cams_and_class_features_match_numpy(mode):
    rng = np.random.default_rng(0)
    n, h, w, c, d = 2, 3, 5, 7, 4
    cam = rng.normal(size=(n, h, w, c)).astype(np.float32)
    fmap = rng.normal(size=(n, h, w, d)).astype(np.float32)
    logits = rng.normal(size=(c, c)).astype(np.float32)
    gate = 1 / (1 + np.exp(-rng.normal(size=(c, h, w)))).astype(np.float32)
    mask = cssfe.flow_mask([0, 0, 1, 1, 2, 2, 2])
    got = cssfe.refine_cams(cam, logits, mask, gate, mode)
    want = _numpy_refine(cam.astype(np.float64), logits.astype(np.float64), mask, gate, mode)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    f = cssfe.class_features(fmap, np.asarray(got))
    f_want = np.stack([[(fmap[b] * np.asarray(got)[b, :, :, k:k + 1]).mean(axis=(0, 1)) for k in range(c)]
                       for b in range(n)])
    np.testing.assert_allclose(f, f_want, rtol=1e-5, atol=1e-5)


def test_head_maps_do_not_depend_on_medium_or_tail_classes():
    rng = np.random.default_rng(1)
    cam = rng.normal(size=(1, 4, 4, 7)).astype(np.float32)
    logits = rng.normal(size=(7, 7)).astype(np.float32)
    gate = np.full((7, 4, 4), 0.7, np.float32)
    mask = cssfe.flow_mask([0, 0, 1, 1, 2, 2, 2])
    moved = cam.copy()
    moved[..., 5] += 10.0  # a tail class's map changes
    a = np.asarray(cssfe.refine_cams(cam, logits, mask, gate, "neg_inf"))
    b = np.asarray(cssfe.refine_cams(moved, logits, mask, gate, "neg_inf"))
    np.testing.assert_array_equal(a[..., :4], b[..., :4])  # head and medium maps unchanged
    assert not np.allclose(a[..., 4], b[..., 4])  # tail maps read the other tail maps
    # the released code's multiplicative mask leaks: masked entries get logit 0, not -inf
    m = np.asarray(cssfe.refine_cams(moved, logits, mask, gate, "multiply"))
    assert not np.allclose(m[..., :2], np.asarray(cssfe.refine_cams(cam, logits, mask, gate, "multiply"))[..., :2])


def _config(variant="net3", dataset="custom", **over):
    c = experiment_config(dataset, "glyphnet", "cssfe")
    c.model.widths, c.model.convs = (8, 8, 16), 1
    c.model.frozen_stages, c.model.norm_eval = -1, False
    c.method.variant = variant
    c.method.encoder = "random"
    c.method.random_dim = 12
    c.method.mlp_width, c.method.heads, c.method.head_dim, c.method.mlp_dim = 32, 2, 8, 32
    c.data.image_size = 32
    c.data.augment = False
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.optimizer.name, c.optimizer.lr = "sgd", 0.05  # (Adam would amplify float noise on near-zero gradients)
    c.schedule.warmup_steps = 0
    c.train.progress_bar = "off"
    c.eval.top_k = (1, 3)
    return set_fields(c, over)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    return _png_dataset(str(tmp_path_factory.mktemp("png")))



@pytest.mark.slow  # two CSSFE steps compiled for 1 and 8 devices: ~20 s here (make test-slow)
def test_sharded_cssfe_step_equals_one_device_and_embeddings_stay_constant(pngs):
    one = Experiment(_config(**{"mesh.data": 1}), dataset=pngs)
    eight = Experiment(_config(**{"mesh.data": 8}), dataset=pngs)
    emb = np.array(one.model.embeddings)
    assert emb.shape == (4, 12)
    flat = jax.tree_util.tree_leaves_with_path(one.abstract_variables["params"])
    assert not any(leaf.shape == emb.shape for _, leaf in flat)  # the embeddings are not parameters
    s1, l1 = train_steps(one, 2)
    s8, l8 = train_steps(eight, 2)
    np.testing.assert_allclose(l1, l8, rtol=2e-5)
    chex.assert_trees_all_close(s1.params, s8.params, atol=2e-5, rtol=2e-5)
    np.testing.assert_array_equal(np.array(one.model.embeddings), emb)  # unchanged by training
    assert np.isfinite(l1).all()


def test_logits_are_each_label_tokens_dot_its_embedding_and_the_map_follows_the_input(pngs):
    model = Experiment(_config(), dataset=pngs).model
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    v = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(1), x)
    out, inter = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True))(v, x)
    tokens = inter["intermediates"]["transformer"]["__call__"][0]
    e = inter["intermediates"]["embed_out"]["__call__"][0]
    np.testing.assert_allclose(out["logits"], np.sum(np.asarray(tokens)[:, 4:] * np.asarray(e)[None], -1),
                               rtol=1e-5, atol=1e-5)
    for size in (32, 48):  # the maps and the gate follow the input size
        xs = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
        vs = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(1), xs)
        o = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), vs, xs)
        assert o["cams"].shape == (2, size // 4, size // 4, 4)  # glyphnet (8, 8, 16): stride 4
        assert vs["params"]["gate"]["kernel"].shape[-1] == (size // 4) ** 2


@pytest.mark.parametrize("variant", ["net0", "net1", "net2"])
def test_ablation_variants_have_their_parts(pngs, variant):
    exp = Experiment(_config(variant, **{"mesh.data": 1}), dataset=pngs)
    names = set(exp.abstract_variables["params"])
    assert ("transformer" in names) == (variant != "net0") and ("gate" in names) == (variant == "net2")
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out = jax.eval_shape(lambda v, x: exp.model.apply(v, x, train=False), exp.abstract_variables, x)
    assert out["logits"].shape == (2, 4)


def test_embeddings_are_constants_not_parameters_and_features_are_refused(pngs):
    exp = Experiment(_config(), dataset=pngs)
    emb = np.asarray(exp.model.embeddings)
    params = jax.tree_util.tree_leaves(exp.abstract_variables["params"])
    assert emb.shape == (4, 12) and not any(p.shape == emb.shape for p in params)
    np.testing.assert_array_equal(cssfe.label_embeddings(exp.config.method, pngs.meta.class_names), emb)  # seeded
    from ltjax.methods import METHODS

    assert METHODS.get("cssfe").input_kinds == ("image",)
    c = experiment_config("synthetic_lt", "mlp", "cssfe")
    c.method.encoder = "random"
    with pytest.raises(ValueError, match="CSSFE needs images"):
        Experiment(c)


def test_bad_fields_are_rejected(pngs, tmp_path):
    with pytest.raises(ValueError, match="method.variant must be one of net0, net1, net2, net3"):
        Experiment(_config("net4"), dataset=pngs)
    with pytest.raises(ValueError, match="method.embeddings_file .* cannot be read"):
        Experiment(_config(**{"method.encoder": "file", "method.embeddings_file": str(tmp_path / "x.npy")}),
                   dataset=pngs)
    np.save(tmp_path / "e.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected \[4, E\]"):
        Experiment(_config(**{"method.encoder": "file", "method.embeddings_file": str(tmp_path / "e.npy")}),
                   dataset=pngs)
    with pytest.raises(ValueError, match="must contain"):
        Experiment(_config(**{"method.template": "a photo"}), dataset=pngs)


def test_recipe_configs_and_missing_voc_data_stops_at_once(tmp_path):
    from helpers import REPO, run_module

    from ltjax.config import load_config

    c = load_config(str(REPO / "configs" / "cssfe_voc.py"))
    assert (c.method.name, c.method.variant, c.model.name, c.data.image_size, c.data.batch_size) == \
        ("cssfe", "net3", "resnet50", 448, 16)
    assert (c.optimizer.name, c.optimizer.lr, c.schedule.name, c.train.num_epochs, c.train.ema_decay) == \
        ("adamw", 5e-5, "one_cycle", 80, 0.998) and c.eval.use_ema
    assert (c.data.auto_augment, c.data.randaugment_ops, c.data.randaugment_magnitude, c.data.cutout_factor,
            c.data.crop_min_ratio, c.data.flip_prob, c.data.photometric) == ("randaugment", 2, 9, 0.5, 1.0, 0.0, False)
    assert load_config(str(REPO / "configs" / "cssfe_coco.py") + ":net1").optimizer.lr == 1e-5
    with pytest.raises(ValueError, match="arg must be one of net0, net1, net2, net3"):
        load_config(str(REPO / "configs" / "cssfe_voc.py") + ":net9")
    r = run_module("ltjax.train", "--config", "configs/cssfe_voc.py", "--workdir", str(tmp_path / "run"),
                   f"--config.data.root={tmp_path / 'nowhere'}", timeout=120)
    assert r.returncode != 0 and "VOCdevkit" in r.stdout + r.stderr and "Traceback" not in r.stderr


# ---- EMA weights in evaluation ---------------------------------------------------------------------


def test_ema_weights_are_the_ones_evaluated(pngs, tmp_path, monkeypatch):
    """loop.evaluate_and_report (what the training loop runs at the end) scores the test split with the EMA
    parameters when eval.use_ema is set and with the raw ones when not; the scores it computes are compared
    with a forward pass of the model, with inputs from the dataset's own eval transform (not the feed)."""
    from ltjax import metrics
    from ltjax.training import loop
    from ltjax.training.step import TrainState

    exp = Experiment(_config(**{"mesh.data": 1, "train.ema_decay": 0.5}), dataset=pngs)
    # a train state as training leaves it, with EMA weights that differ from the raw ones.  Both are drawn
    # here from the model's parameter shapes: compiling the CSSFE init and train step would take most of
    # this test's time on a CPU (test_phases checks the EMA update itself).
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "scale" in name or "var" in name:
            return np.ones(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 100
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    v = exp.abstract_variables
    raw = jax.tree_util.tree_map_with_path(draw, v["params"])
    ema = jax.tree.map(lambda p: (p + 0.1 * rng.standard_normal(p.shape)).astype(p.dtype), raw)
    batch_stats = jax.tree_util.tree_map_with_path(draw, v["batch_stats"])
    state = TrainState(step=np.int32(0), params=raw, batch_stats=batch_stats, opt_state={}, method_state={}, ema=ema)
    leaves = zip(jax.tree.leaves(raw), jax.tree.leaves(ema))
    assert jax.tree.structure(raw) == jax.tree.structure(ema) and not all(np.allclose(a, b) for a, b in leaves)

    split = pngs.split("test")
    x = np.stack([pngs.eval_transform(split[i])["inputs"] for i in range(len(split))])
    forward = jax.jit(lambda p, x: jax.nn.sigmoid(exp.model.apply(
        {"params": p, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}, x, train=False)["logits"]))
    want = {"ema": np.asarray(forward(ema, x)), "raw": np.asarray(forward(raw, x))}
    assert want["ema"].shape == (len(split), 4)
    assert np.abs(want["ema"] - want["raw"]).max() > 1e-3  # the two weights score the split differently

    seen = []
    real = metrics.evaluate

    def recording(scores, *args, **kwargs):  # the scores each evaluation computed, in call order
        seen.append(np.asarray(scores))
        return real(scores, *args, **kwargs)

    monkeypatch.setattr(metrics, "evaluate", recording)
    for use_ema in (True, False):
        exp.config.eval.use_ema = use_ema
        seen.clear()
        workdir = tmp_path / f"use_ema_{use_ema}"
        result = loop.evaluate_and_report(exp, state, str(workdir), 0)
        chosen, other = ("ema", "raw") if use_ema else ("raw", "ema")
        assert result["weights"] == chosen and other in result
        assert len(seen) == 2  # the selected weights (top level of eval.json), then the other ones
        np.testing.assert_allclose(seen[0], want[chosen], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(seen[1], want[other], rtol=1e-5, atol=1e-6)
        assert not np.allclose(seen[0], want[other], rtol=1e-5, atol=1e-6)
        saved = json.loads((workdir / "eval.json").read_text())
        assert saved["weights"] == chosen and saved["mAP"] == result["mAP"]
        assert saved[other]["mAP"] == result[other]["mAP"]


# ---- resume ----------------------------------------------------------------------------------------


def _train_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k != "examples_per_s"} for r in recs if r["kind"] == "train"]


@pytest.mark.slow  # three CSSFE runs through the loop (one step compile, the others hit the cache): ~20-25 s here
def test_cssfe_resume_is_exact(pngs, tmp_path, monkeypatch):
    """A CSSFE run (dropout 0.3, host augmentation, EMA) interrupted before step 5 and resumed in a fresh
    Experiment from its checkpoint at step 4 ends with the same parameters, optimiser state, EMA, losses
    and evaluation, bit for bit, as a run that was not interrupted (the pattern of
    test_on_device.test_on_device_run_resumes_exactly)."""
    from ltjax.training import loop

    config = _config(**{"mesh.data": 1, "method.dropout": 0.3, "data.augment": True, "train.ema_decay": 0.5,
                        "train.num_epochs": 2, "train.steps_per_epoch": 3, "train.checkpoint_every": 2,
                        "train.log_every": 1})
    full_dir, part_dir = str(tmp_path / "full"), str(tmp_path / "part")
    full = loop.train_and_evaluate(config, full_dir, dataset=pngs)

    real, calls = loop.Experiment.global_batch, []

    def dies_at_step_5(self, host_batch):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real(self, host_batch)

    monkeypatch.setattr(loop.Experiment, "global_batch", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, part_dir, dataset=pngs)
    assert not os.path.exists(os.path.join(part_dir, "eval.json"))
    calls.clear()
    resumed = loop.train_and_evaluate(config, part_dir, dataset=pngs)  # a fresh Experiment, from step 4
    assert len(calls) == 2  # steps 5 and 6 only: the run went on from the checkpoint, it did not start over

    assert full["step"] == resumed["step"] == 6 and full["weights"] == "ema"
    assert json.dumps(full, sort_keys=True) == json.dumps(resumed, sort_keys=True)  # every metric, both weights
    recs = _train_records(full_dir)
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["loss"]) for r in recs)
    assert _train_records(part_dir) == recs

    exp = Experiment(config, dataset=pngs)
    a, step_a = exp.restore(full_dir)
    b, step_b = exp.restore(part_dir)
    assert step_a == step_b == 6
    for field in ("params", "opt_state", "ema", "batch_stats"):
        chex.assert_trees_all_equal(getattr(a, field), getattr(b, field))
    # dropout is on in the trained model: its outputs depend on the dropout key, so the key path mattered
    assert exp.model.dropout == 0.3
    x = jnp.asarray(np.stack([pngs.eval_transform(pngs.split("test")[i])["inputs"] for i in range(2)]))
    v = {"params": a.params, **({"batch_stats": a.batch_stats} if a.batch_stats else {})}
    train_logits = jax.jit(lambda v, x, k: exp.model.apply(v, x, train=True, rngs={"dropout": k},
                                                           mutable=["batch_stats"])[0]["logits"])
    assert not np.allclose(train_logits(v, x, jax.random.key(0)), train_logits(v, x, jax.random.key(1)))


# ---- every built-in image dataset ------------------------------------------------------------------


@pytest.mark.slow  # one CSSFE train step compiled per class count: ~15 s per dataset here, ~80 s for all six
@pytest.mark.parametrize("name", registered_image_datasets())
def test_cssfe_runs_on_every_builtin_image_dataset(name, tmp_path, request):
    """CSSFE (tiny glyphnet, random label embeddings) on a small copy of each registered image dataset made
    from the fixture trees of its own tests: two finite training steps, and the model has the dataset's
    classes and the flow mask of its head / medium / tail groups."""
    assert set(IMAGE_BUILDERS) <= set(registered_image_datasets())  # (the derivation finds them all)
    if name not in IMAGE_BUILDERS:
        pytest.fail(f"image dataset {name!r} has no fixture builder in tests/test_cssfe.py; add one")
    data, num_classes, groups_want = IMAGE_BUILDERS[name](tmp_path, request)
    c = _config(dataset=name, **{"mesh.data": 1})
    for field in ("image_size", "augment", "batch_size", "eval_batch_size"):
        data[field] = c.data[field]
    c.data = data
    exp = Experiment(c)
    meta = exp.meta
    assert meta.name == name
    assert meta.input_kind == "image" and meta.input_shape == (32, 32, 3) and meta.num_classes == num_classes

    g = meta.groups
    head, medium, tail = (np.asarray(g[k], np.int64) for k in ("head", "medium", "tail"))
    if groups_want is not None:
        assert [head.tolist(), medium.tolist(), tail.tolist()] == [sorted(groups_want[k]) for k in
                                                                   ("head", "medium", "tail")]
    want = np.ones((num_classes, num_classes), np.float32)  # a head class reads head classes only, ...
    want[np.ix_(head, np.concatenate([medium, tail]))] = 0
    want[np.ix_(medium, tail)] = 0  # ... a medium class head and medium ones, a tail class all
    assert (want == 0).any()  # the groups give the mask something to block
    np.testing.assert_array_equal(cssfe.flow_mask(g.assignment()), want)
    np.testing.assert_array_equal(np.asarray(exp.model.mask), want)

    assert np.asarray(exp.model.embeddings).shape == (num_classes, 12)
    params = exp.abstract_variables["params"]
    assert params["cam"]["kernel"].shape[-1] == num_classes and params["gate"]["kernel"].shape[-1] == 8 * 8
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out = jax.eval_shape(lambda v, x: exp.model.apply(v, x, train=False), exp.abstract_variables, x)
    assert out["logits"].shape == (2, num_classes) and out["cams"].shape == (2, 8, 8, num_classes)

    state, losses = train_steps(exp, 2)
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(state.params))
