"""Any registered method on IU X-ray report texts (findings + impression -> MeSH major headings).

arg: ``METHOD[,MODEL]`` (comma-separated): a method name (default "bce") and the model, ``text_pool``
(default) or ``text_bilstm``, e.g. ``--config configs/iu_xray_reports.py:hmt``.  The data come from the
pinned ``torchxrayvision==1.5.7`` wheel through ``ltjax.assets`` (fetched on first use); the dataset
(3,955 XML reports, 'normal' = no positive, 'No Indexing' reports dropped, seeded 80/20 split by
report, classes with >= 5 training reports: 3,066 train / 766 test reports, 74 classes, head / medium /
tail 16 / 32 / 26) is described in ``ltjax/data/reports.py``.

Recipe: the text recipe of configs/text.py (HTTN's optimiser: Adam lr 1e-3, 100 warm-up steps, batch
64) with documents cut to 128 words (99% of the reports have <= 110) and 30 epochs (1,440 steps): a
small corpus needs more passes.  The ``bce`` run took 1 min 0 s wall (47 s CPU) on 2 shared cores;
result (split_seed 0, seed 0): mAP 16.9, head / medium / tail 37.8 / 14.5 / 5.3, P@1 52.8.  Its
training loss was still falling at the end, so ``--config.train.num_epochs=100`` (about 3x as long) is likely
to score higher.  Groups: the DB thresholds (head n_c >= 100, tail n_c < 20); with 3k training reports
only 16 classes reach the head, so ``--config.data.groups.mode=quantile`` (three equal groups) is a
sensible alternative.
"""
import padchest_reports  # the sibling configs/padchest_reports.py (arg parsing)
import text  # the sibling configs/text.py (the text recipe)

DATASET = "iu_xray_reports"
EPOCHS = 30
MAX_LENGTH = 128


def get_config(arg=None):
    method, model = padchest_reports.parse_arg(arg, "configs/iu_xray_reports.py")
    c = text.httn_recipe(DATASET, method, model)
    c.data.max_length = MAX_LENGTH
    c.train.num_epochs = EPOCHS
    return c
