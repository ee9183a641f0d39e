"""The test run's settings: the product's, with local defaults for secrets (COURSECHAIN_DEV).

Processes the tests start inherit the environment, so they get the same defaults.
"""

import os
import tempfile

os.environ.setdefault("COURSECHAIN_DEV", "1")
# Tests (and the processes they start) hammer the API far faster than any app; the rate-limit tests
# set their own rates.
os.environ.setdefault("API_THROTTLE_STUDENT_RATE", "100000/min")
os.environ.setdefault("API_THROTTLE_ANON_RATE", "100000/min")
# This test run's own metrics files (the processes it starts inherit it): counters start at zero and
# no other run on the host adds to them.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="coursechain-test-metrics-")

from config.settings import *  # noqa: F403
