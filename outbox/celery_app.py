"""The Celery app. The relay enqueues on it and the worker runs `outbox.tasks` (the naive benchmark baseline
registers its own tasks on it too).

The worker loads it through config/celery.py (`celery -A config worker`), which names the settings
first: Celery installs its Django fixup (django.setup(), CELERY_DB_REUSE_MAX) when the app is built,
and only if DJANGO_SETTINGS_MODULE is set by then. Django processes (web, relay, tests) set it before.
"""

from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init
from django.conf import settings
from django.db import close_old_connections

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
    close_old_connections()


@worker_init.connect
def _worker_database_options(**kwargs: Any) -> None:
    """In a worker only, before it opens a connection (its pool processes fork after this): bind
    parameters server-side and prepare repeated statements (settings.WORKER_DB_PREPARE_THRESHOLD).

    Django reads these options from the settings' dict when it creates the connection pool; the web
    and the relay, which never send this signal, keep client-side binding.
    """
    options = settings.DATABASES["default"]["OPTIONS"]
    options["server_side_binding"] = True
    options["prepare_threshold"] = settings.WORKER_DB_PREPARE_THRESHOLD or None
