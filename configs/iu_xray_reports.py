"""Any registered method on IU X-ray report texts (findings + impression -> MeSH major headings).

arg: ``METHOD[,MODEL]`` (comma-separated): a method name (default "bce") and the model, ``text_pool``
(default) or ``text_bilstm``, e.g. ``--config configs/iu_xray_reports.py:hmt``.  The data come from the
pinned ``torchxrayvision==1.5.7`` wheel through ``ltjax.assets`` (fetched on first use); the dataset
(3,955 XML reports, 'normal' = no positive, 'No Indexing' reports dropped, seeded 80/20 split by
report, classes with >= 5 training reports: 3,066 train / 766 test reports, 74 classes, head / medium /
tail 16 / 32 / 26) is described in ``ltjax/data/reports.py``.

Recipe: the text recipe of configs/text.py (HTTN's optimiser: Adam lr 1e-3, 100 warm-up steps, batch
64) with documents cut to 128 words (99% of the reports have <= 110) and 150 epochs (7,200 steps): a
small corpus needs many passes.  ``bce`` mAP (seed 0, evaluated every 25 epochs on 2 shared CPU cores,
~23 s per 25 epochs): 12.6, 32.8, 46.1, 50.2, 51.5, 52.3 at epochs 25..150, i.e. nearly flat by 150;
at the former 30 epochs it was 16.9, which made every method comparison a comparison of how fast the
methods start.  Groups: the DB thresholds (head n_c >= 100, tail n_c < 20); with 3k training reports
only 16 classes reach the head, so ``--config.data.groups.mode=quantile`` (three equal groups) is a
sensible alternative.

Decoupled methods (crt, lws): their second phase (a re-initialised head, or the per-class scales, trained
on the fixed representation) runs 40 epochs (1,920 steps) instead of Kang et al.'s 10: at 10 epochs
(480 steps at lr 1e-3) cRT's training loss is still falling fast (0.204 -> 0.082), at 40 it has levelled
off (0.025); a choice made on the training loss, not on the test split.
"""
import padchest_reports  # the sibling configs/padchest_reports.py (arg parsing)
import text  # the sibling configs/text.py (the text recipe)

DATASET = "iu_xray_reports"
EPOCHS = 150
MAX_LENGTH = 128
SECOND_PHASE_EPOCHS = 40


def get_config(arg=None):
    method, model = padchest_reports.parse_arg(arg, "configs/iu_xray_reports.py")
    c = text.httn_recipe(DATASET, method, model)
    c.data.max_length = MAX_LENGTH
    c.train.num_epochs = EPOCHS
    for phase in ("classifier", "scale"):  # crt, lws (see above)
        if phase in c.method.get("phases", {}):
            c.method.phases[phase].epochs = SECOND_PHASE_EPOCHS
    return c
