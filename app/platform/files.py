"""Files and directories of the appliance's own that only their owner may read.

The data dir holds the database, keys, secrets and logs: it and what the
appliance writes into it are kept from other local users (0700 directories,
0600 files). A path owned by someone else (a volume prepared by hand) is
left as it is: changing it would fail, and its owner chose its mode.
"""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> None:
    """Make `path` a directory only its owner can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _owner_only(path, 0o700)


def private_file(path: Path) -> None:
    """Make `path` a file only its owner can read and write (created empty
    if missing, in a private directory if that is missing too)."""
    if not path.parent.exists():
        private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    _owner_only(path, 0o600)


def _owner_only(path: Path, mode: int) -> None:
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        path.chmod(mode)
