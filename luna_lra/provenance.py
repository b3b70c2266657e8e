"""Where a number came from: the git commit of this checkout, for results files."""

from __future__ import annotations

import os
import subprocess


def git_commit() -> str:
    """Short commit hash, "-dirty" when tracked files outside results/ differ from it;
    "unknown" outside git."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        # results/ is where runs write their tables: changes there do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":/", ":(exclude,top)results"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if out.returncode != 0:
            return "unknown"
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
