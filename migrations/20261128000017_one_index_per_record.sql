-- Issue 8 (batch and webhook ingest): one per-record index on the inbox instead of two.
-- Never edit a landed migration: add a new one.
--
-- Every new event went into `inbox_by_entity (entity_key, id)` and, while pending, into
-- `inbox_pending_by_entity (entity_key, id) WHERE state = 'pending'`: two B-trees keyed by
-- record, so a page of events from many records touched two random leaf pages per event (the
-- largest part of an ingest commit after the table itself). `(entity_key, state, id)` serves
-- both: a record's pending events are the range (key, 'pending'), in id order (the hot path:
-- unplanned events, release, replay cancel, reconcile), and all its events are the range
-- (key) (the console's record timeline and lookups, a few rows a record, sorted by id).
CREATE INDEX inbox_by_entity_state ON inbox (entity_key, state, id);
DROP INDEX IF EXISTS inbox_pending_by_entity;
DROP INDEX IF EXISTS inbox_by_entity;

-- The one ledger-wide pending count (a backfill's events not yet decided, its progress and
-- estimate) read the partial index above; it gets its own, which only backfill events enter
-- (in order of arrival).
CREATE INDEX inbox_backfill_pending ON inbox (received_at_ms) WHERE state = 'pending' AND via = 'backfill';
