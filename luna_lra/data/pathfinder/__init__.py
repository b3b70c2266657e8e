"""Pathfinder and Path-X (LRA). This package is the task module the trainer loads: its names
below are the reader's (`reader`). `generator` (the original generator's process) and `raster`
(its pixels) make images, `writer` writes data sets of them in the release layout, and
`fidelity` compares two image sets and builds reference sets with the original code. Imports
run one way: raster <- generator <- writer <- reader <- fidelity."""

from luna_lra.data.pathfinder.reader import (LEVEL_DIRS, SPLITS, TASK, load_splits,
                                             metadata_files, prepare_if_missing, read_metadata,
                                             split_bounds)

__all__ = ["LEVEL_DIRS", "SPLITS", "TASK", "load_splits", "metadata_files",
           "prepare_if_missing", "read_metadata", "split_bounds"]
