-- Replay runs (console, issue 7): what a replay queued, so it can be followed and cancelled.
-- Never edit a landed migration: add a new one.

CREATE TABLE replay_runs (
    id              INTEGER PRIMARY KEY,
    started_by      TEXT    NOT NULL,
    reason          TEXT    NOT NULL,            -- replay | reconcile repair | ...
    selector        TEXT,                        -- JSON of the selection, when an operator chose one
    records         INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'running'
                    CHECK (state IN ('running', 'done', 'cancelled')),
    started_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    cancelled_by    TEXT,
    dropped         INTEGER NOT NULL DEFAULT 0   -- queued replay work a cancel removed
);

-- The records of a run. `joined`: the record already had work queued (a webhook's event, a
-- retry), so the replay's "plan again" mark joined that work and a cancel leaves it alone.
CREATE TABLE replay_run_records (
    run_id          INTEGER NOT NULL REFERENCES replay_runs (id),
    entity_key      TEXT    NOT NULL,
    joined          INTEGER NOT NULL DEFAULT 0,
    cancelled       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, entity_key)
);

-- Set while a queue row holds nothing but that replay run's not-yet-claimed work. Cleared by
-- anything that adds work to the row (an event, a retry, another replay) and by every claim,
-- so a cancel that deletes rows still carrying it can never drop live work.
ALTER TABLE work_queue ADD COLUMN replay_run INTEGER;
CREATE INDEX work_queue_by_replay_run ON work_queue (replay_run) WHERE replay_run IS NOT NULL;

CREATE INDEX audit_by_at ON audit (at_ms);
