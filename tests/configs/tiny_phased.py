"""tests/configs/tiny_synthetic.py with a phased method. arg: the method name (default "ncm"); every
second training phase runs 1 epoch."""
from ltjax.defaults import experiment_config
from ltjax.methods import METHODS

import tiny_synthetic  # the sibling config


def get_config(arg=None):
    name = arg or "ncm"
    c = tiny_synthetic.get_config(2)
    base = experiment_config("synthetic_lt", "mlp", name)
    c.method = base.method
    for phase in c.method.get("phases", {}):
        if phase != "joint":
            c.method.phases[phase].epochs = 1
    for path, value in METHODS.get(name).config_updates.items():
        section, field = path.split(".")
        c[section][field] = value
    return c
