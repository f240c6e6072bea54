"""Keep Hugging Face Hub clients offline while a model is built from local files.

Nothing in clip2scene downloads weights at run time: a missing file must fail at once with our own
message (naming the file and how to provide it), not after a network timeout deep inside a library.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Within the block, Hugging Face Hub (and transformers) make no network calls.

    Sets ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` and, because ``huggingface_hub`` reads the
    variable once at import, its ``constants.HF_HUB_OFFLINE`` flag too; all are restored afterwards.
    """
    saved_env = {name: os.environ.get(name) for name in _OFFLINE_VARIABLES}
    os.environ.update({name: "1" for name in _OFFLINE_VARIABLES})
    try:
        from huggingface_hub import constants as hub_constants
    except ImportError:  # no hub client installed: nothing else can go online
        hub_constants = None
    saved_flag = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_flag
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
