import sys

from luna_lra.sweep.cli import main

sys.exit(main())
