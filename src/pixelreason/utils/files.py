"""Crash-safe writing: nothing a user saved is lost if the process dies mid-write."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process's umask, read once at import: the temporary files and directories below are
#: created private (0600, 0700), and get the modes a plain `open` or `mkdir` would give them
#: before they take their final name, so that a saved model stays readable to whom the user's
#: umask allows (another account, a server running as another user).
_UMASK = _process_umask()


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `target` only if the block succeeds.

    The old `target`, if any, stays intact until the new one is complete; a crash leaves either
    the old directory or the new one (plus a `.old` sibling at worst), never a half-written one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(staging, 0o777 & ~_UMASK)
        yield staging
        _settle_tree(staging)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _settle_tree(root: Path) -> None:
    """Flush every file under `root` to disk and give files and directories the modes of the
    user's umask (writers such as safetensors also stage in private temporary files)."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(path, 0o666 & ~_UMASK)
        elif path.is_dir():
            os.chmod(path, 0o777 & ~_UMASK)
