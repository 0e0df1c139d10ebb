"""CSSFE (ltjax/methods/cssfe.py): the flow mask, the refined CAMs and class features against numpy, the
one-way flow, frozen label embeddings, and a sharded step through the training core."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import set_fields, train_steps
from test_on_device import _png_dataset

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


def _config(variant="net3", **over):
    c = experiment_config("custom", "glyphnet", "cssfe")
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
