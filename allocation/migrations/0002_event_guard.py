"""Deferred constraint trigger: a change to allocation_allocation commits only with its purchase's outbox event."""

from django.db import migrations

FORWARD = """
CREATE CONSTRAINT TRIGGER allocation_allocation_requires_event
AFTER INSERT OR UPDATE OR DELETE ON allocation_allocation
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION outbox_require_purchase_event('purchase_id');
"""

BACKWARD = "DROP TRIGGER allocation_allocation_requires_event ON allocation_allocation;"


class Migration(migrations.Migration):
    dependencies = [("allocation", "0001_initial"), ("outbox", "0002_event_guard")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
