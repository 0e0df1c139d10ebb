"""Methods: every registered baseline trains through the core; method fields reach the loss."""
import jax
import numpy as np
import pytest

from ltjax import losses
from ltjax.config import apply_overrides, load_config
from ltjax.data.pipeline import to_global
from ltjax.methods import METHODS
from ltjax.training.loop import Experiment

from helpers import REPO, small_synthetic_config


def _one_stream(name):
    m = METHODS.get(name)
    return len(m.phase_list(m.defaults())[0].streams) == 1


@pytest.mark.parametrize("name", [n for n in METHODS.names() if "features" in METHODS.get(n).input_kinds
                                  and _one_stream(n)])
def test_every_method_trains_a_few_steps(name):
    """Every method that takes feature vectors and starts with one stream (image-only and multi-stream methods,
    e.g. COMIC, train in their own test files)."""
    c = small_synthetic_config(**{"mesh.data": 1})
    c.method = METHODS.get(name).defaults()
    for path, value in METHODS.get(name).config_updates.items():  # e.g. LDAM's cosine head
        section, field = path.split(".")
        c[section][field] = value
    exp = Experiment(c)
    state = exp.initial_state()
    it = exp.train_iterator()
    values = []
    for _ in range(12):
        state, m = exp.train_step(state, to_global(next(it), exp.batch_sharding), exp.train_rng)
        values.append(float(m["loss"]))
    assert np.isfinite(values).all(), values
    assert np.mean(values[-3:]) < np.mean(values[:3]), f"{name} did not reduce its loss: {values}"


def test_method_loss_equals_the_registered_loss_with_the_method_fields():
    c = small_synthetic_config(**{"mesh.data": 1})
    c.method = METHODS.get("db_focal").defaults()
    c.method.mu = 0.25
    exp = Experiment(c)
    batch = next(exp.train_iterator())
    outputs = {"logits": jax.random.normal(jax.random.key(0), batch["labels"].shape)}
    got, _ = exp.method.loss(outputs, batch, exp.stats, c.method)
    want = losses.db_loss(outputs["logits"], batch["labels"], None, exp.stats, rebalance=True, alpha=0.1,
                          beta=10.0, mu=0.25, ntr=True, kappa=0.05, lam=5.0, focal=True, gamma=2.0, balance=2.0)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_method_configs_select_method_fields_and_sampler():
    rs = load_config(str(REPO / "configs" / "yeast.py:rs"))
    assert rs.method.name == "rs" and rs.data.sampler == "class_aware"
    db = load_config(str(REPO / "configs" / "synthetic_lt.py:r_bce_ntr"))
    assert db.method.ntr is True and db.method.focal is False and db.data.sampler == "class_aware"
    apply_overrides(db, [("method.kappa", "0.1")])
    assert db.method.kappa == 0.1
    with pytest.raises(ValueError, match="method.gamma_neg"):
        apply_overrides(db, [("method.gamma_neg", "2")])  # an ASL field does not exist on DB
