"""luna_lra: Long Range Arena in JAX/Flax around Luna (Ma et al., NeurIPS 2021)."""

__version__ = "0.1.0"
