"""Benchmarks, one module per benchmark, run as `python -m luna_lra.benchmark COMMAND`:

  kernels  Luna's pack/unpack attention cores: Pallas vs the XLA path vs jax.nn (kernels.py)
  model    training-step speed and memory of Transformer vs Luna as n grows (model.py)
  step     the Luna training step of this tree vs a baseline checkout, side by side (step.py)
  official the Luna training step vs the official PyTorch Luna (fairseq-apollo), side by side
           (official.py; needs PyTorch)
  gpu      everything a fresh GPU machine should measure, in one call (gpu.py)

measure.py holds what they share: timing, memory, out-of-memory detection, provenance.
"""
