"""The worker's entry point: `celery -A config worker` (Procfile, config/commands.py) finds the app here.

Wiring only: it names the settings, then loads the app from outbox/celery_app.py, which must see
DJANGO_SETTINGS_MODULE when it is built (see there).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from outbox.celery_app import app  # after the settings are named (see above)

__all__ = ["app"]
