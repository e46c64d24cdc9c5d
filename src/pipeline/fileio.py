"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import NoSpace


NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename it over ``path``.

    A full disk (or quota, or file size limit) raises :class:`NoSpace` with one line, and ``path`` keeps
    its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in NO_ROOM:
            raise NoSpace(path, err) from err
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def point_symlink(link: Path, target_name: str) -> None:
    """Make ``link`` a relative symlink to ``target_name`` (a sibling), replacing it atomically."""
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target_name)
    os.replace(tmp, link)


def file_digest(path: str | Path, length: int = 16) -> str:
    """sha256 of a file's bytes, shortened: the id of a tokenizer (or any checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
