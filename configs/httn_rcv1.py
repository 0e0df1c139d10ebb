"""HTTN on RCV1 (RCV1-V2, 103 topics), the paper's setting: ``configs/httn_aapd.py``'s recipe with 28 tail labels
(the paper also runs 14: ``:httn,14``) and t = 5, on ``text_train`` / ``label_train`` / ``text_test`` /
``label_test`` line files under ``--config.data.root`` (or ``$LTJAX_DATA_DIR/rcv1``)."""
import httn_aapd


def get_config(arg=None):
    return httn_aapd.httn_config("rcv1", arg, l_tail=28, shots=5, where="configs/httn_rcv1.py")
