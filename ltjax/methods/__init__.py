"""Methods: a model, its loss, its phases and method state, and how predictions are scored, selected by
``config.method.name`` (registry ``METHODS``).

* ``base.py``: the contract (:class:`Method`, :class:`TrainPhase`, :class:`PassPhase`) and shared parts;
* ``baselines.py``: the loss baselines (bce, rw, rs, focal, cb_focal, r_bce, r_bce_ntr, db_focal, asl,
  ldam, zlpr, gce);
* ``hmt.py``: HMT-Net (paper 000);
* ``decoupled.py``: the decoupling baselines of Kang et al. (crt, lws, tau_norm, ncm), phased methods.
* ``cssfe.py``: CSSFE (CAMs refined by label-embedding attention head -> medium -> tail) and its ablations.
* ``ldrnet.py``: LDRNet (label queries + prompt over backbone tokens, class Gaussians, EM fine-tuning).
* ``comic.py``: COMIC (label corrector, multi-focal modifier, head-tail balancer; partial labels).
* ``httn.py``: HTTN / EHTTN (head-to-tail transfer of classifier weights, text) and imprinting.
* ``partial_label.py``: the partial-label baselines (``hill``: the Hill loss and SPLC; ``pseudo_label``).
"""
from ltjax.methods import baselines, comic, cssfe, decoupled, hmt, httn, ldrnet, partial_label  # noqa: F401  (each registers its methods)
from ltjax.methods.base import (  # noqa: F401
    MAIN_STREAM,
    METHODS,
    Method,
    PassContext,
    PassPhase,
    PassResult,
    TrainPhase,
    phase_config,
    sigmoid_scores,
    standard_model,
)
from ltjax.methods.baselines import CLASS_AWARE, loss_method  # noqa: F401


def method_defaults(name: str):
    return METHODS.get(name).defaults()
