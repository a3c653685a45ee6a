"""Read-only log stores for real, even as root (tests run as root, and root writes any file whatever
its mode): a command runs in a new user namespace (`unshare`), where the store is either

- `read_only_mount`: bind-mounted read-only over itself (EROFS, what a backup on read-only media
  gives), or
- `other_owner`: owned by another uid with the usual 755/644 modes; the namespace's root has no
  capability over files of a uid it does not map (a store directory of another user).

`command(...)` is the argv prefix that runs a command so; `available()` says whether this machine
allows unprivileged user namespaces.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

WAYS = ("read_only_mount", "other_owner")
OTHER_UID = 4242


@functools.cache
def available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


def command(root: Path, how: str) -> list[str]:
    """The argv prefix running a command with everything under `root` read-only, `how`-wise (for
    other_owner, this chowns the tree now)."""
    root = Path(root)
    namespace = ["unshare", "--user", "--map-root-user"]
    if how == "read_only_mount":
        return [*namespace, "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(root)]
    if how == "other_owner":
        for path in (root, *root.rglob("*")):
            os.chown(path, OTHER_UID, OTHER_UID)
            path.chmod(0o755 if path.is_dir() else 0o644)
        return namespace
    raise ValueError(f"unknown way {how!r}")
