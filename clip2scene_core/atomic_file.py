"""Write torch files so that readers (and concurrent writers) never see half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch


class AtomicWriteError(OSError):
    """A file could not be written (read-only or full disk, ...); the previous file is unchanged."""


def torch_save_atomically(obj: Any, path: Union[str, Path], durable: bool = False) -> Path:
    """``torch.save(obj)`` to a temporary file beside ``path``, then rename it over ``path``.

    ``durable`` also flushes the file to the disk before the rename (checkpoints: a crash right
    after must not leave an empty file behind). Raises `AtomicWriteError` naming ``path`` and the
    reason when the folder or the disk refuses; ``path`` then keeps its previous content.
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).strip()
        code = error.errno if isinstance(error, OSError) else None
        raise AtomicWriteError(code, f"cannot write {path}: {reason.splitlines()[0] if reason else error!r}"
                                     f" (any previous {path.name} is unchanged)") from error
    except BaseException:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise
    return path
