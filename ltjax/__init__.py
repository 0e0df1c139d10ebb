"""ltjax: long-tailed multi-label classification in JAX/Flax."""

__version__ = "0.1.0"
