"""No state without its event, enforced by PostgreSQL (invariant 1 in docs/architecture.md).

`outbox_outboxevent.tx_id` records the writing transaction. Domain tables get a deferred constraint
trigger calling `outbox_require_purchase_event(<purchase id column>)`: at COMMIT, every changed row
must have an outbox event for its purchase written by the same transaction, or the COMMIT fails.
"""

from django.db import migrations

FORWARD = """
ALTER TABLE outbox_outboxevent ADD COLUMN tx_id xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE FUNCTION outbox_require_purchase_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    row_data jsonb;
    purchase_id text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_data := to_jsonb(OLD);
    ELSE
        row_data := to_jsonb(NEW);
    END IF;
    purchase_id := row_data ->> TG_ARGV[0];
    IF NOT EXISTS (
        SELECT 1 FROM outbox_outboxevent
        WHERE aggregate_type = 'purchase' AND aggregate_id = purchase_id AND tx_id = pg_current_xact_id()
    ) THEN
        RAISE EXCEPTION 'outbox guard: % on % (purchase %) without an outbox event in the same transaction',
            TG_OP, TG_TABLE_NAME, purchase_id
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'Change purchases, allocations and sessions only through their services.';
    END IF;
    RETURN NULL;
END;
$$;
"""

BACKWARD = """
DROP FUNCTION outbox_require_purchase_event();
ALTER TABLE outbox_outboxevent DROP COLUMN tx_id;
"""


class Migration(migrations.Migration):
    dependencies = [("outbox", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
