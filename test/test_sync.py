"""LiDAR-anchored camera collector, driven by scripted arrival orders on a fake clock."""
from __future__ import annotations

import threading

import pytest

from clip2scene_ros.sync import CameraCollector, CollectorConfig

MS = 1_000_000  # ns
CONFIG = CollectorConfig(tolerance_ns=30 * MS, timeout_ns=100 * MS, image_buffer=8, max_pending=3,
                         queue_depth=1, reset_jump_ns=1000 * MS)


def _collector(cameras=("front", "left"), config=CONFIG):
    # The clock must never be read implicitly: every call below passes `now`.
    def forbidden_clock() -> int:
        raise AssertionError("the collector read its clock although `now` was given")
    return CameraCollector(cameras, config, clock=forbidden_clock)


def _image_stamps(synced):
    return {name: None if image is None else image.stamp // MS for name, image in synced.images.items()}


def test_cloud_is_released_with_nearest_images_once_every_camera_is_settled():
    c = _collector()
    for stamp in (960, 990, 1020):
        c.add_image("front", stamp * MS, f"front@{stamp}", now=0)
    c.add_image("left", 985 * MS, "left@985", now=0)
    c.add_cloud(1000 * MS, "cloud", now=1 * MS)
    assert c.poll(now=2 * MS) == []  # left has nothing at/after 1000 ms: a nearer image may come
    c.add_image("left", 1008 * MS, "left@1008", now=3 * MS)
    (synced,) = c.poll(now=4 * MS)
    assert synced.cloud == "cloud" and synced.stamp == 1000 * MS
    assert _image_stamps(synced) == {"front": 990, "left": 1008}
    assert synced.images["front"].msg == "front@990"
    assert synced.missing == () and synced.waited_ns == 3 * MS
    assert c.poll(now=5 * MS) == []


def test_late_camera_is_waited_for_until_the_timeout():
    c = _collector()
    c.add_image("front", 1000 * MS, "f", now=0)
    c.add_cloud(1000 * MS, "cloud", now=10 * MS)
    assert c.poll(now=109 * MS) == []
    c.add_image("left", 1012 * MS, "l", now=109 * MS)  # late but inside the timeout
    (synced,) = c.poll(now=109 * MS)
    assert synced.missing == () and _image_stamps(synced)["left"] == 1012


def test_missing_camera_does_not_hold_back_the_cloud_past_the_timeout():
    c = _collector()
    c.add_image("front", 1001 * MS, "f", now=0)
    c.add_cloud(1000 * MS, "cloud", now=10 * MS)
    assert c.poll(now=109 * MS) == []
    (synced,) = c.poll(now=110 * MS)
    assert synced.missing == ("left",) and _image_stamps(synced) == {"front": 1001, "left": None}
    assert synced.waited_ns == 100 * MS
    assert c.stats().missing == {"front": 0, "left": 1}


def test_image_outside_the_tolerance_counts_as_missing():
    c = _collector()
    c.add_image("front", 1031 * MS, "far", now=0)  # settles front, but 31 ms > 30 ms tolerance
    c.add_image("left", 970 * MS, "edge", now=0)  # exactly at the tolerance: pairs
    c.add_image("left", 1040 * MS, "later", now=0)
    c.add_cloud(1000 * MS, "cloud", now=0)
    (synced,) = c.poll(now=0)
    assert _image_stamps(synced) == {"front": None, "left": 970}


def test_a_camera_stuck_before_the_cloud_pairs_its_last_image_at_the_timeout():
    c = _collector()
    c.add_image("front", 1000 * MS, "f", now=0)
    c.add_image("left", 980 * MS, "l", now=0)
    c.add_cloud(1000 * MS, "cloud", now=0)
    assert c.poll(now=99 * MS) == []
    (synced,) = c.poll(now=100 * MS)
    assert _image_stamps(synced) == {"front": 1000, "left": 980}


def test_out_of_order_images_and_clouds_are_sorted_by_stamp():
    config = CollectorConfig(tolerance_ns=30 * MS, timeout_ns=100 * MS, queue_depth=2)
    c = _collector(cameras=("front",), config=config)
    for stamp in (1050, 990, 1005, 1020):  # arrival order differs from stamp order
        c.add_image("front", stamp * MS, stamp, now=0)
    c.add_cloud(1100 * MS, "second", now=0)
    c.add_cloud(1000 * MS, "first", now=0)  # the older stamp arrives later
    both = c.poll(now=100 * MS)
    assert [s.cloud for s in both] == ["first", "second"]
    assert [_image_stamps(s)["front"] for s in both] == [1005, None]


def test_cloud_older_than_the_last_released_one_is_dropped():
    c = _collector(cameras=())
    c.add_cloud(1000 * MS, "a", now=0)
    assert [s.cloud for s in c.poll(now=0)] == ["a"]
    c.add_cloud(900 * MS, "stale", now=1)
    c.add_cloud(1000 * MS, "repeat", now=1)
    assert c.poll(now=2) == []
    stats = c.stats()
    assert stats.dropped_out_of_order == 2 and stats.resets == 0


def test_newest_cloud_wins_when_the_consumer_lags():
    c = _collector(cameras=())
    for i in range(3):
        c.add_cloud((1000 + 100 * i) * MS, f"cloud{i}", now=i)
    (synced,) = c.poll(now=10)
    assert synced.cloud == "cloud2"
    stats = c.stats()
    assert (stats.clouds, stats.released, stats.dropped_superseded, stats.pending) == (3, 1, 2, 0)


def test_pending_clouds_are_bounded():
    c = _collector(cameras=("front",))
    for i in range(5):  # no images: every cloud waits
        c.add_cloud((1000 + 100 * i) * MS, f"cloud{i}", now=i)
    stats = c.stats()
    assert stats.pending == CONFIG.max_pending and stats.dropped_superseded == 2
    (synced,) = c.poll(now=200 * MS)
    assert synced.cloud == "cloud4" and synced.missing == ("front",)


def test_image_ring_buffer_keeps_the_newest_images():
    c = _collector(cameras=("front",), config=CollectorConfig(image_buffer=3, tolerance_ns=30 * MS))
    for stamp in (1000, 1010, 1020, 1030, 1040):
        c.add_image("front", stamp * MS, stamp, now=0)
    c.add_cloud(1000 * MS, "cloud", now=0)  # its exact image fell out of the 3-image buffer
    (synced,) = c.poll(now=0)
    assert _image_stamps(synced)["front"] == 1020


def test_clock_going_backwards_resets():
    c = _collector()
    c.add_image("front", 1000 * MS, "f", now=50 * MS)
    c.add_cloud(1000 * MS, "cloud", now=50 * MS)
    assert c.poll(now=60 * MS) == []
    assert c.poll(now=10 * MS) == []  # clock went back (e.g. sim time restarted): start over
    stats = c.stats()
    assert (stats.resets, stats.dropped_on_reset, stats.pending) == (1, 1, 0)
    c.add_cloud(1000 * MS, "again", now=11 * MS)  # the cloud stream may restart where it was
    (synced,) = c.poll(now=111 * MS)
    assert synced.cloud == "again" and synced.missing == ("front", "left")  # old images are gone


def test_stamps_jumping_back_reset_and_resume_on_the_new_timeline():
    c = _collector(cameras=("front",))
    c.add_image("front", 5000 * MS, "old image", now=0)
    c.add_cloud(5000 * MS, "old", now=0)
    assert [s.cloud for s in c.poll(now=1)] == ["old"]
    c.add_image("front", 10 * MS, "new image", now=2)  # bag looped: camera first
    assert c.stats().resets == 1
    c.add_cloud(10 * MS, "new", now=3)  # not "out of order": the reset forgot the old timeline
    (synced,) = c.poll(now=4)
    assert synced.cloud == "new" and synced.images["front"].msg == "new image"
    c.add_cloud(5100 * MS, "forward", now=5)
    c.add_cloud(20 * MS, "cloud jumps back", now=6)  # a cloud-triggered reset drops "forward"
    stats = c.stats()
    assert (stats.resets, stats.dropped_on_reset) == (2, 1)


def test_no_cameras_releases_immediately_and_unknown_camera_is_rejected():
    c = _collector(cameras=())
    c.add_cloud(7, "only", now=0)
    assert [s.images for s in c.poll(now=0)] == [{}]
    with pytest.raises(ValueError, match="unknown camera 'rear'"):
        _collector().add_image("rear", 0, "x", now=0)


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError, match="queue_depth"):
        CollectorConfig(queue_depth=0)
    with pytest.raises(ValueError, match="timeout_ns"):
        CollectorConfig(timeout_ns=-1)
    with pytest.raises(ValueError, match="unique"):
        CameraCollector(["a", "a"])


def test_clock_is_read_when_now_is_not_given():
    ticks = iter(range(0, 10**9, 40 * MS))
    c = CameraCollector(["front"], CONFIG, clock=lambda: next(ticks))
    c.add_cloud(1000 * MS, "cloud")  # arrives at 0
    assert c.poll() == [] and c.poll() == []  # 40 ms, 80 ms
    (synced,) = c.poll()  # 120 ms > timeout
    assert synced.waited_ns == 120 * MS


def _scripted_run():
    """A fixed arrival script with late and missing cameras; returns everything the collector said."""
    c = _collector(cameras=("a", "b", "c"))
    out = []
    for frame in range(20):
        t = 1000 + 100 * frame
        now = frame * 100 * MS
        c.add_image("a", (t - 5) * MS, ("a", frame), now=now)
        if frame % 3:
            c.add_image("b", (t + 12) * MS, ("b", frame), now=now)
        c.add_cloud(t * MS, frame, now=now + MS)
        if frame % 4 == 0:
            c.add_image("c", (t + 2) * MS, ("c", frame), now=now + 2 * MS)
        for synced in c.poll(now=now + 50 * MS) + c.poll(now=now + 99 * MS):
            out.append((synced.cloud, tuple(sorted(_image_stamps(synced).items(),
                                                   key=lambda kv: kv[0]))))
    return out, c.stats()


def test_same_script_gives_the_same_result():
    first, stats = _scripted_run()
    second, _ = _scripted_run()
    assert first == second and len(first) > 0
    assert stats.clouds == stats.released + stats.dropped + stats.pending


def test_concurrent_feeding_keeps_the_books_balanced():
    c = CameraCollector(["front", "left"], CollectorConfig(timeout_ns=0), clock=lambda: 0)
    released = []

    def feed_clouds():
        for i in range(2000):
            c.add_cloud(i * MS, i)

    def feed_images(name):
        for i in range(2000):
            c.add_image(name, i * MS, i)

    def consume():
        for _ in range(2000):
            released.extend(c.poll())

    threads = [threading.Thread(target=feed_clouds), threading.Thread(target=consume),
               threading.Thread(target=feed_images, args=("front",)),
               threading.Thread(target=feed_images, args=("left",))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    released.extend(c.poll())
    stats = c.stats()
    assert stats.clouds == 2000 and stats.images == {"front": 2000, "left": 2000}
    assert stats.released == len(released)
    assert stats.clouds == stats.released + stats.dropped + stats.pending
    stamps = [s.stamp for s in released]
    assert stamps == sorted(set(stamps))  # handed out strictly forward in time
