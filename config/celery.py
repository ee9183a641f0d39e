"""The Celery app. Only the outbox imports it: handlers run through `outbox.tasks`."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("coursechain")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["outbox"])


@task_prerun.connect
@task_postrun.connect
def _release_db_connections(**kwargs: object) -> None:
    """Between tasks, hand the database connection back to the pool (or drop it if it broke), as Django
    does between requests. The pool's health check replaces a dead one at the next checkout.

    This replaces Celery's own handling (see CELERY_DB_REUSE_MAX), which in a prefork worker closes the
    whole pool around every task: a new PostgreSQL backend per task.
    """
    from django.db import close_old_connections

    close_old_connections()
