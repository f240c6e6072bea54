"""The node's worker and class-list swap without ROS (clip2scene_core.cloud_stream): a cloud is never
labelled with a list that was not announced first, the latest list and the newest cloud win, thing
classes swap with their list, and failures are reported without stopping the stream."""
from __future__ import annotations

import threading
import time

import torch

from clip2scene_core.cloud_stream import ClassListEncoder, CloudStream
from clip2scene_core.segmenter import ClassSpace, EncodingCancelled

WAIT = 10.0  # generous upper bound for a background thread to react; never asserted as a time


class FakeSegmenter:
    """Stands in for Segmenter's class-list API: one ``step`` of sleep per class, honouring ``cancelled``."""

    def __init__(self, step: float = 0.0, names=("car", "road"), things=()) -> None:
        self.step, self.started, self.finished, self.activated = step, [], [], []
        self._lock = threading.Lock()
        self._version = 0
        self.class_space = ClassSpace(tuple(names), torch.zeros(len(names), 4), 0, things)

    def encode_classes(self, classes, templates, cancelled, thing_classes=None):
        self.started.append(list(classes))
        if classes == ["bad"]:
            raise OSError("disk full")
        for _ in classes:
            if cancelled():
                raise EncodingCancelled("cancelled")
            time.sleep(self.step)
        self.finished.append(list(classes))
        with self._lock:
            self._version += 1
            things = tuple(classes.index(name) for name in thing_classes or [])
            return ClassSpace(tuple(classes), torch.zeros(len(classes), 4), self._version, things)

    def set_class_space(self, space: ClassSpace) -> None:
        self.activated.append(space.version)
        self.class_space = space


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Recorder:
    """A stream's callbacks, recording what happened in order."""

    def __init__(self, block: threading.Event = None) -> None:
        self.events, self.failures, self.errors, self.started = [], [], [], []
        self.block = block

    def process(self, cloud, space) -> None:
        self.started.append(cloud)
        if self.block is not None:
            self.block.wait(WAIT)
        if cloud == "bad":
            raise ValueError("malformed cloud")
        self.events.append(("process", cloud, space.version, space.names, space.thing_names))

    def announce(self, space) -> None:
        self.events.append(("announce", space.version, space.names))

    def stream(self, segmenter, **options) -> CloudStream:
        return CloudStream(segmenter, self.process, self.announce, self.failures.append,
                           self.errors.append, **options)

    def processed(self) -> list:
        return [event for event in self.events if event[0] == "process"]


def test_a_newer_class_list_cancels_the_running_encode_and_wins():
    segmenter = FakeSegmenter(step=0.01)
    done, errors = [], []
    encoder = ClassListEncoder(segmenter, done.append, errors.append)
    huge = [f"class {i}" for i in range(1024)]
    encoder.request(huge, None)
    wait_until(lambda: segmenter.started, "the huge encode to start")
    encoder.request(["a"], None)
    encoder.request(["b", "c"], None, ["b"])  # replaces the queued ["a"] before it starts
    wait_until(lambda: done, "the newest list")
    assert [(space.names, space.thing_names) for space in done] == [(("b", "c"), ("b",))]
    assert not errors and huge not in segmenter.finished and ["a"] not in segmenter.finished
    encoder.request(huge, None)
    encoder.stop()
    encoder.thread.join(timeout=WAIT)
    assert not encoder.thread.is_alive()


def test_encoding_errors_are_reported_and_the_encoder_goes_on():
    done, errors = [], []
    encoder = ClassListEncoder(FakeSegmenter(), done.append, errors.append)
    encoder.request(["bad"], None)
    wait_until(lambda: errors, "the error")
    encoder.request(["good"], None)
    wait_until(lambda: done, "the good list")
    encoder.stop()
    assert [space.names for space in done] == [("good",)]
    assert len(errors) == 1 and "disk full" in errors[0]


def test_no_cloud_is_labelled_with_a_list_that_was_not_announced_first():
    segmenter = FakeSegmenter(step=0.001)
    recorder = Recorder()
    stream = recorder.stream(segmenter)
    try:
        for index in range(200):
            stream.submit(index)
            if index % 20 == 0:
                stream.request_classes([f"name {index}", "other"])
            time.sleep(0.001)
        stream.request_classes(["last"])
        wait_until(lambda: stream.active.names == ("last",), "the last list")
        stream.submit("final")
        wait_until(lambda: recorder.processed() and recorder.processed()[-1][1] == "final", "the last cloud")
    finally:
        stream.stop(WAIT)
    announced = set()
    for event in recorder.events:
        if event[0] == "announce":
            assert event[1] not in announced, "a list announced twice"
            announced.add(event[1])
        else:
            assert event[2] in announced, f"cloud {event[1]} labelled with list v{event[2]} before its announcement"
    assert recorder.events[0] == ("announce", 0, ("car", "road"))  # the initial list, before any cloud
    assert recorder.processed()[-1][2:4] == (stream.active.version, ("last",))
    assert segmenter.activated == sorted(segmenter.activated)  # versions only ever go forward
    assert segmenter.class_space is stream.active
    assert not recorder.failures and not recorder.errors


def test_the_latest_request_wins_and_older_ones_are_never_announced():
    segmenter = FakeSegmenter(step=0.005)
    recorder = Recorder()
    stream = recorder.stream(segmenter)
    try:
        stream.request_classes([f"class {i}" for i in range(1024)])
        wait_until(lambda: segmenter.started, "the huge encode to start")
        stream.request_classes(["a"])
        stream.request_classes(["b", "c"])
        wait_until(lambda: stream.active.names == ("b", "c"), "the newest list")
        stream.submit("cloud")
        wait_until(recorder.processed, "the cloud")
    finally:
        stream.stop(WAIT)
    announced = [event[2] for event in recorder.events if event[0] == "announce"]
    assert announced == [("car", "road"), ("b", "c")]
    assert recorder.processed()[0][3] == ("b", "c")


def test_thing_classes_become_active_with_their_list():
    recorder = Recorder()
    stream = recorder.stream(FakeSegmenter(things=(0,)))
    try:
        stream.submit("first")
        wait_until(lambda: len(recorder.processed()) == 1, "the first cloud")
        stream.request_classes(["truck", "road"], thing_classes=["truck"])
        wait_until(lambda: stream.active.names == ("truck", "road"), "the new list")
        stream.submit("second")
        wait_until(lambda: len(recorder.processed()) == 2, "the second cloud")
    finally:
        stream.stop(WAIT)
    first, second = recorder.processed()
    assert first[3:] == (("car", "road"), ("car",))
    assert second[3:] == (("truck", "road"), ("truck",))


def test_the_newest_cloud_replaces_a_waiting_one_and_counts_as_dropped():
    release = threading.Event()
    recorder = Recorder(block=release)
    stream = recorder.stream(FakeSegmenter())
    try:
        assert stream.submit(1) is False
        wait_until(lambda: recorder.started, "the worker to take cloud 1")
        assert stream.submit(2) is False  # waits while 1 is processed
        assert stream.submit(3) is True  # replaces 2: a drop
        release.set()
        wait_until(lambda: len(recorder.processed()) == 2, "two clouds")
    finally:
        stream.stop(WAIT)
    assert [event[1] for event in recorder.processed()] == [1, 3]


def test_failures_are_reported_and_the_stream_goes_on():
    recorder = Recorder()
    stream = recorder.stream(FakeSegmenter())
    try:
        stream.submit("bad")
        wait_until(lambda: recorder.failures, "the failure")
        stream.request_classes(["bad"])  # cannot be encoded: reported, the old list stays
        wait_until(lambda: recorder.errors, "the encode error")
        stream.submit("good")
        wait_until(recorder.processed, "the good cloud")
    finally:
        stream.stop(WAIT)
    assert [str(error) for error in recorder.failures] == ["malformed cloud"]
    assert len(recorder.errors) == 1 and "disk full" in recorder.errors[0]
    assert recorder.processed()[0][1:4] == ("good", 0, ("car", "road"))


def test_clouds_that_wait_for_cameras_come_from_ready():
    arrived = []
    recorder = Recorder()
    stream = recorder.stream(FakeSegmenter(), ready=lambda: arrived.pop() if arrived else None,
                             poll_period=0.01)
    try:
        arrived.append("paired")
        stream.wake()
        wait_until(recorder.processed, "the paired cloud")
    finally:
        stream.stop(WAIT)
    assert recorder.processed()[0][1] == "paired"


def test_stop_ends_both_threads():
    stream = Recorder().stream(FakeSegmenter(step=0.01))
    stream.request_classes([f"class {i}" for i in range(1024)])
    stream.stop(WAIT)
    stream.encoder.thread.join(timeout=WAIT)
    assert stream.stopped and not stream.worker.is_alive() and not stream.encoder.thread.is_alive()
