"""Any registered method on a multi-label text corpus (AAPD / RCV1-style), with a text model.

arg: ``METHOD[,FORMAT][,MODEL]`` (comma-separated, in any order; ':' cannot separate them, the config
loader splits the spec at the last ':'): a method name (default "bce"), the file format, ``text_lines``
(default; the AAPD / RCV1 release: ``text_{split}`` + ``label_{split}`` line files) or ``text_jsonl``
(``{split}.jsonl``), and the model, ``text_pool`` (default), ``text_bilstm`` (the HTTN extractor) or
``minilm`` (the frozen pretrained all-MiniLM-L6-v2 encoder, fetched offline; sets
``data.tokenizer=minilm`` and 256 word pieces), e.g.
``--config configs/text.py:hmt`` or ``--config configs/text.py:db_focal,text_jsonl,text_bilstm``.
The files are read from ``--config.data.root`` (or ``$LTJAX_DATA_DIR/<format>``); see
``ltjax/data/text_corpora.py`` for the layouts.

Recipe (HTTN's optimiser, REFERENCE section 4): Adam lr 1e-3 (``adamw`` with weight decay 0), no
gradient clipping, constant learning rate after 100 warm-up steps from lr/10, batch 64, 20 epochs; a class-aware epoch (rs,
DB methods) is N draws long, like a uniform one (``data.class_aware_epoch``), so methods are compute-matched.
Text pipeline: ``words`` tokeniser, lower-cased, tokens seen at least twice in training, documents cut /
padded to 500 tokens (use ``--config.data.tokenizer=whitespace`` for the pre-tokenised AAPD / RCV1
files).  Models: ``text_pool`` = 128-d embeddings, masked mean pooling, one hidden layer of 256 with
dropout 0.3, linear head; ``text_bilstm`` = 300-d embeddings, BiLSTM 2 x 150, attention pooling, linear
head on the 300-d pooled states.  Groups: the DB thresholds (head n_c >= 100, tail n_c < 20), which suit
AAPD-sized corpora (55,840 documents, 54 labels); for small corpora use
``--config.data.groups.mode=quantile``.  Data: ``data.on_device`` is on: every document is tokenised
once and the ids stay on the devices (identical results to ``--config.data.on_device=false``, which
tokenises in the host pipeline every time a document is drawn; faster).  Evaluation: mAP overall and per group, plus P@1/3/5,
nDCG@1/3/5 and micro/macro-F1 at 0.5 (``eval.top_k``, ``eval.threshold``).

LDRNet's E-step (``method.phases.e_step``) trains at the paper's Adam lr 1e-4, not the recipe's 1e-3: under
GCE (q 0.8) at 1e-3 one E-step epoch on padchest_reports took the test mAP from 73.37 (after the M-step) to
64.78, falling at every checkpoint (71.59, 69.26, 66.27 after 48, 248, 448 steps); after 448 steps at 1e-4
it was 73.47, and with BCE at 1e-3 74.31 (seed 0; docs/RESULTS.md, "LDRNet (issue 15)").  GCE scales each
entry's BCE gradient by p_t^q, so a hard positive (p small) gets almost none while the easy negatives keep
theirs: at the larger step the encoder moves every class's features towards "negative".
"""
from ltjax.defaults import experiment_config

FORMATS = ("text_lines", "text_jsonl")
MODELS = ("text_pool", "text_bilstm", "minilm")


def parse_arg(arg):
    """'METHOD[,FORMAT][,MODEL]' (any order) -> (method, format, model)."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    formats = [p for p in parts if p in FORMATS]
    models = [p for p in parts if p in MODELS]
    methods = [p for p in parts if p not in FORMATS and p not in MODELS]
    if len(methods) > 1 or len(formats) > 1 or len(models) > 1:
        raise ValueError(
            f"configs/text.py: arg must be METHOD[,FORMAT][,MODEL] with FORMAT one of {', '.join(FORMATS)} and "
            f"MODEL one of {', '.join(MODELS)}, got {arg!r}"
        )
    return (methods or ["bce"])[0], (formats or ["text_lines"])[0], (models or ["text_pool"])[0]


def httn_recipe(dataset: str, method: str, model: str):
    """The text recipe (module docstring) for any text dataset, method and text model."""
    c = experiment_config(dataset=dataset, model=model, method=method)
    c.data.batch_size = 64
    c.data.eval_batch_size = 256
    c.data.max_length = 500
    c.data.min_freq = 2
    if model == "text_pool":
        c.model.embed_dim = 128
        c.model.hidden = (256,)
        c.model.dropout = 0.3
    if model == "minilm":  # the frozen pretrained encoder reads its own WordPiece ids
        c.data.tokenizer = "minilm"
        c.data.max_length = 256
    c.optimizer.name = "adamw"
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 0.0  # plain Adam, as HTTN
    c.optimizer.grad_clip_norm = 0.0
    c.schedule.name = "constant"
    c.schedule.warmup_steps = 100
    c.schedule.warmup_init_factor = 0.1
    # Class-aware methods (rs, the DB family) take N draws per epoch, as many steps as the others: the DB
    # protocol's max(n_c) * C / 4 was set for VOC/COCO and grows with C (PadChest: 7x N), which would
    # make a table of methods mostly a table of training lengths.
    c.data.class_aware_epoch = "num_examples"
    # token ids made once per document and kept on the devices (ltjax/data/on_device.py): the same run as
    # the host pipeline (the text transform is deterministic), 3-4x faster end to end on a 2-core CPU
    c.data.on_device = True
    c.train.num_epochs = 20
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    if method == "ldrnet":  # the paper's Adam lr for the E-step (module docstring)
        c.method.phases.e_step.optimizer.lr = 1e-4
    return c


def get_config(arg=None):
    method, fmt, model = parse_arg(arg)
    return httn_recipe(fmt, method, model)
