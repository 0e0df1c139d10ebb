"""HTTN on AAPD, the paper's setting (paper 003, REFERENCE section 4; ``ltjax/methods/httn.py`` says what each
method field does).

arg: ``METHOD[,L_TAIL]``: the method (default "httn"; also "ehttn", "imprinting", and the baselines of the
paper's table, "bce" (= Joint), "db_focal", "hmt", any registered method) and the number of tail labels
(default 18; the paper also runs 9), e.g. ``--config configs/httn_aapd.py:ehttn,9``.

Data: the AAPD release (55,840 abstracts, 54 labels) as line files ``text_train`` / ``label_train`` /
``text_test`` / ``label_test`` (``text_val`` / ``label_val`` too if present) under ``--config.data.root`` (or
``$LTJAX_DATA_DIR/aapd``), read by the ``text_lines`` builder with the ``whitespace`` tokenizer (the release is
tokenised); the dataset's own train / test split.  Without the files the run stops at once, naming them.

Recipe: ``text_bilstm`` (embeddings -> BiLSTM 2 x 150 -> attention pooling), then HTTN's Linear 300 -> 128, L2
norm and learnable scale; Adam lr 1e-3 (the text recipe of configs/text.py: batch 64, 100 warm-up steps, 20
epochs of the head phase); t = 5 documents per prototype, S = 30 rounds, EHTTN G = 30.  Word vectors: the
paper's are GloVe 300-d: ``--config.model.pretrained_embeddings=/path/glove.6B.300d.txt
--config.model.embed_dim=300``; offline the default is the 50-d GloVe 6B that ltjax ships (``glove50``).
Reports P@1/3/5, nDCG@3/5 and micro-F1 at 0.5 (the paper's table), mAP total / head / medium / tail, and
``method_summary.mAP_tail_split``, the mAP over the split's tail labels.
"""
import os

import text  # the sibling configs/text.py (the text recipe)

HTTN_METHODS = ("httn", "ehttn", "imprinting")


def parse_arg(arg, default_tail: int, where: str):
    method, _, tail = (arg or "httn").partition(",")
    try:
        l_tail = int(tail) if tail else int(default_tail)
    except ValueError:
        raise ValueError(f"{where}: arg must be METHOD[,L_TAIL] with L_TAIL an integer, got {arg!r}") from None
    return method or "httn", l_tail


def httn_config(name: str, arg, l_tail: int, shots: int, text_file="text_{split}", label_file="label_{split}",
                where="configs/httn_aapd.py"):
    """The paper's HTTN setting on the text_lines corpus ``name`` (module docstring)."""
    method, l_tail = parse_arg(arg, l_tail, where)
    c = text.httn_recipe("text_lines", method, "text_bilstm")
    c.data.root = os.path.join(os.environ.get("LTJAX_DATA_DIR") or os.path.join("~", "data"), name)
    c.data.text_file, c.data.label_file = text_file, label_file
    c.data.tokenizer = "whitespace"
    c.model.embed_dim = 50
    c.model.pretrained_embeddings = "glove50"
    c.eval.top_k = (1, 3, 5)
    if method in HTTN_METHODS:
        c.method.l_tail = l_tail
        c.method.shots = shots
        c.method.rounds = 30
    return c


def get_config(arg=None):
    return httn_config("aapd", arg, l_tail=18, shots=5)
