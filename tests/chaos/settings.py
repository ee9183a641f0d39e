"""Settings for the chaos suite's processes: the product's, plus a handler that can be poisoned."""

from config.settings import *  # noqa: F403
from config.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.chaos.poison"]
