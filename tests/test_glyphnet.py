"""glyphnet (ltjax/models/glyphnet.py) and its single-glyph pretraining (ltjax/models/glyph_pretrain.py):
shapes, frozen stages, the pretraining data's MNIST half, and the weights cache."""
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import assets
from ltjax.data import tiles
from ltjax.models import build_model, glyph_pretrain, glyphnet, load_pretrained, trainable_mask
from ltjax.models.classifier import resolve_model_config

TINY = {"widths": (8, 8, 16), "convs": 1}


def _cfg(**fields):
    c = resolve_model_config(None, glyphnet.defaults())
    for k, v in {**TINY, **fields}.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def mnist():
    return tiles.load_mnist()


@pytest.fixture()
def cache(tmp_path, monkeypatch, mnist):
    """A fresh LTJAX_CACHE_DIR holding only the MNIST asset."""
    src = assets.member_path(tiles.MNIST_ASSET)
    monkeypatch.setenv("LTJAX_CACHE_DIR", str(tmp_path / "cache"))
    dest = assets.member_path(tiles.MNIST_ASSET)
    dest.parent.mkdir(parents=True)
    shutil.copyfile(src, dest)
    return tmp_path / "cache"


def test_feature_map_keeps_the_resolution_small_glyphs_need():
    model = build_model(glyphnet.defaults(), 20, (80, 80, 3))
    x = jax.ShapeDtypeStruct((2, 80, 80, 3), jnp.float32)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
    fmap = jax.eval_shape(lambda v, x: model.backbone.trunk.apply(
        {"params": v["params"]["backbone"]["trunk"], "batch_stats": v["batch_stats"]["backbone"]["trunk"]}, x,
        train=False), v, x)
    assert fmap.shape == (2, 10, 10, 128)  # stride 8: a 20-px glyph covers 2.5 x 2.5 cells
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)
    assert out["logits"].shape == (2, 20) and out["features"].shape == (2, 256)
    with pytest.raises(ValueError, match="at least 8 px"):
        model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), train=False)


def test_max_pool_neck_sees_one_hot_pixel_that_average_pooling_dilutes():
    from ltjax.models.necks import global_pool

    x = np.zeros((1, 10, 10, 3), np.float32)
    x[0, 4, 7, 1] = 5.0
    np.testing.assert_allclose(global_pool(x, "max", jnp.float32), [[0, 5, 0]])
    np.testing.assert_allclose(global_pool(x, "avg", jnp.float32), [[0, 0.05, 0]], rtol=1e-6)
    np.testing.assert_allclose(global_pool(np.ones((2, 3)), "max", jnp.float32), np.ones((2, 3)))  # pooled input


def test_frozen_stages_are_masked_and_get_no_gradient():
    cfg = _cfg(frozen_stages=1)
    model = build_model(cfg, 5, (16, 16, 3))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    v = model.init(jax.random.key(0), x, train=False)
    mask = trainable_mask(cfg, v["params"])
    trunk = mask["backbone"]["trunk"]
    assert not any(jax.tree.leaves(trunk["stem"])) and not any(jax.tree.leaves(trunk["stage1_0"]))
    assert all(jax.tree.leaves(trunk["stage2_0"])) and all(jax.tree.leaves(mask["head"]))

    def loss(p):
        out, _ = model.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.key(2)})
        return jnp.sum(out["logits"] ** 2)

    g = jax.jit(jax.grad(loss))(v["params"])["backbone"]["trunk"]
    assert all(float(jnp.abs(a).max()) == 0 for a in jax.tree.leaves(g["stem"]) + jax.tree.leaves(g["stage1_0"]))
    assert float(jnp.abs(g["stage2_0"]["conv"]["kernel"]).max()) > 0
    with pytest.raises(ValueError, match=r"frozen_stages must be an int in \[-1, 2\]"):
        build_model(_cfg(frozen_stages=3), 5, (16, 16, 3)).init(jax.random.key(0), x, train=False)


def test_pretraining_data_never_includes_a_test_half_digit(mnist):
    fields = glyph_pretrain._fields(_cfg(pretrain={**glyph_pretrain.pretrain_defaults().to_dict(), "copies": 1}))
    images, kinds, rows = glyph_pretrain.single_glyph_set(fields, mnist)
    pools = tiles.mnist_pools(mnist[1])
    train_rows = np.concatenate(pools["train"])
    test_rows = np.concatenate(pools["test"])
    assert not np.isin(rows, test_rows).any()
    # every training-half digit image, once per colour; each labelled with its digit and colour
    np.testing.assert_array_equal(np.bincount(rows, minlength=len(mnist[1]))[train_rows], 2)
    np.testing.assert_array_equal(kinds % 10, mnist[1][rows])
    assert images.shape == (2 * len(train_rows), 40, 40, 3) and set(np.bincount(kinds)) == {len(train_rows) // 10}
    # the colour of a glyph is its kind's (the background is gray: R = B there)
    red_minus_blue = (images[..., 0].astype(np.int64) - images[..., 2]).sum(axis=(1, 2))
    assert (red_minus_blue[kinds < 10] > 0).all() and (red_minus_blue[kinds >= 10] < 0).all()


def _tiny_pretrain(**over):
    p = glyph_pretrain.pretrain_defaults().to_dict()
    p.update({"steps": 3, "copies": 1, "batch_size": 8, "warmup_steps": 1, **over})
    return _cfg(pretrain=p)


def test_pretrained_weights_are_cached_reused_and_invalidated(cache, monkeypatch):
    cfg = _tiny_pretrain(photometric=False)
    path, manifest = glyph_pretrain.ensure_pretrained(cfg)
    assert manifest["built_now"] and path.parent.parent == cache / "glyphnet"
    saved = json.loads((path.parent / "manifest.json").read_text())
    assert saved["pretrain"]["steps"] == 3 and saved["images"] == 5000 and "training half" in saved["mnist_rows"]

    def no_training(*a, **k):
        raise AssertionError("the cached weights should have been reused")

    monkeypatch.setattr(glyph_pretrain, "pretrain", no_training)
    again, m2 = glyph_pretrain.ensure_pretrained(cfg)
    assert again == path and not m2["built_now"]
    # a model built from the same config loads exactly those weights into its trunk
    model = build_model(cfg, 20, (16, 16, 3))
    v = jax.device_get(model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))
    loaded = load_pretrained("glyphnet", v, "glyphs", cfg)
    stored = glyph_pretrain._read(path)
    chex.assert_trees_all_equal(loaded["params"]["backbone"]["trunk"], stored["params"])
    chex.assert_trees_all_equal(loaded["batch_stats"]["backbone"]["trunk"], stored["batch_stats"])
    chex.assert_trees_all_equal(loaded["params"]["head"], v["params"]["head"])  # the head is left alone
    # the same file given by path
    chex.assert_trees_all_equal(load_pretrained("glyphnet", v, str(path), cfg)["params"], loaded["params"])
    # any change of an input gives a new cache entry
    keys = {glyph_pretrain.cache_key(cfg)}
    for changed in (_tiny_pretrain(photometric=False, steps=4), _tiny_pretrain(photometric=False, seed=1),
                    _tiny_pretrain(photometric=False, glyph=16), _tiny_pretrain(),
                    _cfg(widths=(8, 8, 32), pretrain=cfg.pretrain.to_dict())):
        keys.add(glyph_pretrain.cache_key(changed))
    assert len(keys) == 6
    monkeypatch.setattr(glyph_pretrain, "VERSION", glyph_pretrain.VERSION + 1)
    assert glyph_pretrain.cache_key(cfg) not in keys
    with pytest.raises(AssertionError, match="reused"):  # a new key trains again
        glyph_pretrain.ensure_pretrained(cfg)


@pytest.mark.slow  # ~8 s (the suite's time); the pretraining runs in the default suite in test_pretrained_weights_are_cached_reused_and_invalidated
def test_pretraining_is_deterministic(cache):
    cfg = _tiny_pretrain()
    a, info = glyph_pretrain.pretrain(cfg)
    b, _ = glyph_pretrain.pretrain(cfg)
    chex.assert_trees_all_equal(a, b)
    assert np.isfinite(info["final_loss"]) and 0 <= info["final_accuracy"] <= 1


def test_bad_weights_files_get_clear_errors(tmp_path):
    cfg = _cfg()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        glyph_pretrain.trunk_weights(cfg, str(tmp_path / "missing.msgpack"))
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"not msgpack at all")
    with pytest.raises(ValueError, match="not a glyphnet weights file"):
        glyph_pretrain.trunk_weights(cfg, str(bad))
    with pytest.raises(ValueError, match="model.pretrain.steps must be a positive int"):
        glyph_pretrain.cache_key(_tiny_pretrain(steps=0))
