"""COMIC on PLT-COCO (COCO-LT with 40 % of the training positives hidden): the recipe and rows of
``configs/comic_voc.py``, on the COCO tree under ``--config.data.root`` or ``$LTJAX_DATA_DIR/coco``."""
import comic_voc


def get_config(arg=None):
    return comic_voc.comic_config("coco_lt", arg)
