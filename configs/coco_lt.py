"""Any registered method on COCO-LT with the DB-loss recipe (REFERENCE section 2).

arg: the method name (default "bce"), e.g. ``--config configs/coco_lt.py:db_focal``.  Needs a COCO
2017 tree (train2017/, val2017/, annotations/instances_val2017.json) under ``--config.data.root`` or
``$LTJAX_DATA_DIR/coco``.  Same recipe as configs/voc_lt.py; the DB loss takes the COCO setting
(mu 0.2, lambda 2).
"""
import voc_lt  # the sibling configs/voc_lt.py


def get_config(arg=None):
    c = voc_lt.db_recipe("coco_lt", arg or "bce")
    if "mu" in c.method and "lam" in c.method:  # the DB losses
        c.method.mu = 0.2
        c.method.lam = 2.0
    return c
