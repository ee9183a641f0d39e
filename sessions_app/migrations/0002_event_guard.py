"""Deferred constraint trigger: a session change commits only with its purchase's outbox event."""

from django.db import migrations

FORWARD = """
CREATE CONSTRAINT TRIGGER sessions_app_trainingsession_requires_event
AFTER INSERT OR UPDATE OR DELETE ON sessions_app_trainingsession
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION outbox_require_purchase_event('purchase_id');
"""

BACKWARD = "DROP TRIGGER sessions_app_trainingsession_requires_event ON sessions_app_trainingsession;"


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0001_initial"), ("outbox", "0002_event_guard")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
