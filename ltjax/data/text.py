"""The text pipeline: tokeniser, a vocabulary built from the TRAINING documents, and the example transform.

A text dataset (e.g. :mod:`ltjax.data.text_corpora`) hands :func:`~ltjax.data.sources.dataset_from_source`
its documents as strings; that calls :func:`text_transforms` with the training documents and the data
config, and gets back the transforms, the input shape ``(max_length,)`` and the vocabulary size.

Config fields (``text_defaults()``, merged into ``config.data`` by every text dataset):

* ``tokenizer`` -- ``"words"`` (default): the maximal runs of unicode word characters, i.e. the regex
  ``\\w+`` (letters, digits and ``_`` of any script); punctuation and whitespace separate tokens and are
  dropped (``"don't stop."`` -> ``don``, ``t``, ``stop``).  ``"whitespace"``: ``str.split()``, every
  whitespace-separated piece is a token as it stands, punctuation included -- what the pre-tokenised
  AAPD / RCV1 releases need.  ``"minilm"``: the WordPiece tokenizer of all-MiniLM-L6-v2
  (:mod:`ltjax.data.wordpiece`, BERT uncased, fetched through :mod:`ltjax.assets`) for the 'minilm' model:
  the ids are ``[CLS] word pieces [SEP]`` from its fixed 30,522-entry vocabulary (``vocab_size`` 30522,
  0 = ``[PAD]``, 100 = ``[UNK]``), cut to ``max_length`` (<= 512) ids and zero-padded; no vocabulary is
  built, so ``min_freq``, ``max_vocab`` and ``lowercase`` do not apply (the tokenizer always lower-cases
  and strips accents), and ``info["text"]["train_oov_rate"]`` is the share of ``[UNK]`` pieces.
* ``lowercase`` -- lower-case the document (``str.lower``) before tokenising (default True).
* ``min_freq`` -- a token enters the vocabulary only if it occurs at least this often in the training
  documents (default 2).
* ``max_vocab`` -- keep at most this many tokens (the most frequent ones), not counting the two
  reserved ids; 0 (default) = no cap.
* ``max_length`` -- documents are cut to their FIRST ``max_length`` tokens and zero-padded to it
  (default 500, the HTTN / AAPD scale: AAPD abstracts have ~160 tokens on average, a few over 500).

Ids: 0 = padding, 1 = out-of-vocabulary (a token not in the vocabulary; it still occupies a position),
then the vocabulary's tokens by descending training frequency, ties broken by the token string
(ascending), so the same training documents always give the same ids.  The vocabulary comes from the
training split only; validation and test documents are encoded with it (their unseen words become 1).

The transform maps ``{"inputs": str | bytes (UTF-8), ...}`` to ``{"inputs": int32 [max_length] ids, ...}``
(other keys pass through); a model recovers the padding mask as ``ids != 0``.  It is deterministic:
the training transform is the same function as the evaluation one (it accepts the pipeline's ``rng``
and ignores it -- there is no text augmentation).
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any, ClassVar, Iterable

import ml_collections
import numpy as np

from ltjax.errors import TextDataError  # noqa: F401 (re-exported)

PAD_ID = 0
OOV_ID = 1
NUM_RESERVED = 2
TOKENIZERS = ("words", "whitespace")
PRETRAINED_TOKENIZERS = ("minilm",)  # fixed WordPiece vocabulary (ltjax.data.wordpiece); no Vocabulary is built
_WORD_RE = re.compile(r"\w+")


def text_defaults() -> ml_collections.ConfigDict:
    """The text pipeline's fields of ``config.data`` (module docstring)."""
    c = ml_collections.ConfigDict()
    c.max_length = 500  # tokens per document after truncation / padding (HTTN / AAPD scale)
    c.min_freq = 2  # a training token needs this many occurrences to get its own id
    c.max_vocab = 0  # keep at most this many tokens (besides pad / OOV); 0 = no cap
    c.lowercase = True  # lower-case before tokenising
    c.tokenizer = "words"  # "words" (unicode \w+ runs, punctuation dropped) | "whitespace" (str.split) | "minilm"
    return c


def _as_text(text: Any) -> str:
    """str, bytes (UTF-8), numpy str/bytes scalars or a 0-d array of one -> str."""
    if isinstance(text, np.ndarray):
        if text.ndim != 0:
            raise TypeError(f"a text example's inputs must be one document, got an array of shape {text.shape}")
        text = text.item()
    if isinstance(text, (bytes, bytearray, np.bytes_)):
        return bytes(text).decode("utf-8")
    if isinstance(text, str):
        return str(text)
    raise TypeError(f"a text example's inputs must be a str or UTF-8 bytes, got {type(text).__name__}")


def tokenize(text: Any, tokenizer: str = "words", lowercase: bool = True) -> list[str]:
    """The tokens of one document (module docstring: ``"words"`` or ``"whitespace"``)."""
    text = _as_text(text)
    if lowercase:
        text = text.lower()
    if tokenizer == "words":
        return _WORD_RE.findall(text)
    if tokenizer == "whitespace":
        return text.split()
    raise TextDataError(f"unknown data.tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token <-> id map: id 0 = padding, 1 = out-of-vocabulary, ``tokens[i]`` has id ``i + 2``.

    Build it with :meth:`build` from the training documents.  ``len(vocab)`` is the number of ids
    (the embedding table's size), i.e. ``len(tokens) + 2``.  Picklable.
    """

    tokens: tuple[str, ...]
    tokenizer: str = "words"
    lowercase: bool = True
    index: dict = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise TextDataError(f"unknown data.tokenizer {self.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
        tokens = tuple(str(t) for t in self.tokens)
        if len(set(tokens)) != len(tokens):
            raise TextDataError("vocabulary tokens must be unique")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "lowercase", bool(self.lowercase))
        object.__setattr__(self, "index", {t: i + NUM_RESERVED for i, t in enumerate(tokens)})

    @classmethod
    def build(
        cls,
        texts: Iterable[Any],
        *,
        min_freq: int = 2,
        max_vocab: int = 0,
        tokenizer: str = "words",
        lowercase: bool = True,
    ) -> "Vocabulary":
        """The vocabulary of ``texts``: tokens seen >= ``min_freq`` times, by descending count then
        token string, at most ``max_vocab`` of them (0 = all)."""
        min_freq, max_vocab = _check_counts(min_freq, max_vocab)
        counts = token_counts(texts, tokenizer, lowercase)
        return cls(select_tokens(counts, min_freq, max_vocab), tokenizer=tokenizer, lowercase=lowercase)

    def __len__(self) -> int:
        return len(self.tokens) + NUM_RESERVED

    def tokenize(self, text: Any) -> list[str]:
        return tokenize(text, self.tokenizer, self.lowercase)

    def encode(self, text: Any) -> list[int]:
        """The ids of every token of ``text`` (1 for a token outside the vocabulary), no truncation."""
        get = self.index.get
        return [get(t, OOV_ID) for t in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens ("<pad>" for 0, "<oov>" for 1); for inspection."""
        names = ("<pad>", "<oov>") + self.tokens
        return [names[int(i)] for i in ids]


def token_counts(texts: Iterable[Any], tokenizer: str = "words", lowercase: bool = True) -> collections.Counter:
    """How often each token occurs in ``texts``."""
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(tokenize(text, tokenizer, lowercase))
    return counts


def select_tokens(counts, min_freq: int, max_vocab: int) -> tuple[str, ...]:
    """The vocabulary's tokens from token counts: count >= ``min_freq``, by descending count then token
    string, the first ``max_vocab`` of them (0 = all)."""
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    return tuple(kept[:max_vocab] if max_vocab else kept)


def _check_counts(min_freq, max_vocab) -> tuple[int, int]:
    for name, value, low in (("min_freq", min_freq, 1), ("max_vocab", max_vocab, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise TextDataError(f"data.{name} must be an integer >= {low}, got {value!r}")
    return int(min_freq), int(max_vocab)


@dataclasses.dataclass(frozen=True)
class TextTransform:
    """Example transform ``{"inputs": str | bytes, ...} -> {"inputs": int32 [max_length], ...}``.

    The document's ids (:meth:`Vocabulary.encode`), cut to the first ``max_length`` and padded with 0
    (the mask is ``ids != 0``); other keys pass through.  ``t(example)`` and ``t(example, rng)`` are the
    same deterministic function: the pipeline's per-example ``rng`` is accepted and ignored.  Picklable
    (grain workers).
    """

    vocab: Vocabulary
    max_length: int = 500
    # the same output for every call (no augmentation): data.on_device may apply it once per example
    deterministic: ClassVar[bool] = True

    def __post_init__(self):
        n = self.max_length
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise TextDataError(f"data.max_length must be a positive integer, got {n!r}")
        object.__setattr__(self, "max_length", int(n))

    def encode(self, text: Any) -> np.ndarray:
        ids = self.vocab.encode(text)[: self.max_length]
        out = np.zeros(self.max_length, np.int32)
        out[: len(ids)] = ids
        return out

    def __call__(self, example: dict, rng: np.random.Generator | None = None) -> dict:
        del rng  # deterministic: no text augmentation
        out = dict(example)
        out["inputs"] = self.encode(example["inputs"])
        return out


@dataclasses.dataclass(frozen=True)
class TextSetup:
    """What a text dataset needs from the pipeline (:func:`text_transforms`)."""

    train_transform: TextTransform
    eval_transform: TextTransform
    input_shape: tuple[int, ...]  # (max_length,)
    vocab_size: int  # number of ids, pad and OOV included
    vocabulary: Vocabulary | None  # None for data.tokenizer="minilm" (fixed WordPiece vocabulary)
    info: dict  # {"text": {...}}: merged into DatasetMeta.info


def _field(cfg, name: str):
    defaults = text_defaults()
    try:
        return cfg[name]
    except (KeyError, AttributeError):
        return defaults[name]


def text_transforms(train_texts, cfg) -> TextSetup:
    """Vocabulary from ``train_texts`` (the training documents) and the transforms, under ``cfg``
    (config.data; absent text fields take :func:`text_defaults`).

    ``info["text"]`` reports the settings, the vocabulary size, the OOV rate of the training tokens (the
    share mapped to id 1 by min_freq / max_vocab), the mean and 95th-percentile training document length
    in tokens (before truncation), the fraction of training documents longer than ``max_length`` and
    the number of empty ones.
    """
    tokenizer = str(_field(cfg, "tokenizer"))
    if tokenizer == "minilm":
        return _wordpiece_transforms(train_texts, cfg)
    lowercase = bool(_field(cfg, "lowercase"))
    min_freq, max_vocab = _check_counts(_field(cfg, "min_freq"), _field(cfg, "max_vocab"))
    if tokenizer not in TOKENIZERS:
        choices = ", ".join(TOKENIZERS + PRETRAINED_TOKENIZERS)
        raise TextDataError(f"unknown data.tokenizer {tokenizer!r}; choose one of {choices}")
    docs = [tokenize(t, tokenizer, lowercase) for t in train_texts]
    counts: collections.Counter = collections.Counter()
    for d in docs:
        counts.update(d)
    kept = select_tokens(counts, min_freq, max_vocab)
    if not kept:
        raise TextDataError(
            f"the text vocabulary is empty: no token occurs at least data.min_freq={min_freq} times in the "
            f"{len(docs)} training documents ({len(counts)} distinct tokens with data.tokenizer={tokenizer!r}); "
            "lower data.min_freq or check the documents file"
        )
    vocab = Vocabulary(kept, tokenizer=tokenizer, lowercase=lowercase)
    transform = TextTransform(vocab, int(_field(cfg, "max_length")))
    lengths = np.asarray([len(d) for d in docs], np.int64)
    total = int(lengths.sum())
    oov = total - sum(counts[t] for t in kept)
    info = {
        "text": {
            "tokenizer": tokenizer,
            "lowercase": lowercase,
            "min_freq": min_freq,
            "max_vocab": max_vocab,
            "max_length": transform.max_length,
            "vocab_size": len(vocab),
            "train_tokens": total,
            "train_oov_rate": float(oov / total) if total else 0.0,
            "train_doc_length_mean": float(lengths.mean()) if len(lengths) else 0.0,
            "train_doc_length_p95": float(np.percentile(lengths, 95)) if len(lengths) else 0.0,
            "train_truncated_fraction": float((lengths > transform.max_length).mean()) if len(lengths) else 0.0,
            "train_empty_documents": int((lengths == 0).sum()),
        }
    }
    return TextSetup(
        train_transform=transform,
        eval_transform=transform,
        input_shape=(transform.max_length,),
        vocab_size=len(vocab),
        vocabulary=vocab,
        info=info,
    )


def _wordpiece_transforms(train_texts, cfg) -> TextSetup:
    """``data.tokenizer = "minilm"``: the MiniLM WordPiece transform, and the same ``info["text"]`` fields
    (counted in word pieces, ``[CLS]`` / ``[SEP]`` excluded; truncated = more than ``max_length - 2`` pieces)."""
    from ltjax.data.wordpiece import WordPieceTokenizer, WordPieceTransform

    max_length = _field(cfg, "max_length")
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or not 2 <= max_length <= 512:
        raise TextDataError(
            f"data.max_length must be an integer in [2, 512] with data.tokenizer='minilm' (MiniLM has 512 "
            f"positions, [CLS] and [SEP] included), got {max_length!r}"
        )
    tok = WordPieceTokenizer.minilm()
    transform = WordPieceTransform(tok, int(max_length))
    lengths, unk = [], 0
    for text in train_texts:
        ids = tok.tokenize_ids(text)
        lengths.append(len(ids))
        unk += ids.count(tok.unk_id)
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    info = {
        "text": {
            "tokenizer": "minilm",
            "lowercase": True,
            "max_length": transform.max_length,
            "vocab_size": len(tok),
            "train_tokens": total,
            "train_oov_rate": float(unk / total) if total else 0.0,
            "train_doc_length_mean": float(lengths.mean()) if len(lengths) else 0.0,
            "train_doc_length_p95": float(np.percentile(lengths, 95)) if len(lengths) else 0.0,
            "train_truncated_fraction": float((lengths > transform.max_length - 2).mean()) if len(lengths) else 0.0,
            "train_empty_documents": int((lengths == 0).sum()),
        }
    }
    return TextSetup(
        train_transform=transform,
        eval_transform=transform,
        input_shape=(transform.max_length,),
        vocab_size=len(tok),
        vocabulary=None,
        info=info,
    )
