-- A leaner write path for ingest (issue 8: batch and webhook ingest against this machine's
-- own ceilings). Never edit a landed migration: add a new one.
--
-- 1. `inbox_by_state` goes: counts per state come from `ledger_counts` (migration 12), the
--    record-level queries use `inbox_pending_by_entity` / `inbox_by_entity`, and the one
--    ledger-wide pending count (backfill's records still to sync) scans the pending partial
--    index. Every inbound event paid for this index and nothing read it.
DROP INDEX IF EXISTS inbox_by_state;

-- 2. The work queue is keyed by record: stored in its key's order (WITHOUT ROWID), so an
--    upsert touches one B-tree for the row instead of the table and its key's index.
CREATE TABLE work_queue_new (
    entity_key      TEXT    PRIMARY KEY,
    ready_seq       INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    not_before_ms   INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until_ms  INTEGER NOT NULL DEFAULT 0,
    parked_reason   TEXT,
    replan          INTEGER NOT NULL DEFAULT 0,
    replay_run      INTEGER
) WITHOUT ROWID;
INSERT INTO work_queue_new (entity_key, ready_seq, last_seq, not_before_ms, lease_owner, lease_until_ms,
                            parked_reason, replan, replay_run)
SELECT entity_key, ready_seq, last_seq, not_before_ms, lease_owner, lease_until_ms, parked_reason, replan,
       replay_run FROM work_queue;
DROP TABLE work_queue;
ALTER TABLE work_queue_new RENAME TO work_queue;
CREATE INDEX work_queue_claimable ON work_queue (ready_seq, not_before_ms, lease_until_ms);
CREATE INDEX work_queue_by_replay_run ON work_queue (replay_run) WHERE replay_run IS NOT NULL;
CREATE INDEX work_queue_parked ON work_queue (parked_reason, not_before_ms) WHERE parked_reason IS NOT NULL;
