import os
import sys

# Tests run on the CPU; the multi-device tests start their own subprocesses with more devices.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
