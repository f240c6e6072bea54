"""Labelling a stream of clouds while the class list changes: newest cloud first, lists swapped between clouds.

This is the ROS node's concurrency without ROS (the node only wires it to topics and parameters), so
its ordering rules are tested without starting anything:

* **Newest cloud wins.** `CloudStream.submit` keeps one cloud waiting (queue depth 1); a cloud that
  replaces a waiting one is reported as dropped. One worker thread runs ``process`` on it, so
  callbacks never wait for the network.
* **Latest class list wins.** `ClassListEncoder` encodes requested lists on its own thread (seconds,
  or minutes for 1,024 classes with the 85-template ensemble). A newer request cancels the running
  encode (it stops within `clip2scene_core.segmenter.ENCODE_CHUNK` classes) and replaces a queued
  one; a failed encode is reported and the previous list stays active.
* **Announce before use.** An encoded list is swapped in by the worker between two clouds, and
  ``announce`` runs for a list before the first cloud labelled with it, so whoever reads the output
  has always seen the list its labels index.
* **Thing classes travel with their list.** A request names which of its classes form objects
  (``thing_classes``); they are part of the encoded `ClassSpace`, so they become active with the
  list, in the same swap, and reach ``process`` with it.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar

from clip2scene_core.segmenter import ClassSpace, EncodingCancelled

Cloud = TypeVar("Cloud")


class ClassListEncoder:
    """Encodes the newest requested class list with ``segmenter.encode_classes`` on a daemon thread.

    ``on_done(space)`` runs on the encoder thread with the `ClassSpace` of each encode that finished
    and is still the newest request; ``on_error(message)`` when one failed (the encoder goes on with later requests).
    """

    def __init__(self, segmenter: Any, on_done: Callable[[ClassSpace], None],
                 on_error: Callable[[str], None]) -> None:
        self._segmenter = segmenter
        self._on_done, self._on_error = on_done, on_error
        self._condition = threading.Condition()
        self._request: Optional[tuple[int, list[str], Optional[list[str]], Optional[list[str]]]] = None
        self._latest = 0
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="clip2scene-text", daemon=True)
        self.thread.start()

    def request(self, classes: Sequence[str], templates: Optional[Sequence[str]],
                thing_classes: Optional[Sequence[str]] = None) -> int:
        """Queue an encode of ``classes`` (``templates``: None = the segmenter's; ``thing_classes``:
        None = the vocabulary's things in the list), cancelling any older one. Returns the request's
        number."""
        with self._condition:
            self._latest += 1
            self._request = (self._latest, list(classes), list(templates) if templates else None,
                             list(thing_classes) if thing_classes is not None else None)
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
                number, classes, templates, things = self._request
                self._request = None
            try:
                space = self._segmenter.encode_classes(classes, templates, thing_classes=things,
                                                       cancelled=lambda: self._superseded(number))
            except EncodingCancelled:
                continue
            except Exception as error:  # keep serving with the previous list, and say why
                if not self._superseded(number):
                    self._on_error(f"could not encode the class list {classes[:8]}: {error}")
                continue
            if not self._superseded(number):
                self._on_done(space)


class CloudStream(Generic[Cloud]):
    """One worker thread that labels the newest cloud with the newest announced class list.

    Args:
        segmenter: a `clip2scene_core.segmenter.Segmenter` (or anything with its ``class_space``,
            ``set_class_space`` and ``encode_classes``); its active list is the initial one.
        process: ``process(cloud, space)`` labels one cloud with the `ClassSpace` ``space`` (runs on
            the worker thread).
        announce: ``announce(space)`` makes a list known before the first cloud labelled with
            it (called once per version, on the worker thread; the initial list at construction).
        on_failure: ``on_failure(error)`` for an exception raised by ``process`` or ``ready``
            while the stream is running; the worker goes on with the next cloud.
        on_error: ``on_error(message)`` when a requested class list could not be encoded.
        ready: for clouds that wait for something else (e.g. camera images): called on every
            wake-up, returns the cloud to process now or None; clouds then reach the stream through
            ``ready`` instead of `submit`, and `wake` says that something changed.
        poll_period: seconds between wake-ups when nothing arrives (with ``ready``, how often it
            is asked).
    """

    def __init__(self, segmenter: Any, process: Callable[[Cloud, ClassSpace], None],
                 announce: Callable[[ClassSpace], None], on_failure: Callable[[BaseException], None],
                 on_error: Callable[[str], None], ready: Optional[Callable[[], Optional[Cloud]]] = None,
                 poll_period: float = 0.5) -> None:
        self._segmenter = segmenter
        self._process, self._announce, self._on_failure = process, announce, on_failure
        self._ready, self._poll_period = ready, poll_period
        self._stopped = threading.Event()
        self._condition = threading.Condition()
        self._pending_cloud: Optional[Cloud] = None
        self._pending_list: Optional[ClassSpace] = None
        self._active: ClassSpace = segmenter.class_space
        self._announced_version: Optional[int] = None
        self._announce_once(self._active)
        self.encoder = ClassListEncoder(segmenter, self._on_encoded, on_error)
        self.worker = threading.Thread(target=self._work, name="clip2scene-segment", daemon=True)
        self.worker.start()

    @property
    def active(self) -> ClassSpace:
        """The class list the next cloud is labelled with."""
        with self._condition:
            return self._active

    def submit(self, cloud: Cloud) -> bool:
        """Queue ``cloud`` for the worker, replacing a waiting one; True when one was replaced (dropped)."""
        with self._condition:
            replaced = self._pending_cloud is not None
            self._pending_cloud = cloud
            self._condition.notify()
            return replaced

    def wake(self) -> None:
        """Have the worker ask ``ready`` now (something it waits for arrived)."""
        with self._condition:
            self._condition.notify()

    def request_classes(self, classes: Sequence[str], templates: Optional[Sequence[str]] = None,
                        thing_classes: Optional[Sequence[str]] = None) -> int:
        """Encode ``classes`` (with their ``thing_classes``, as for `ClassListEncoder.request`) in the
        background and swap them in between two clouds; a newer request cancels this one. Returns
        the request's number."""
        return self.encoder.request(classes, templates, thing_classes)

    def stop(self, wait: float) -> None:
        """Stop both threads; waits at most ``wait`` s for a cloud in progress (an encode is not
        waited for: it ends within one step)."""
        self._stopped.set()
        self.encoder.stop()
        with self._condition:
            self._condition.notify_all()
        self.worker.join(timeout=wait)

    @property
    def stopped(self) -> bool:
        """True once `stop` was called."""
        return self._stopped.is_set()

    def _on_encoded(self, space: ClassSpace) -> None:
        with self._condition:
            if self._pending_list is None or space.version > self._pending_list.version:
                self._pending_list = space
            self._condition.notify()

    def _announce_once(self, space: ClassSpace) -> None:
        if space.version != self._announced_version:
            self._announce(space)
            self._announced_version = space.version

    def _swap(self, space: Optional[ClassSpace]) -> ClassSpace:
        """Make a newer encoded list active (announcing it first); returns the active list."""
        if space is not None and space.version > self._active.version:
            self._segmenter.set_class_space(space)
            with self._condition:
                self._active = space
        self._announce_once(self._active)
        return self._active

    def _work(self) -> None:
        while not self._stopped.is_set():
            with self._condition:
                self._condition.wait_for(
                    lambda: self._stopped.is_set() or self._pending_cloud is not None
                    or self._pending_list is not None, timeout=self._poll_period)
                cloud, space = self._pending_cloud, self._pending_list
                self._pending_cloud = self._pending_list = None
            if self._stopped.is_set():
                return
            try:
                if self._ready is not None:
                    cloud = self._ready()
                active = self._swap(space)
                if cloud is not None:
                    self._process(cloud, active)
            except Exception as error:  # never let one cloud stop the stream
                if self._stopped.is_set():
                    return  # interrupted while stopping: nothing is wrong
                self._on_failure(error)
