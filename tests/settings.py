"""The test run's settings: the product's, with local defaults for secrets (COURSECHAIN_DEV).

Processes the tests start inherit the environment, so they get the same defaults.
"""

import os

os.environ.setdefault("COURSECHAIN_DEV", "1")

from config.settings import *  # noqa: F403
