"""CSSFE on COCO-LT with the paper's training setting: ``configs/cssfe_voc.py``'s recipe with lr 1e-5.

arg: the ablation variant (default "net3").  Needs a COCO tree under ``--config.data.root``.
"""
import cssfe_voc  # the sibling configs/cssfe_voc.py

DATASET = "coco_lt"


def get_config(arg=None):
    return cssfe_voc.cssfe_recipe(DATASET, arg or "net3")
