"""What the stand-in publisher scripts share: waiting for a subscriber, and running ``main``."""
import sys
import time
from typing import Callable

import rclpy


def wait_for_subscriber(node, publisher, timeout: float) -> bool:
    """Spin ``node`` until ``publisher`` has a matched subscription; False (and a line on stdout)
    after ``timeout`` seconds without one."""
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print("no subscriber matched", flush=True)
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return True


def run(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; Ctrl-C (the test stopping us) is a clean exit."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
