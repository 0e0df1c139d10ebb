"""The pure-Python BERT WordPiece tokenizer ltjax used before it moved to the ``tokenizers`` package: kept
here as an independent reference, so that tests/test_minilm.py can check that ``ltjax.data.wordpiece`` (the
Rust tokenizer) gives identical ids on a corpus.  Its steps, as the ``tokenizer.json`` describes them:

1. **Special tokens** (the ``added_tokens`` with ``special: true``: ``[PAD] [UNK] [CLS] [SEP] [MASK]``) are
   matched in the raw text first (case-sensitive, not normalised) and map straight to their ids.
2. **Normaliser** (``BertNormalizer``), in this order: *clean text* -- drop NUL, U+FFFD and every other
   character of a ``C*`` unicode category except ``\\t \\n \\r`` (so ``\\x0c`` disappears: ``"a\\x0cb"`` ->
   ``"ab"``), then turn every whitespace character into a space; *CJK spacing* -- put spaces around each
   CJK ideograph (the unicode blocks BERT lists), so every ideograph becomes its own word; *accent
   stripping* (on when ``strip_accents`` is true, or null and ``lowercase`` is on) -- NFD, then drop the
   non-spacing marks (``Mn``): ``"Café"`` -> ``"Cafe"``; *lowercasing* -- character by character
   (``str.lower`` of each character, as Rust's ``char::to_lowercase``: no final-sigma rule).
3. **Pre-tokeniser** (``BertPreTokenizer``): split on whitespace, and make every punctuation character a
   word of its own (ASCII punctuation, ``$ + < = > ^ ` | ~`` included, and every unicode ``P*`` character):
   ``"don't!"`` -> ``don ' t !``.
4. **WordPiece** (greedy longest match first): a word is cut into the longest vocabulary entry that starts
   it, then the longest ``##``-prefixed entry that continues it, and so on (``"unaffable"`` -> ``un ##aff
   ##able``); a word with a piece that matches nothing, or longer than ``max_input_chars_per_word`` (100)
   characters, becomes one ``[UNK]``.
5. **Post-processor**: ``[CLS] tokens [SEP]``.  Truncation keeps the first ``max_length - 2`` word pieces so
   that the sequence with its two special tokens has at most ``max_length`` ids.  The file's own truncation
   (128) and fixed padding (to 128) are ignored: padding is ours (``encode_batch`` pads with ``[PAD]`` = 0 and
   returns the attention mask; the dataset transform pads to ``data.max_length``).
"""
from __future__ import annotations

import os
import re
import unicodedata
from typing import Any, Iterable, Sequence

import numpy as np

from ltjax.errors import WordPieceError

# the CJK ideograph blocks of BERT's _is_chinese_char (and the Rust BertNormalizer)
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ASCII_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_SPACE_RE = re.compile(r"[\t\n\r]")
_ASCII_PUNCT_SPLIT_RE = re.compile(r"[^\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]+|[\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]")
_WORD_CACHE_SIZE = 1 << 16


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in "\t\n\r " or ch.isspace()


def _is_punctuation(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


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


class WordPieceTokenizer:
    """BERT WordPiece tokenization as the ``tokenizer.json`` describes it (module docstring).

    ``vocab`` maps word pieces to ids; ``special_tokens`` maps the special tokens' texts to their ids.
    Picklable (the per-word cache is not pickled).
    """

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
        self.lowercase = bool(lowercase)
        self.strip_accents = self.lowercase if strip_accents is None else bool(strip_accents)
        self.handle_chinese_chars = bool(handle_chinese_chars)
        self.clean_text = bool(clean_text)
        self.prefix = str(continuing_subword_prefix)
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        self._inverse = None
        self._special_re = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")"
        )
        self._cache: dict[str, tuple[int, ...]] = {}

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "WordPieceTokenizer":
        """The tokenizer a BERT WordPiece ``tokenizer.json`` describes (the file is read by ltjax's
        ``read_bert_spec``; everything after that is this module's own)."""
        from ltjax.data.wordpiece import read_bert_spec

        return cls(**read_bert_spec(path)[1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        state["_inverse"] = None
        return state

    def __len__(self) -> int:
        return max(max(self.vocab.values()), max(self.special_tokens.values())) + 1

    # ---- the pipeline -------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """Step 2 of the module docstring (clean text, CJK spacing, accent stripping, lowercasing)."""
        if text.isascii():  # fast path: no CJK, no accents, lower() is per character already
            if self.clean_text:
                text = _ASCII_SPACE_RE.sub(" ", _ASCII_CONTROL_RE.sub("", text))
            return text.lower() if self.lowercase else text
        if self.clean_text:
            out = []
            for ch in text:
                cp = ord(ch)
                if cp == 0 or cp == 0xFFFD or _is_control(ch):
                    continue
                out.append(" " if _is_whitespace(ch) else ch)
            text = "".join(out)
        if self.handle_chinese_chars:
            text = "".join(f" {ch} " if _is_cjk(ord(ch)) else ch for ch in text)
        if self.strip_accents:
            text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
        if self.lowercase:
            text = "".join(ch.lower() for ch in text)
        return text

    def pre_tokenize(self, normalized: str) -> list[str]:
        """Step 3: whitespace split, then every punctuation character on its own."""
        words: list[str] = []
        for chunk in normalized.split():
            if chunk.isalnum():
                words.append(chunk)
            elif chunk.isascii():
                words.extend(_ASCII_PUNCT_SPLIT_RE.findall(chunk))
            else:
                current = []
                for ch in chunk:
                    if _is_punctuation(ch):
                        if current:
                            words.append("".join(current))
                            current = []
                        words.append(ch)
                    else:
                        current.append(ch)
                if current:
                    words.append("".join(current))
        return words

    def wordpiece_ids(self, word: str) -> tuple[int, ...]:
        """Step 4 for one pre-tokenised word: its word-piece ids (``(unk_id,)`` when it cannot be split)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ids = self._wordpiece(word)
        if len(self._cache) >= _WORD_CACHE_SIZE:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        n = len(word)
        if n > self.max_input_chars_per_word:
            return (self.unk_id,)
        vocab, prefix = self.vocab, self.prefix
        ids = []
        start = 0
        while start < n:
            end = n
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else prefix + word[start:end]
                found = vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return (self.unk_id,)
            ids.append(found)
            start = end
        return tuple(ids)

    def _segments(self, text: str) -> list[tuple[bool, str]]:
        """(is_special, text) pieces: the special tokens matched in the raw text, and the text between."""
        parts = self._special_re.split(text)
        return [(i % 2 == 1, p) for i, p in enumerate(parts) if p]

    def tokenize_ids(self, text: Any) -> list[int]:
        """The word-piece ids of ``text`` without ``[CLS]`` / ``[SEP]`` and without truncation."""
        text = _as_text(text)
        ids: list[int] = []
        for is_special, segment in self._segments(text):
            if is_special:
                ids.append(self.special_tokens[segment])
                continue
            for word in self.pre_tokenize(self.normalize(segment)):
                ids.extend(self.wordpiece_ids(word))
        return ids

    def tokenize(self, text: Any) -> list[str]:
        """The word pieces of ``text`` (strings, no ``[CLS]`` / ``[SEP]``)."""
        return self.convert_ids_to_tokens(self.tokenize_ids(text))

    def encode(self, text: Any, max_length: int | None = 512) -> list[int]:
        """``[CLS] pieces [SEP]`` ids, the pieces cut so that the whole has at most ``max_length`` ids
        (None: no truncation)."""
        ids = self.tokenize_ids(text)
        if max_length is not None:
            if max_length < 2:
                raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
            ids = ids[: max_length - 2]
        return [self.cls_id, *ids, self.sep_id]

    def encode_batch(
        self, texts: Iterable[Any], max_length: int | None = 512, pad_to: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int32 [N, L], mask bool [N, L])``: :meth:`encode` of each text, padded on the right with
        the pad id to ``L`` = ``pad_to`` (>= the longest) or, when None, the longest sequence."""
        rows = [self.encode(t, max_length) for t in texts]
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
        if self._inverse is None:
            inverse = {i: t for t, i in self.vocab.items()}
            inverse.update({i: t for t, i in self.special_tokens.items()})
            self._inverse = inverse
        return [self._inverse.get(int(i), self.unk_token) for i in ids]
