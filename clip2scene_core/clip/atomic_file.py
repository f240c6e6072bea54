"""Write torch files so that readers (and concurrent writers) never see half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch


def torch_save_atomically(obj: Any, path: Union[str, Path]) -> Path:
    """``torch.save(obj)`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path
