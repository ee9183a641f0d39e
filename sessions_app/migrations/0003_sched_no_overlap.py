"""Sessions get `ends_at`, and PostgreSQL refuses two scheduled sessions of one trainer that overlap.

Existing sessions get `ends_at = starts_at + duration_minutes` with the event guard off for that one
UPDATE (it changes no state a student sees, so it needs no event). A database that already holds
overlapping scheduled sessions (the old placeholder scheduling double-booked trainers) stops here
and lists them: move or cancel them with the release before this one, then migrate again.
"""

from typing import Any

import django.contrib.postgres.constraints
from django.db import migrations, models

BACKFILL = """
ALTER TABLE sessions_app_trainingsession DISABLE TRIGGER sessions_app_trainingsession_requires_event;
UPDATE sessions_app_trainingsession SET ends_at = starts_at + duration_minutes * interval '1 minute'
WHERE ends_at IS NULL;
ALTER TABLE sessions_app_trainingsession ENABLE TRIGGER sessions_app_trainingsession_requires_event;
"""

OVERLAPS = """
SELECT a.trainer_id, a.id, b.id, a.starts_at FROM sessions_app_trainingsession a
JOIN sessions_app_trainingsession b ON a.trainer_id = b.trainer_id AND a.id < b.id
 AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
WHERE a.status = 'scheduled' AND b.status = 'scheduled'
ORDER BY a.trainer_id, a.starts_at LIMIT 20
"""


def refuse_overlaps(apps: Any, schema_editor: Any) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(OVERLAPS)
        rows = cursor.fetchall()
    if rows:
        listed = "; ".join(f"trainer {t}: sessions {a} and {b} at {at.isoformat()}" for t, a, b, at in rows)
        raise RuntimeError(
            "scheduled sessions overlap, so the no-overlap constraint can't be added. Cancel or move "
            f"these first (up to 20 shown): {listed}"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("allocation", "0003_sched_availability"),
        ("sessions_app", "0002_event_guard"),
    ]

    operations = [
        migrations.AddField(model_name="trainingsession", name="ends_at", field=models.DateTimeField(null=True)),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AlterField(model_name="trainingsession", name="ends_at", field=models.DateTimeField()),
        migrations.RunPython(refuse_overlaps, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="trainingsession",
            constraint=models.CheckConstraint(
                condition=models.Q(("ends_at__gt", models.F("starts_at"))), name="session_ends_after_start"
            ),
        ),
        migrations.AddConstraint(
            model_name="trainingsession",
            constraint=django.contrib.postgres.constraints.ExclusionConstraint(
                condition=models.Q(("status", "scheduled")),
                expressions=[
                    (
                        models.Func(
                            models.F("trainer_id"), models.F("trainer_id"), models.Value("[]"), function="int8range"
                        ),
                        "&&",
                    ),
                    (models.Func(models.F("starts_at"), models.F("ends_at"), function="tstzrange"), "&&"),
                ],
                name="session_trainer_no_overlap",
            ),
        ),
    ]
