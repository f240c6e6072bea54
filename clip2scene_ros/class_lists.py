"""Background encoding of class lists for the node: the latest request wins.

``ros2 param set`` returns at once; the encoding (seconds, or minutes for 1,024 classes with the
85-template ensemble) runs on one daemon thread. A newer request cancels the one running (it stops
within `clip2scene_core.segmenter.ENCODE_CHUNK` classes) and replaces any queued one, so a later
change is never stuck behind an earlier one, and stopping the node does not wait for an encode.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Sequence

from clip2scene_core.segmenter import EncodingCancelled


class ClassListEncoder:
    """Encodes the newest requested class list with ``segmenter.encode_classes``.

    ``on_done(space)`` runs on the encoder thread for each encode that finished and is still the
    newest request; ``on_error(message)`` when one failed.
    """

    def __init__(self, segmenter: Any, on_done: Callable[[Any], None],
                 on_error: Callable[[str], None]) -> None:
        self._segmenter = segmenter
        self._on_done, self._on_error = on_done, on_error
        self._condition = threading.Condition()
        self._request: Optional[tuple[int, list[str], Optional[list[str]]]] = None
        self._latest = 0
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="clip2scene-text", daemon=True)
        self.thread.start()

    def request(self, classes: Sequence[str], templates: Optional[Sequence[str]]) -> int:
        """Queue an encode, cancelling any older one; returns the request's number."""
        with self._condition:
            self._latest += 1
            self._request = (self._latest, list(classes), list(templates) if templates else None)
            self._condition.notify()
            return self._latest

    def stop(self) -> None:
        """Cancel everything; the thread ends within one encode step (it is not waited for)."""
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _superseded(self, number: int) -> bool:
        return self._stopped or number != self._latest

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._stopped or self._request is not None)
                if self._stopped:
                    return
                number, classes, templates = self._request
                self._request = None
            try:
                space = self._segmenter.encode_classes(classes, templates,
                                                       cancelled=lambda: self._superseded(number))
            except EncodingCancelled:
                continue
            except Exception as error:  # keep serving with the previous list, and say why
                if not self._superseded(number):
                    self._on_error(f"could not encode the class list {classes[:8]}: {error}")
                continue
            if not self._superseded(number):
                self._on_done(space)
