"""LDRNet on ODIR-5K with the paper's setting (seed 004; ``ltjax/methods/ldrnet.py``).

arg: "full" (default), "stage1", "uniform" or "no_prompt", as configs/ldrnet_chestxray14.py, whose setting
this is (DenseNet-121, 512 -> 448, Adam 1e-4 with L2 1e-5, batch 32, patient-level 7:1:2 split) with
ODIR-5K's data: one example per fundus image with the patient's 8 labels, the groups and ODIR scores of
configs/odir5k.py (kappa, F1, AUC at 0.5 and their mean, the final score), stage 1 30 epochs, and the
checkpoint chosen on the validation part by the challenge's final score (``train.select_on="val:odir_final"``).  Needs the
ODIR-5K training release under ``--config.data.root`` or ``$LTJAX_DATA_DIR/odir5k``.
"""
import ldrnet_chestxray14
import odir5k

DATASET = "odir5k"


def get_config(arg=None):
    c = ldrnet_chestxray14.ldrnet_config(DATASET, 30, arg or "full")
    base = odir5k.get_config("ldrnet")
    c.data.groups = base.data.groups
    c.train.select_on = "val:odir_final"
    return c
