"""HMT-Net on COCO-LT, the paper's setting (same recipe as configs/hmt_voc.py; COCO tree under
``--config.data.root`` or ``$LTJAX_DATA_DIR/coco``).  arg: "rs" (default) or "uniform"."""
import hmt_voc


def get_config(arg=None):
    return hmt_voc.hmt_config("coco_lt", arg)
