-- Backfill (issue 6): one row per run. A run pages through every CRM record of each mapped
-- object type and every billing customer; each page becomes inbox events (queued as bulk
-- work) and the stream's cursor (watermarks `backfill:{stream}`) moves in the same
-- transaction, so a restart continues at the first unfinished page.
CREATE TABLE backfill_runs (
    id              INTEGER PRIMARY KEY,
    -- crm, billing or both
    systems         TEXT    NOT NULL CHECK (systems IN ('crm', 'billing', 'both')),
    state           TEXT    NOT NULL CHECK (state IN ('running', 'cancelled', 'done', 'failed')),
    -- streams read to the end, comma separated (e.g. `crm:contacts,billing:customers`)
    streams_done    TEXT    NOT NULL DEFAULT '',
    pages           INTEGER NOT NULL DEFAULT 0,
    records         INTEGER NOT NULL DEFAULT 0,
    accepted        INTEGER NOT NULL DEFAULT 0,
    duplicates      INTEGER NOT NULL DEFAULT 0,
    -- records the providers say exist (HubSpot search totals; Stripe lists give none)
    total_known     INTEGER,
    error           TEXT,
    started_by      TEXT    NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    -- the migration (if any) this run is a phase of, and its validation report (JSON)
    migration_id    INTEGER,
    validation      TEXT
);
CREATE INDEX backfill_runs_state ON backfill_runs (state, id);

-- Migration mode: one system authoritative (for one object or all) until finished. While a
-- row has no finished_at_ms, writes flowing towards the authority (into the authoritative
-- system) are frozen by the write gate (`migration_freeze`), and the planner takes the
-- authority as the owner of the object's fields. At most one mode is active.
CREATE TABLE migrations_mode (
    id              INTEGER PRIMARY KEY,
    authority       TEXT    NOT NULL CHECK (authority IN ('crm', 'billing')),
    -- a contract object name, or NULL for every object
    object          TEXT,
    reason          TEXT    NOT NULL,
    started_by      TEXT    NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    finished_by     TEXT,
    finished_at_ms  INTEGER
);
CREATE UNIQUE INDEX migrations_mode_one_active ON migrations_mode ((finished_at_ms IS NULL)) WHERE finished_at_ms IS NULL;
