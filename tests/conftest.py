import os

# Tests run on the CPU; the multi-device tests start their own subprocesses with more devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
