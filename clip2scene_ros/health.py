"""Bookkeeping behind the node's /diagnostics and its throttled warnings (ROS-free, clock injected).

* `RateMeter`: output rate from the times of recent clouds, right at 0.2 Hz as at 20 Hz;
* `LatencyWindow`: percentiles of recent latencies;
* `RecentEvents`: when problems happened, so a diagnostics level reflects a recent window only;
* `GroupedWarnings`: one warning per kind of problem per period, with a count of the repeats;
* `InputWatchdog`: a publisher is matched, yet no cloud arrived for a while;
* `SequenceGaps`: clouds a publisher sent that never reached the node's callback.
"""
from __future__ import annotations

import re
from collections import deque
from typing import Any, Callable, Mapping, Optional

import numpy as np


class RecentEvents:
    """Times of events (skipped clouds, lost clouds), forgotten after ``window`` seconds."""

    def __init__(self, window: float) -> None:
        self._times: deque[float] = deque()
        self.window = window

    def add(self, now: float) -> None:
        self._times.append(now)

    def times(self, now: float) -> deque[float]:
        """The event times of the last ``window`` seconds, oldest first."""
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return self._times

    def count(self, now: float) -> int:
        return len(self.times(now))


class RateMeter:
    """Events per second over the last ``horizon`` seconds, measured between events.

    Counting events per diagnostics period reads 0 or 1/period below 1 Hz; the span between the
    first and last recent event gives the true rate. When events stop the rate decays towards 0.
    """

    def __init__(self, horizon: float = 60.0) -> None:
        self._recent = RecentEvents(horizon)

    def add(self, now: float) -> None:
        self._recent.add(now)

    def rate(self, now: float) -> float:
        times = self._recent.times(now)
        if len(times) < 2:
            return 0.0
        intervals = len(times) - 1
        span = times[-1] - times[0]
        # Stalled for longer than two mean intervals: count the silence since the first event too.
        if now - times[-1] > 2 * span / intervals:
            span = now - times[0]
        return intervals / span if span > 0 else 0.0


class LatencyWindow:
    """The last ``size`` latencies (ms) for diagnostics percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self._values, q)) if self._values else float("nan")


def reason_key(text: str) -> str:
    """Group messages that differ only in their numbers ('cloud has 25000 points' ~ '... 31000 ...')."""
    return re.sub(r"\d+(\.\d+)?", "#", text)


class GroupedWarnings:
    """Warn once per kind of problem per ``period`` seconds, saying how often it happened meanwhile.

    ``emit`` is called with the text to log (the node's logger); the first occurrence of a kind is
    reported at once, repeats within the period are counted into the next report of that kind.
    """

    def __init__(self, emit: Callable[[str], None], period: float, clock: Callable[[], float]) -> None:
        self._emit, self._period, self._clock = emit, period, clock
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}

    def warn(self, prefix: str, reason: str) -> None:
        key = prefix + reason_key(reason)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._period:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            return
        repeats = self._repeats.pop(key, 0)
        more = f" (and {repeats} more like it in the last {now - last:.0f} s)" if repeats else ""
        self._last[key] = now
        self._emit(f"{prefix}{reason}{more}")


class InputWatchdog:
    """Notices the silent failure of large clouds: publishers are matched, yet nothing arrives.

    ``stalled`` returns the seconds without a cloud once that exceeds ``timeout`` while at least
    one publisher is matched, else None. The silence is counted from the later of the last cloud
    and the moment publishers appeared.
    """

    def __init__(self, timeout: float, now: float) -> None:
        self.timeout = timeout
        self._since = now
        self._had_publishers = False

    def cloud_arrived(self, now: float) -> None:
        self._since = now

    def stalled(self, publishers: int, now: float) -> Optional[float]:
        if publishers == 0:
            self._had_publishers = False
            return None
        if not self._had_publishers:
            self._had_publishers = True
            self._since = max(self._since, now)
        silence = now - self._since
        return silence if silence > self.timeout else None


class SequenceGaps:
    """Counts clouds that a publisher sent but the node never saw, from DDS sequence numbers.

    A best-effort reader with history depth 1 silently replaces a sample the executor has not taken
    yet, and transport losses leave gaps too; each publisher numbers its samples 1, 2, 3, ..., so a
    jump from n to n + k means k - 1 clouds went missing on the way.
    """

    def __init__(self) -> None:
        self._last: dict[Any, int] = {}

    def missed(self, info: Mapping[str, Any]) -> int:
        """Clouds missing before this one (rclpy's MessageInfo of the received cloud)."""
        sequence, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not sequence or gid is None:  # the middleware does not number samples
            return 0
        key = bytes(gid.get("data", ())) if isinstance(gid, Mapping) else repr(gid)
        last = self._last.get(key)
        self._last[key] = sequence
        return max(sequence - last - 1, 0) if last is not None else 0
