-- Every record's retries are bounded (issue 19, DESIGN invariant 10). A write counts its own
-- attempts in the outbox; these count a record's failed turns that no write counts — reads
-- that failed, decisions the ledger refused — and when its current run of failures began
-- (any failure, rate limits included), so a record that keeps failing ends in review or the
-- dead letters with its reason instead of being retried forever. A turn that succeeds clears
-- both.
ALTER TABLE work_queue ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE work_queue ADD COLUMN failing_since_ms INTEGER;
