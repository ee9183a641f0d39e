"""Model instances built from raw SQL rows, as the ORM builds them (`Model.from_db`).

Hot paths read with one hand-written statement where a queryset's compile cost more than the query
(the webhook's look-up, the runner's batch); their rows become the same instances handlers and
services would get from the ORM.
"""

import json
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

ModelT = TypeVar("ModelT", bound=Model)


def instance_from_row(model: type[ModelT], row: tuple[Any, ...] | list[Any]) -> ModelT | None:
    """The `model` instance whose concrete fields lead `row` (every column in the model's field order,
    as the ORM selects them), or None for a join that matched nothing (its primary key, first, is NULL).

    jsonb read through Django's cursor comes as text (Django parses it in JSONField.from_db_value, which
    `from_db` does not call): it is parsed here."""
    fields = model._meta.concrete_fields
    if row[0] is None:
        return None
    values = [
        json.loads(value) if isinstance(value, str) and field.get_internal_type() == "JSONField" else value
        for field, value in zip(fields, row, strict=False)
    ]
    return model.from_db(connection.alias, [f.attname for f in fields], values)


def mark_loaded(instance: ModelT) -> ModelT:
    """`instance`, built from what a write's RETURNING (or a locking read) gave back, marked as loaded
    from the database, as `from_db` marks what it builds: `save()` then updates instead of inserting,
    and related look-ups use this database."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance
