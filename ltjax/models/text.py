"""Text models on token ids [B, T] (int; 0 = padding, from :mod:`ltjax.data.text`): 'text_pool' and
'text_bilstm'.

Both are ``Classifier(Backbone(trunk), head)`` like every registered model, so the methods that replace
the head (HMT-Net's per-group heads) work on them unchanged.  The padding mask is ``ids != 0``; padding
is at the end of a document (the text transform pads on the right).

* ``text_pool`` -- ``Embed(vocab_size, embed_dim)`` -> masked mean over the non-pad tokens (a document
  that is all padding gives the zero vector, never NaN; extra padding does not change the result) ->
  the hidden layers of the 'mlp' model (``Dense -> norm -> activation -> dropout``) -> head.  A fast
  bag-of-embeddings baseline.
* ``text_bilstm`` -- the HTTN extractor (REFERENCE section 4): ``Embed(vocab_size, embed_dim=300)`` ->
  BiLSTM (``lstm_hidden`` = 150 per direction; each direction sees only the document's real tokens:
  ``seq_lengths`` = number of non-pad tokens, the backward pass starts at the last real token) ->
  attention pooling: a score per position from ``Dense(2 * lstm_hidden -> 1)``, softmax over the non-pad
  positions, features = the weighted sum of the BiLSTM states (300-d; zero for an all-pad document) ->
  optional hidden layers (default none) -> head.  HTTN's own projection (Linear 300 -> 128, L2 norm,
  learnable scale) belongs to that method's head, not to this extractor.

Parameters (float32; the compute runs in the model dtype): ``backbone/trunk/embed/embedding``
[vocab_size, embed_dim] (Flax's default init, N(0, 1 / embed_dim); torch's ``nn.Embedding`` uses
N(0, 1)), then ``backbone/trunk/mlp/dense_i`` ('text_pool'), or ('text_bilstm')
``backbone/trunk/OptimizedLSTMCell_0/...`` (the forward LSTM), ``.../OptimizedLSTMCell_1/...`` (the
backward one; Flax's automatic names, kept so that existing checkpoints load: each holds the input
kernels ``ii/if/ig/io`` and the recurrent kernels and biases ``hi/hf/hg/ho``), ``.../attention`` and
``.../mlp`` (the LSTM keeps Flax's initialisers -- kernels lecun-normal, recurrent kernels orthogonal,
biases 0 -- not torch's U(-1/sqrt(h), 1/sqrt(h))).  On CPU a training step is compute-bound (2 x 150
units over 128 tokens at batch 64 and 300-d embeddings: ~26 GFLOP); hoisting the input projection out
of the scan and running both directions in one scan gave the same outputs and no speed-up (2026-12-01),
so the layer stays Flax's ``nn.RNN`` / ``nn.Bidirectional``.  ``model.freeze_embedding=True``
keeps the embedding table fixed (e.g. once pre-trained vectors are loaded into it); everything else
trains.  ``model.pretrained_embeddings = "glove50"`` (with ``embed_dim = 50``) loads GloVe 6B 50-d vectors
into the rows of the dataset vocabulary's words when the train state is first made (:mod:`ltjax.models.glove`:
alignment, coverage in the run log); ``""`` (default) keeps the random table.
"""
from __future__ import annotations

import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltjax.models import glove  # model.pretrained_embeddings (registers the GloVe assets)
from ltjax.models.classifier import (
    Backbone,
    Classifier,
    check_input_shape,
    check_num_classes,
    resolve_compute_dtype,
    resolve_model_config,
)
from ltjax.models.heads import make_head
from ltjax.models.mlp import MLP, _check_options
from ltjax.errors import TextModelError  # noqa: F401 (re-exported)

EMBED = "embed"


def _check_ids(ids, name: str):
    if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TextModelError(
            f"the {name!r} model expects token ids [B, T] (integers, 0 = padding), got shape {ids.shape} "
            f"dtype {ids.dtype}; use it with a text dataset (e.g. data.name='text_lines')"
        )
    return ids.astype(jnp.int32)


def masked_mean(x, mask):
    """Mean of ``x`` [B, T, D] over the positions where ``mask`` [B, T] is True; 0 where none is (float32)."""
    m = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(x.astype(jnp.float32) * m, axis=1)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1.0)


class TextPool(nn.Module):
    """Embedding -> masked mean pooling -> hidden layers: ids [B, T] -> [B, D] features."""

    vocab_size: int
    embed_dim: int = 128
    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.0
    activation: str = "relu"
    norm: str = "none"
    dtype: Any = jnp.float32
    tokens: bool = False  # True: return (token embeddings [B, T, E], mask [B, T]) for token-level methods

    @nn.compact
    def __call__(self, ids, *, train: bool):
        ids = _check_ids(ids, "text_pool")
        emb = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name=EMBED)(ids)
        if self.tokens:
            return emb, ids != 0
        pooled = masked_mean(emb, ids != 0).astype(self.dtype)
        return MLP(self.hidden, self.dropout, self.activation, self.norm, self.embed_dim, self.dtype, name="mlp")(
            pooled, train=train
        )


class TextBiLSTM(nn.Module):
    """The HTTN extractor: embedding -> BiLSTM -> attention pooling (-> hidden layers): [B, T] -> [B, D]."""

    vocab_size: int
    embed_dim: int = 300
    lstm_hidden: int = 150
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    activation: str = "relu"
    norm: str = "none"
    dtype: Any = jnp.float32
    tokens: bool = False  # True: return (BiLSTM states [B, T, 2 * lstm_hidden], mask [B, T]), no pooling

    @nn.compact
    def __call__(self, ids, *, train: bool):
        ids = _check_ids(ids, "text_bilstm")
        mask = ids != 0
        lengths = jnp.sum(mask, axis=1).astype(jnp.int32)
        emb = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name=EMBED)(ids)

        def lstm(name):
            cell = nn.OptimizedLSTMCell(self.lstm_hidden, dtype=self.dtype, param_dtype=jnp.float32)
            return nn.RNN(cell, name=name)

        states = nn.Bidirectional(lstm("forward"), lstm("backward"), name="bilstm")(emb, seq_lengths=lengths)
        if self.tokens:
            return states, mask
        scores = nn.Dense(1, dtype=jnp.float32, param_dtype=jnp.float32, name="attention")(
            states.astype(jnp.float32)
        )[..., 0]
        # softmax over the real tokens only; an all-pad row gets weights 0 (not NaN): features 0
        weights = jax.nn.softmax(jnp.where(mask, scores, -1e30), axis=-1) * mask
        pooled = jnp.einsum("bt,btd->bd", weights, states.astype(jnp.float32)).astype(self.dtype)
        return MLP(
            self.hidden, self.dropout, self.activation, self.norm, 2 * self.lstm_hidden, self.dtype, name="mlp"
        )(pooled, train=train)


def pool_defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "text_pool"
    c.embed_dim = 128  # embedding width (= the pooled vector's width)
    c.hidden = (256,)  # widths of the hidden layers after pooling; () = the pooled embedding is the feature
    c.dropout = 0.3  # after each hidden activation, training only
    c.activation = "relu"  # "relu" | "gelu"
    c.norm = "none"  # "none" | "layer" | "batch"
    c.head = "linear"  # "linear" (N(0, 0.01) init, bias 0) | "cosine"
    c.freeze_embedding = False  # True: the embedding table does not train
    c.pretrained_embeddings = ""  # "" (random init) | "glove50" (GloVe 6B 50-d rows for known words; embed_dim 50)
    return c


def bilstm_defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "text_bilstm"
    c.embed_dim = 300  # HTTN: GloVe 300
    c.lstm_hidden = 150  # per direction (features: 2 x 150 = 300)
    c.hidden = ()  # hidden layers after attention pooling; () = the pooled BiLSTM states are the features
    c.dropout = 0.0  # after each hidden activation, training only
    c.activation = "relu"  # "relu" | "gelu"
    c.norm = "none"  # "none" | "layer" | "batch"
    c.head = "linear"  # "linear" (N(0, 0.01) init, bias 0) | "cosine"
    c.freeze_embedding = False  # True: the embedding table does not train
    c.pretrained_embeddings = ""  # "" (random init) | "glove50" (GloVe 6B 50-d rows for known words; embed_dim 50)
    return c


def _check_build(name: str, cfg, input_shape, vocab_size) -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size < 1:
        raise TextModelError(
            f"the {name!r} model needs a text dataset: it embeds token ids, but vocab_size={vocab_size!r} "
            "(vocab_size is 0 for feature and image datasets); pick a text dataset (data.name='text_lines' "
            "or 'text_jsonl', configs/text.py) or a model for your inputs ('mlp', 'resnet50')"
        )
    (length,) = check_input_shape(input_shape, 1, f"the {name!r} model takes token ids, input_shape (max_length,)")
    for field in ("embed_dim",) + (("lstm_hidden",) if "lstm_hidden" in cfg else ()):
        v = cfg[field]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"model.{field} must be a positive int, got {v!r}")
    _check_options(tuple(cfg.hidden), float(cfg.dropout), cfg.activation, cfg.norm)
    glove.check_choice(str(cfg.pretrained_embeddings), int(cfg.embed_dim))
    return length


def build_pool(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0):
    """``Classifier(Backbone(TextPool), head)`` for token ids of shape ``input_shape == (max_length,)``."""
    cfg = resolve_model_config(model_cfg, pool_defaults())
    num_classes = check_num_classes(num_classes)
    _check_build("text_pool", cfg, input_shape, vocab_size)
    dtype = resolve_compute_dtype(dtype)
    trunk = TextPool(
        vocab_size=int(vocab_size), embed_dim=int(cfg.embed_dim), hidden=tuple(cfg.hidden),
        dropout=float(cfg.dropout), activation=cfg.activation, norm=cfg.norm, dtype=dtype,
    )
    return Classifier(backbone=Backbone(trunk=trunk), head=make_head(cfg.head, num_classes, dtype))


def build_bilstm(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0):
    """``Classifier(Backbone(TextBiLSTM), head)`` for token ids of shape ``input_shape == (max_length,)``."""
    cfg = resolve_model_config(model_cfg, bilstm_defaults())
    num_classes = check_num_classes(num_classes)
    _check_build("text_bilstm", cfg, input_shape, vocab_size)
    dtype = resolve_compute_dtype(dtype)
    trunk = TextBiLSTM(
        vocab_size=int(vocab_size), embed_dim=int(cfg.embed_dim), lstm_hidden=int(cfg.lstm_hidden),
        hidden=tuple(cfg.hidden), dropout=float(cfg.dropout), activation=cfg.activation, norm=cfg.norm,
        dtype=dtype,
    )
    return Classifier(backbone=Backbone(trunk=trunk), head=make_head(cfg.head, num_classes, dtype))


def _embedding_mask(cfg, params) -> Any:
    """False for ``backbone/trunk/embed/*`` when ``freeze_embedding``; True elsewhere."""
    if not cfg.freeze_embedding:
        return jax.tree.map(lambda _: True, params)
    found = []

    def is_trainable(path, _leaf) -> bool:
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        for j in range(len(keys) - 2):
            if keys[j] == "backbone" and keys[j + 1] == "trunk" and keys[j + 2] == EMBED:
                found.append(path)
                return False
        return True

    mask = jax.tree_util.tree_map_with_path(is_trainable, params)
    if not found:
        raise ValueError(
            f"freeze_embedding=True but params have no backbone/trunk/{EMBED}; pass variables['params'] of a "
            f"model built for {cfg.name!r}"
        )
    return mask


def pool_trainable_mask(model_cfg, params) -> Any:
    """Everything trains; with ``freeze_embedding`` the embedding table does not."""
    return _embedding_mask(resolve_model_config(model_cfg, pool_defaults()), params)


def bilstm_trainable_mask(model_cfg, params) -> Any:
    """Everything trains; with ``freeze_embedding`` the embedding table does not."""
    return _embedding_mask(resolve_model_config(model_cfg, bilstm_defaults()), params)


def pool_init_hook(model_cfg, variables, dataset):
    """GloVe rows for the vocabulary when ``pretrained_embeddings`` is set (:func:`ltjax.models.glove.init_embedding`)."""
    return glove.init_embedding(resolve_model_config(model_cfg, pool_defaults()), variables, dataset)


def bilstm_init_hook(model_cfg, variables, dataset):
    """GloVe rows for the vocabulary when ``pretrained_embeddings`` is set (:func:`ltjax.models.glove.init_embedding`)."""
    return glove.init_embedding(resolve_model_config(model_cfg, bilstm_defaults()), variables, dataset)
