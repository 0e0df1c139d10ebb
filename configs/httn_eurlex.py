"""HTTN on EUR-Lex (3,956 labels), the paper's setting: ``configs/httn_aapd.py``'s recipe with 1,238 tail labels
(the paper also runs 768: ``:httn,768``) and t = 1 document per prototype, on the AttentionXML-style line files
``train_texts.txt`` / ``train_labels.txt`` / ``test_texts.txt`` / ``test_labels.txt`` under
``--config.data.root`` (or ``$LTJAX_DATA_DIR/eurlex``)."""
import httn_aapd


def get_config(arg=None):
    return httn_aapd.httn_config("eurlex", arg, l_tail=1238, shots=1, text_file="{split}_texts.txt",
                                 label_file="{split}_labels.txt", where="configs/httn_eurlex.py")
