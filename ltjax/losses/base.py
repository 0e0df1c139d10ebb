"""Shared core of the loss package: training-set statistics, the loss registry and safe helpers.

Owns ``ClassStats`` (n_c and N), ``LossSpec`` / ``register_loss`` / ``LOSSES`` (name -> loss with its
hyper-parameter defaults), ``compute_loss`` / ``loss_defaults`` (the config-facing entry points, which
validate hyper-parameters), and the numerically safe element-wise pieces every loss is built from
(log-sigmoid BCE, focal factor, masked reductions, input checks).

Contract of every registered loss function::

    fn(logits [B, C], labels [B, C] in {0, 1}, mask [B, C] | None, stats: ClassStats | None,
       *, <hyper-parameters>) -> scalar float32

``mask`` marks known labels (non-zero = known, 0 = unknown); unknown entries contribute neither loss
nor gradient, and their labels are ignored (treated as 0 wherever labels enter a statistic such as
DB's rebalancing weights).  Hyper-parameters are plain Python scalars/strings/bools, so branches on
them are resolved at trace time.  Logits are cast to float32 inside every loss.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import types
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax.registry import Registry


# --------------------------------------------------------------------------------------------------
# Training-set statistics
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClassStats:
    """Training-set statistics some losses need: n_c per class ([C] float32) and N training examples.

    Validated on construction: counts must be a non-empty 1-D array of finite values in [0, N] and
    N a positive integer.
    """

    class_counts: np.ndarray  # [C] float32
    num_train: int

    def __post_init__(self):
        try:
            counts = np.asarray(self.class_counts, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TypeError(f"ClassStats.class_counts must be numbers (n_c per class), got {self.class_counts!r}") from e
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError(
                f"ClassStats.class_counts must be a non-empty 1-D array [C] of training counts, got shape {counts.shape}"
            )
        num_train = self.num_train
        integral = isinstance(num_train, numbers.Integral) or (
            isinstance(num_train, numbers.Real) and float(num_train).is_integer()
        )
        if isinstance(num_train, (bool, np.bool_)) or not integral:
            raise TypeError(f"ClassStats.num_train must be an integer (N training examples), got {num_train!r}")
        num_train = int(num_train)
        if num_train < 1:
            raise ValueError(f"ClassStats.num_train must be >= 1 (N training examples), got {num_train}")
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise ValueError("ClassStats.class_counts must be finite and non-negative (training examples per class)")
        if np.any(counts > num_train):
            worst = int(np.argmax(counts))
            raise ValueError(
                f"ClassStats.class_counts[{worst}] = {counts[worst]:g} exceeds num_train = {num_train}; "
                "n_c counts training examples containing class c, so it cannot exceed N"
            )
        counts.setflags(write=False)
        object.__setattr__(self, "class_counts", counts)
        object.__setattr__(self, "num_train", num_train)

    @classmethod
    def from_meta(cls, meta) -> "ClassStats":
        return cls(np.asarray(meta.class_counts, dtype=np.float32), int(meta.num_train))

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.shape[0])

    def effective_counts(self) -> np.ndarray:
        """n_c as float64 with a floor of 1: a class absent from training is treated as seen once, so
        the 1/n_c, N/n_c and n_c^{-1/4} of the losses stay finite."""
        return np.maximum(self.class_counts.astype(np.float64), 1.0)


def require_stats(stats: ClassStats | None, loss: str, num_classes: int | None) -> ClassStats:
    """``stats`` checked for a loss that needs n_c and N: present, a ClassStats, C classes (when
    ``num_classes`` is given)."""
    if stats is None:
        raise ValueError(
            f"loss {loss!r} needs the training-set class statistics (n_c, N) but got stats=None; "
            "pass stats=ClassStats.from_meta(dataset.meta)"
        )
    if not isinstance(stats, ClassStats):
        raise TypeError(f"loss {loss!r}: stats must be a ClassStats, got {type(stats).__name__}")
    if num_classes is not None and stats.num_classes != num_classes:
        raise ValueError(
            f"loss {loss!r}: stats has {stats.num_classes} class counts but the logits have {num_classes} classes; "
            "build ClassStats from the same dataset as the model"
        )
    return stats


# --------------------------------------------------------------------------------------------------
# Element-wise helpers
# --------------------------------------------------------------------------------------------------
def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over all entries, or over the known entries (mask != 0) when a mask is given.

    Unknown entries are selected away (not multiplied by 0), so an inf/NaN there cannot leak into
    the result or the gradient.  With no known entry the result is 0.
    """
    if mask is None:
        return jnp.mean(values)
    known = jnp.asarray(mask) != 0
    total = jnp.sum(jnp.where(known, values, jnp.zeros((), values.dtype)))
    return total / jnp.maximum(jnp.sum(known.astype(values.dtype)), 1.0)


def masked_sum(values: jax.Array, known: jax.Array | None) -> jax.Array:
    """Sum over all entries, or over the known entries (boolean ``known``)."""
    if known is None:
        return jnp.sum(values)
    return jnp.sum(jnp.where(known, values, jnp.zeros((), values.dtype)))


def sigmoid_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Element-wise binary cross-entropy with logits, stable for any |z| (log-sigmoid form):
    -[y log sigma(z) + (1 - y) log sigma(-z)]."""
    return -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


def target_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """z_t = z for positives, -z for negatives, so p_t = sigma(z_t) and BCE = -log sigma(z_t)."""
    return jnp.where(labels > 0.5, logits, -logits)


def focal_factor(z_t: jax.Array, gamma: float) -> jax.Array:
    """(1 - p_t)^gamma computed as exp(gamma * log sigma(-z_t)): finite value and gradient at any z_t
    (the gradient flows through p_t).  gamma == 0 gives exactly 1 with no gradient."""
    if gamma == 0:
        return jnp.ones_like(z_t)
    return jnp.exp(gamma * jax.nn.log_sigmoid(-z_t))


def prepare(loss: str, logits, labels, mask):
    """Checked float32 logits, float32 labels (0 where unknown) and a boolean known-mask (or None)."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"loss {loss!r}: logits must have shape [batch, classes], got shape {logits.shape}")
    if labels.shape != logits.shape:
        raise ValueError(
            f"loss {loss!r}: labels must have the logits' shape {logits.shape} (multi-hot [batch, classes]), "
            f"got {labels.shape}"
        )
    z = logits.astype(jnp.float32)
    y = labels.astype(jnp.float32)
    if mask is None:
        return z, y, None
    mask = jnp.asarray(mask)
    if mask.shape != logits.shape:
        raise ValueError(
            f"loss {loss!r}: mask must have the logits' shape {logits.shape} (1 = known label, 0 = unknown), "
            f"got {mask.shape}; pass mask=None when every label is known"
        )
    known = mask != 0
    return z, jnp.where(known, y, 0.0), known


# --------------------------------------------------------------------------------------------------
# Hyper-parameter checks used inside the losses (all static, at trace time)
# --------------------------------------------------------------------------------------------------
def check_choice(loss: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"loss {loss!r}: {name} must be one of {list(choices)}, got {value!r}")


def check_range(loss: str, name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"loss {loss!r}: {name} must be in {interval}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
_SCALAR_TYPES = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss: its name, the function and its hyper-parameters' defaults.

    Calling a spec fills in the defaults: ``spec(logits, labels, mask=None, stats=None, **overrides)``.
    """

    name: str
    fn: Callable[..., jax.Array]
    defaults: Mapping[str, Any]
    needs_stats: bool = False
    description: str = ""

    def resolve(self, hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated by ``hparams``, checked: unknown names and wrong types raise."""
        if hparams is None:
            hparams = {}
        elif hasattr(hparams, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
            hparams = hparams.to_dict()
        elif not isinstance(hparams, Mapping):
            raise TypeError(f"loss {self.name!r}: hyper-parameters must be a mapping, got {type(hparams).__name__}")
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            valid = ", ".join(f"{k} (default {v!r})" for k, v in self.defaults.items()) or "none"
            raise ValueError(
                f"loss {self.name!r} got unknown hyper-parameter(s) {unknown}; valid hyper-parameters: {valid}"
            )
        resolved = dict(self.defaults)
        for key, value in hparams.items():
            resolved[key] = _coerce(self.name, key, value, self.defaults[key])
        return resolved

    def __call__(self, logits, labels, mask=None, stats=None, **hparams) -> jax.Array:
        resolved = self.resolve(hparams)
        if self.needs_stats:
            require_stats(stats, self.name, None)  # the loss itself checks C against the logits
        return self.fn(logits, labels, mask, stats, **resolved)


def _coerce(loss: str, key: str, value: Any, default: Any) -> Any:
    """A hyper-parameter value as the plain Python type of its default."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"loss {loss!r}: hyper-parameter {key} must be a bool, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"loss {loss!r}: hyper-parameter {key} must be a plain Python number (it is fixed at trace time), "
                f"got {type(value).__name__} {value!r}"
            )
        if isinstance(default, int):
            if not float(value).is_integer():
                raise TypeError(f"loss {loss!r}: hyper-parameter {key} must be an integer, got {value!r}")
            return int(value)
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError(f"loss {loss!r}: hyper-parameter {key} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported default type for {loss}.{key}")  # guarded by register_loss


LOSSES: Registry[LossSpec] = Registry("loss")


def register_loss(name: str, *, needs_stats: bool = False, **defaults):
    """Decorator registering ``fn`` under ``name`` with its hyper-parameters' defaults.

    The function's keyword-only parameters must be exactly the hyper-parameters named here (checked at
    import time, so a renamed argument cannot silently drop a config value).  Returns ``fn`` unchanged;
    calling it directly needs every hyper-parameter, calling it through ``LOSSES.get(name)`` or
    ``compute_loss`` fills in the defaults.
    """
    for key, value in defaults.items():
        if not isinstance(value, _SCALAR_TYPES):
            raise TypeError(f"loss {name!r}: default of {key} must be a bool, int, float or str, got {value!r}")

    def decorator(fn):
        params = inspect.signature(fn).parameters
        positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        keyword = {p.name for p in params.values() if p.kind == p.KEYWORD_ONLY}
        if len(positional) != 4:
            raise TypeError(f"loss {name!r}: fn must take (logits, labels, mask, stats) positionally")
        if keyword != set(defaults):
            raise TypeError(
                f"loss {name!r}: keyword-only parameters {sorted(keyword)} differ from the registered "
                f"hyper-parameters {sorted(defaults)}"
            )
        doc = inspect.getdoc(fn) or ""
        frozen = types.MappingProxyType(dict(defaults))  # read-only: loss_defaults() hands out copies
        LOSSES.add(name, LossSpec(name, fn, frozen, needs_stats, doc.split("\n", 1)[0]))
        return fn

    return decorator


def loss_defaults(name: str) -> ml_collections.ConfigDict:
    """The hyper-parameters of loss ``name`` with their defaults, as a fresh ConfigDict."""
    return ml_collections.ConfigDict(dict(LOSSES.get(name).defaults))


def compute_loss(name: str, logits, labels, mask, stats: ClassStats | None, hparams: Mapping[str, Any] | None = None):
    """Loss ``name`` on a batch with ``hparams`` overriding its defaults (unknown names raise a
    ValueError listing the valid ones; a loss that needs ``stats`` raises when it is None)."""
    spec = LOSSES.get(name)
    return spec(logits, labels, mask, stats, **spec.resolve(hparams))
