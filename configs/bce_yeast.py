"""BCE (ERM) on the real Mulan yeast data with an MLP: the Quickstart demo (configs/yeast.py:bce).

arg: an optional seed, e.g. ``--config configs/bce_yeast.py:1``.
"""
import yeast  # the sibling configs/yeast.py (a config's own folder is importable)


def get_config(arg=None):
    c = yeast.get_config("bce")
    c.seed = int(arg) if arg else 0
    return c
