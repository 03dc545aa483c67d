-- Reconciliation (issue 6): each run, its per-side paging checkpoints, what it saw of the
-- billing side (for the rules across pages) and each mismatch it found.
CREATE TABLE recon_runs (
    id              INTEGER PRIMARY KEY,
    started_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    window_days     INTEGER NOT NULL,
    trigger         TEXT    NOT NULL,            -- cli | console | schedule
    state           TEXT    NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'finished', 'failed')),
    -- the phase in progress: billing, then crm:<object> per mapped object, then rules
    phase           TEXT    NOT NULL DEFAULT 'billing',
    -- paging cursor of the next page of the current phase; NULL = first page
    cursor          TEXT,
    pages_read      INTEGER NOT NULL DEFAULT 0,
    compared        INTEGER NOT NULL DEFAULT 0,
    duration_ms     INTEGER,
    log             TEXT    NOT NULL DEFAULT '[]', -- JSON array of notes (e.g. schedule not supported)
    error           TEXT,
    -- the process continuing the run, until when (renewed every page): two processes (the
    -- server's schedule and a CLI run) never continue one checkpoint at once
    lease_owner     TEXT,
    lease_until_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX recon_runs_by_state ON recon_runs (state, id);

-- Billing customers a run has paged through: the rules across objects (missing billing id,
-- duplicate origin marker, missing counterpart) run over these rows, so a resumed run does
-- not read finished pages again.
CREATE TABLE recon_seen (
    run_id          INTEGER NOT NULL REFERENCES recon_runs (id),
    billing_id      TEXT    NOT NULL,
    origin_key      TEXT,                        -- driftless_crm_contact_id / _company_id
    origin_value    TEXT,
    fields          TEXT    NOT NULL,            -- JSON: the customer's contract paths
    PRIMARY KEY (run_id, billing_id)
);
CREATE INDEX recon_seen_by_origin ON recon_seen (run_id, origin_value) WHERE origin_value IS NOT NULL;

-- One row per mismatch found by a run: a field through the mappings or a rule across objects.
CREATE TABLE recon_mismatches (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES recon_runs (id),
    entity_key      TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('field', 'rule', 'missed_event')),
    name            TEXT    NOT NULL,            -- the field or rule name
    crm_value       TEXT,
    billing_value   TEXT,
    owner           TEXT,
    detail          TEXT,
    first_seen_ms   INTEGER NOT NULL,            -- earliest run that saw this (record, name)
    UNIQUE (run_id, entity_key, kind, name)
);
CREATE INDEX recon_mismatches_by_key ON recon_mismatches (entity_key, name);
