"""The node's ROS-free parts: diagnostics bookkeeping, intensity scale, transport (the worker and
class-list encoder: test_cloud_stream.py)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 rclpy is not installed in this environment")

from clip2scene_ros.cloud_input import IntensityScale  # noqa: E402
from clip2scene_ros.health import (GroupedWarnings, InputWatchdog, RateMeter, RecentEvents,  # noqa: E402
                                   SequenceGaps, reason_key)
from clip2scene_ros.node_parameters import parse_intensity_scale  # noqa: E402
from clip2scene_ros.transport import PROFILE_VARIABLES, apply_transport_profile, shipped_profile  # noqa: E402


def test_rate_is_right_at_a_fifth_of_a_hertz_and_decays_when_clouds_stop():
    meter = RateMeter()
    for index in range(6):
        meter.add(100.0 + 5.0 * index)
    for now in (125.0, 126.0, 129.0):  # diagnostics run every second, between clouds
        assert meter.rate(now) == pytest.approx(0.2)
    assert meter.rate(200.0) < 0.1  # stopped: no longer claims 0.2 Hz
    assert RateMeter().rate(1.0) == 0.0


def test_recent_events_are_forgotten_after_the_window():
    events = RecentEvents(window=10.0)
    events.add(0.0)
    events.add(3.0)
    assert events.count(5.0) == 2
    assert events.count(12.0) == 1
    assert events.count(14.0) == 0


def test_warnings_are_grouped_by_reason_and_throttled():
    emitted, now = [], [0.0]
    warnings = GroupedWarnings(emitted.append, period=10.0, clock=lambda: now[0])
    for count in (25000, 26000, 27000):
        warnings.warn("skipped: ", f"cloud has {count} points, more than max_points=20000")
    warnings.warn("skipped: ", "cloud is empty")
    assert emitted == ["skipped: cloud has 25000 points, more than max_points=20000",
                       "skipped: cloud is empty"]
    now[0] = 11.0
    warnings.warn("skipped: ", "cloud has 30000 points, more than max_points=20000")
    assert emitted[-1].endswith("(and 2 more like it in the last 11 s)")
    assert reason_key("has 3 of 4.5 m") == "has # of # m"


def test_watchdog_reports_a_matched_publisher_that_delivers_nothing():
    watchdog = InputWatchdog(timeout=5.0, now=0.0)
    assert watchdog.stalled(publishers=0, now=100.0) is None  # nobody publishes: nothing to say
    assert watchdog.stalled(publishers=1, now=101.0) is None  # just matched
    assert watchdog.stalled(publishers=1, now=107.0) == pytest.approx(6.0)
    watchdog.cloud_arrived(107.5)
    assert watchdog.stalled(publishers=1, now=108.0) is None


def test_sequence_gaps_count_clouds_that_never_reached_the_node():
    gaps = SequenceGaps()
    first, second = {"data": [1] * 16}, {"data": [2] * 16}
    info = lambda gid, n: {"publisher_gid": gid, "publication_sequence_number": n}  # noqa: E731
    assert [gaps.missed(info(first, n)) for n in (1, 2, 5, 6)] == [0, 0, 2, 0]
    assert gaps.missed(info(second, 10)) == 0  # another publisher has its own numbers
    assert gaps.missed({"publisher_gid": None, "publication_sequence_number": None}) == 0


def test_intensity_scale_auto_detects_0_to_255_once():
    lines = []
    scale = IntensityScale(parse_intensity_scale("auto"), lines.append)
    unit = np.array([0.1, 0.9], np.float32)
    np.testing.assert_array_equal(scale.apply(unit), unit)  # already [0, 1]: left alone
    np.testing.assert_allclose(scale.apply(np.array([0.0, 127.5, 255.0], np.float32)), [0, 0.5, 1])
    np.testing.assert_allclose(scale.apply(np.array([51.0], np.float32)), [0.2])
    assert len(lines) == 1 and "255" in lines[0]
    fixed = IntensityScale(parse_intensity_scale("100"), lines.append)
    np.testing.assert_allclose(fixed.apply(np.array([50.0], np.float32)), [0.5])
    assert fixed.apply(None) is None
    for bad in ("-1", "zero", "nan", "0"):
        with pytest.raises(ValueError, match="intensity_scale"):
            parse_intensity_scale(bad)


def test_transport_profile_is_applied_unless_the_user_chose_one():
    environ: dict[str, str] = {}
    note = apply_transport_profile(environ)
    assert environ[PROFILE_VARIABLES[0]] == str(shipped_profile()) and "shipped" in note
    assert "segment_size" in shipped_profile().read_text()
    mine = {PROFILE_VARIABLES[1]: "/etc/my_profile.xml"}
    assert "my_profile" in apply_transport_profile(mine) and PROFILE_VARIABLES[0] not in mine
    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    apply_transport_profile(cyclone)
    assert PROFILE_VARIABLES[0] not in cyclone
