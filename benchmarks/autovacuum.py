"""A stand-in for autovacuum, for a benchmark whose PostgreSQL server runs with `autovacuum = off`.

The outbox changes each delivery row three times (pending, in flight, done), so its tables churn; a
production server vacuums and analyses them (autovacuum is on by default). A server with it off (some
test machines) measures something no production runs: dead index entries pile up under the relay's
claim, and plans cached while a table was empty (PostgreSQL's foreign-key checks, prepared statements)
are never replanned, so a look-up by primary key stays a sequential scan of the whole growing table.
On this machine's server, 60 s at 50 purchases/s after a ramp cost the relay's backend 7.8 instead of
2.7 ms per purchase.

So, when the server's autovacuum is off, the benchmark does its work itself: every `every` seconds, the
tables of the benchmark's database that autovacuum would pick by its own rules (the server's
thresholds and scale factors, and any per-table setting) are vacuumed and analysed, on a connection
named "autovacuum (stand-in)" so that its CPU counts in the machine's figures like autovacuum's would.
With autovacuum on, this does nothing.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from benchmarks.harness import log

APPLICATION_NAME = "autovacuum (stand-in)"
# Autovacuum's naptime for the outbox (the README's advice to operators); the server default is 60 s.
EVERY_SECONDS = 10.0

# Per table: the counts autovacuum compares, and its thresholds with any per-table setting applied
# (the reloptions have the setting's name; the server's value otherwise).
_DUE_SQL = """
WITH settings AS (
    SELECT
        current_setting('autovacuum_vacuum_threshold')::float8 AS vt,
        current_setting('autovacuum_vacuum_scale_factor')::float8 AS vs,
        current_setting('autovacuum_vacuum_insert_threshold')::float8 AS it,
        current_setting('autovacuum_vacuum_insert_scale_factor')::float8 AS iscale,
        current_setting('autovacuum_analyze_threshold')::float8 AS at,
        current_setting('autovacuum_analyze_scale_factor')::float8 AS ascale
), tables AS (
    SELECT s.relid, s.n_dead_tup, s.n_ins_since_vacuum, s.n_mod_since_analyze,
           greatest(c.reltuples, 0) AS tuples,
           (SELECT coalesce(jsonb_object_agg(split_part(o, '=', 1), split_part(o, '=', 2)), '{}')
            FROM unnest(c.reloptions) o) AS opts
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
)
SELECT t.relid::regclass::text,
       t.n_dead_tup > coalesce((opts->>'autovacuum_vacuum_threshold')::float8, vt)
           + coalesce((opts->>'autovacuum_vacuum_scale_factor')::float8, vs) * t.tuples
       OR t.n_ins_since_vacuum > coalesce((opts->>'autovacuum_vacuum_insert_threshold')::float8, it)
           + coalesce((opts->>'autovacuum_vacuum_insert_scale_factor')::float8, iscale) * t.tuples,
       t.n_mod_since_analyze > coalesce((opts->>'autovacuum_analyze_threshold')::float8, at)
           + coalesce((opts->>'autovacuum_analyze_scale_factor')::float8, ascale) * t.tuples
FROM tables t CROSS JOIN settings
WHERE coalesce(opts->>'autovacuum_enabled', 'on') NOT IN ('off', 'false')
ORDER BY 1
"""


class StandIn:
    def __init__(self, url: str, *, every: float) -> None:
        self.url = url
        self.every = every
        self.vacuums = 0
        self.analyses = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autovacuum-stand-in", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True, application_name=APPLICATION_NAME) as conn:
                while not self._stopping.wait(self.every):
                    self.pass_once(conn)
        except psycopg.Error as exc:  # the benchmark dropped its database: nothing left to vacuum
            log(f"autovacuum stand-in stopped: {exc}")

    def pass_once(self, conn: psycopg.Connection[Any]) -> None:
        """One round, as autovacuum's worker would do it: vacuum (and analyse) the tables over their
        vacuum threshold, analyse those over only their analyse threshold."""
        for table, vacuum, analyze in conn.execute(_DUE_SQL).fetchall():
            if vacuum:
                conn.execute(f"VACUUM (ANALYZE) {table}")
                self.vacuums += 1
                self.analyses += 1
            elif analyze:
                conn.execute(f"ANALYZE {table}")
                self.analyses += 1


def autovacuum_is_on(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('autovacuum')::bool AND current_setting('track_counts')::bool")
        found = row.fetchone()
    return bool(found and found[0])


@contextmanager
def standing_in(url: str, *, every: float = EVERY_SECONDS) -> Iterator[StandIn | None]:
    """Stand in for autovacuum on database `url` while the block runs, if the server's is off (else
    yield None)."""
    if autovacuum_is_on(url):
        yield None
        return
    stand_in = StandIn(url, every=every)
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()
        log(f"autovacuum stand-in: {stand_in.vacuums} vacuums, {stand_in.analyses} analyses")
