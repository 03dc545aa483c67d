-- The driftless ledger, version 1. Never edit a landed migration: add a new one.
-- Times are unix milliseconds. Sequence numbers (INTEGER PRIMARY KEY) are the ledger's own
-- order of things and the only clock used to settle conflicts.

-- Every distinct inbound event, exactly once per (source, event_id).
CREATE TABLE inbox (
    id              INTEGER PRIMARY KEY,
    source          TEXT    NOT NULL CHECK (source IN ('crm', 'billing')),
    event_id        TEXT    NOT NULL,
    via             TEXT    NOT NULL,            -- webhook | poll | replay
    event_type      TEXT    NOT NULL,
    object_type     TEXT    NOT NULL,
    object_id       TEXT    NOT NULL,
    entity_key      TEXT    NOT NULL,            -- the per-record queue this event belongs to
    payload         TEXT    NOT NULL,            -- the event as received (JSON)
    received_at_ms  INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'applied', 'echo', 'superseded', 'conflicted', 'dead_lettered')),
    state_reason    TEXT,
    decided_at_ms   INTEGER,
    UNIQUE (source, event_id)
);
CREATE INDEX inbox_pending_by_entity ON inbox (entity_key, id) WHERE state = 'pending';
CREATE INDEX inbox_by_entity ON inbox (entity_key, id);
CREATE INDEX inbox_by_state ON inbox (state);
CREATE INDEX inbox_applied_recent ON inbox (decided_at_ms) WHERE state = 'applied';

-- Deliveries of an event the inbox already holds: counted drops, kept for inspection.
CREATE TABLE inbox_duplicates (
    id              INTEGER PRIMARY KEY,
    inbox_id        INTEGER NOT NULL REFERENCES inbox (id),
    via             TEXT    NOT NULL,
    received_at_ms  INTEGER NOT NULL
);
CREATE INDEX inbox_duplicates_by_inbox ON inbox_duplicates (inbox_id);

-- The per-record work queue: one head row per record with work; events hang off the inbox.
CREATE TABLE work_queue (
    entity_key      TEXT    PRIMARY KEY,
    ready_seq       INTEGER NOT NULL,            -- inbox id that first made the record ready (fair order)
    last_seq        INTEGER NOT NULL,            -- newest inbox id enqueued (detects new work while claimed)
    not_before_ms   INTEGER NOT NULL DEFAULT 0,  -- backoff, rate-limit wait or pause parking
    lease_owner     TEXT,
    lease_until_ms  INTEGER NOT NULL DEFAULT 0,
    parked_reason   TEXT,
    replan          INTEGER NOT NULL DEFAULT 0   -- a write completed: plan again even without new events
);
CREATE INDEX work_queue_claimable ON work_queue (ready_seq, not_before_ms, lease_until_ms);

-- CRM record <-> billing record, per object pair.
CREATE TABLE identity_map (
    object          TEXT    NOT NULL,
    crm_id          TEXT    NOT NULL,
    billing_id      TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (object, crm_id)
);
CREATE UNIQUE INDEX identity_map_billing ON identity_map (object, billing_id) WHERE billing_id IS NOT NULL;

-- Last synced value per field per side, stamped with the ledger's sequence.
CREATE TABLE shadow (
    entity_key      TEXT    NOT NULL,
    side            TEXT    NOT NULL CHECK (side IN ('crm', 'billing')),
    field           TEXT    NOT NULL,
    value           TEXT,
    sync_seq        INTEGER NOT NULL,
    synced_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (entity_key, side, field)
);

-- Every outbound operation, before it is sent; the idempotency key is fixed at planning time.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    entity_key      TEXT    NOT NULL,
    destination     TEXT    NOT NULL CHECK (destination IN ('crm', 'billing')),
    op              TEXT    NOT NULL,            -- create_customer | update_customer | update_contact
    target_id       TEXT,
    idempotency_key TEXT    NOT NULL UNIQUE,
    correlation_id  TEXT    NOT NULL,
    field_values    TEXT    NOT NULL,            -- JSON: destination field -> value written
    cause_inbox_id  INTEGER REFERENCES inbox (id),
    lane            TEXT    NOT NULL DEFAULT 'live',
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'dead_lettered', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    response_status INTEGER,
    response        TEXT,
    result_id       TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    done_at_ms      INTEGER
);
CREATE INDEX outbox_open_by_entity ON outbox (entity_key, id) WHERE state = 'pending';
CREATE INDEX outbox_by_entity ON outbox (entity_key, destination, id);
CREATE INDEX outbox_by_destination ON outbox (destination, state);
CREATE INDEX outbox_by_cause ON outbox (cause_inbox_id);

-- Every decision and operator action, with the rule and contract version behind it.
CREATE TABLE audit (
    id               INTEGER PRIMARY KEY,
    at_ms            INTEGER NOT NULL,
    entity_key       TEXT,
    inbox_id         INTEGER,
    outbox_id        INTEGER,
    actor            TEXT    NOT NULL,           -- engine | operator:<name> | cli
    action           TEXT    NOT NULL,
    rule             TEXT,
    contract_version TEXT,
    detail           TEXT                        -- JSON
);
CREATE INDEX audit_by_entity ON audit (entity_key, id);

-- Operations that will not succeed without a person: full context kept.
CREATE TABLE dead_letters (
    id              INTEGER PRIMARY KEY,
    outbox_id       INTEGER NOT NULL REFERENCES outbox (id),
    entity_key      TEXT    NOT NULL,
    destination     TEXT    NOT NULL,
    error_class     TEXT    NOT NULL,            -- validation | exhausted | auth | not_found
    error           TEXT    NOT NULL,
    request         TEXT    NOT NULL,
    response        TEXT,
    attempts        INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    resolved_at_ms  INTEGER,
    resolution      TEXT
);
CREATE INDEX dead_letters_open ON dead_letters (created_at_ms) WHERE resolved_at_ms IS NULL;

-- Records waiting for a person to decide.
CREATE TABLE review_queue (
    id              INTEGER PRIMARY KEY,
    entity_key      TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    fields          TEXT    NOT NULL,            -- JSON: per field crm | billing | owner | last synced
    created_at_ms   INTEGER NOT NULL,
    resolved_at_ms  INTEGER,
    resolution      TEXT
);
CREATE UNIQUE INDEX review_queue_open ON review_queue (entity_key) WHERE resolved_at_ms IS NULL;

-- Operator switches: pause:global, pause:crm, pause:billing.
CREATE TABLE control_flags (
    key             TEXT    PRIMARY KEY,
    value           TEXT    NOT NULL,
    reason          TEXT,
    set_by          TEXT    NOT NULL,
    set_at_ms       INTEGER NOT NULL
);

-- Poll cursors and backfill watermarks; advanced only after the page behind them is durable.
CREATE TABLE watermarks (
    name            TEXT    PRIMARY KEY,
    cursor          TEXT    NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

-- Per-minute rollups of engine signals, for charts that survive restarts.
CREATE TABLE metric_samples (
    name            TEXT    NOT NULL,
    labels          TEXT    NOT NULL DEFAULT '',
    minute          INTEGER NOT NULL,            -- unix minutes
    value           REAL    NOT NULL,
    PRIMARY KEY (name, labels, minute)
);
