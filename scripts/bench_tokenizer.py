"""WordPiece speed: ltjax's tokenizer (the Rust ``tokenizers`` package) against the pure-Python implementation it
replaced (``tests/wordpiece_reference.py``), on the MiniLM vocabulary; prints a table and checks the ids agree.

    python scripts/bench_tokenizer.py [--corpus FILE] [--repeat 20] [--max-length 256]

The corpus: one document per line of ``--corpus`` (e.g. a report file), else the repository's README and docs
lines repeated ``--repeat`` times.  Rows: one document at a time (``encode``, what a data-pipeline transform
does) and the whole list at once (``encode_batch``: the Rust tokenizer runs it on every core).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main(argv=None) -> int:
    import numpy as np

    from ltjax.assets import fetch
    from ltjax.data.wordpiece import TOKENIZER_ASSET, WordPieceTokenizer
    from wordpiece_reference import WordPieceTokenizer as Reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="", help="a text file, one document per line")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args(argv)
    if args.corpus:
        docs = [ln for ln in open(args.corpus, encoding="utf-8").read().splitlines() if ln.strip()]
    else:
        docs = []
        for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
            docs += [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        docs = docs * args.repeat
    rust = WordPieceTokenizer.minilm()
    ref = Reference.from_json(fetch(TOKENIZER_ASSET))
    n_chars = sum(len(d) for d in docs)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    rows = []
    a, ta = timed(lambda: [ref.encode(d, args.max_length) for d in docs])
    b, tb = timed(lambda: [rust.encode(d, args.max_length) for d in docs])
    assert a == b, "the two tokenizers disagree"
    rows.append(("encode, one document at a time", ta, tb))
    (ia, ma), tc = timed(lambda: ref.encode_batch(docs, args.max_length))
    (ib, mb), td = timed(lambda: rust.encode_batch(docs, args.max_length))
    assert np.array_equal(ia, ib) and np.array_equal(ma, mb)
    rows.append((f"encode_batch ({os.cpu_count()} cores)", tc, td))
    print(f"{len(docs)} documents, {n_chars / 1e6:.2f} M characters, max_length {args.max_length}; ids identical\n")
    print("| call | pure Python (docs/s) | tokenizers (docs/s) | speed-up |")
    print("|---|---|---|---|")
    for name, t_ref, t_rust in rows:
        print(f"| {name} | {len(docs) / t_ref:,.0f} | {len(docs) / t_rust:,.0f} | {t_ref / t_rust:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
