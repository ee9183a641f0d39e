import django.db.models.deletion
from django.db import migrations, models

# Django's AlterField would drop and re-add the foreign key, re-checking every row of the largest
# table under lock; only the index goes, and without blocking writes.
INDEX = "outbox_delivery_event_id_9d7b7ab0"


class Migration(migrations.Migration):
    atomic = False  # CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("outbox", "0004_event_created_brin"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="event",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="outbox.outboxevent",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
                    # An interrupted CONCURRENTLY build leaves an invalid index: drop it, then build.
                    reverse_sql=[
                        f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
                        f"CREATE INDEX CONCURRENTLY {INDEX} ON outbox_delivery (event_id)",
                    ],
                ),
            ],
        ),
    ]
