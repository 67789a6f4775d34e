"""Is the state dir usable? Checked before a command does any work, so a state dir that is a
file or read-only is one line and exit 2, not a traceback after the images were built."""

from __future__ import annotations

import os
from pathlib import Path

from ci.core.errors import UsageError


def check_state_dir(path: Path) -> None:
    """Raise UsageError unless `path` is a writable folder, or could be made one (its nearest
    existing ancestor is a writable folder). Creates nothing."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            what = "a dangling symlink" if not path.exists() else "not a directory"
            raise UsageError(f"project.state_dir: {str(path)!r} is {what}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"project.state_dir: {str(path)!r} is not writable")
        return
    parent = path.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"project.state_dir: cannot create {str(path)!r}: "
                         f"{str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"project.state_dir: cannot create {str(path)!r}: "
                         f"{str(parent)!r} is not writable")
