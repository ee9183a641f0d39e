"""PostgreSQL refuses two scheduled sessions of one trainer that overlap.

A database that already holds overlapping scheduled sessions (the old placeholder scheduling
double-booked trainers) stops here and lists them. Migrate to `sessions_app 0003`, give the trainers
their availability (admin), run `manage.py resolve_overlaps` (it moves each double-booked session to
its trainer's next free slot, through the reschedule service, so the students' apps update), then
migrate again.
"""

from typing import Any

import django.contrib.postgres.constraints
from django.db import migrations, models

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
            "scheduled sessions overlap, so the no-overlap constraint can't be added. Migrate to "
            "sessions_app 0003, give the trainers availability, run `manage.py resolve_overlaps`, then "
            f"migrate again. Overlapping (up to 20 shown): {listed}"
        )


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0003_sched_session_ends_at")]

    operations = [
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
