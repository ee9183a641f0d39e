"""Deferred constraint trigger: a change to purchases_purchase commits only with its purchase's outbox event."""

from django.db import migrations

FORWARD = """
CREATE CONSTRAINT TRIGGER purchases_purchase_requires_event
AFTER INSERT OR UPDATE OR DELETE ON purchases_purchase
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION outbox_require_purchase_event('id');
"""

BACKWARD = "DROP TRIGGER purchases_purchase_requires_event ON purchases_purchase;"


class Migration(migrations.Migration):
    dependencies = [("purchases", "0001_initial"), ("outbox", "0002_event_guard")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
