-- Pollers (issue 5): a poll cursor older than the provider retains leaves a window no poll can
-- read again. The gap is recorded here for the reconciler (which compares both systems over
-- [from_ms, to_ms] and repairs through the pipeline), and stays visible in `status` until
-- a reconciliation marks it resolved.
CREATE TABLE reconciliation_gaps (
    id              INTEGER PRIMARY KEY,
    source          TEXT    NOT NULL CHECK (source IN ('crm', 'billing')),
    -- the poll cursor (watermarks.name) whose history was lost
    cursor          TEXT    NOT NULL,
    from_ms         INTEGER NOT NULL,
    to_ms           INTEGER NOT NULL CHECK (to_ms >= from_ms),
    reason          TEXT    NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    resolved_at_ms  INTEGER,
    UNIQUE (cursor, from_ms, to_ms)
);
CREATE INDEX reconciliation_gaps_open ON reconciliation_gaps (resolved_at_ms, id);
