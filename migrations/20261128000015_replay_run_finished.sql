-- A replay run's record is finished once it was seen with no queued work after the run
-- queued it. Later live work for the record is not the run's: a finished record stays done,
-- so a done run no longer shows "1 with queued work" when a webhook for one of its records
-- arrives afterwards. Never edit a landed migration: add a new one.
ALTER TABLE replay_run_records ADD COLUMN finished INTEGER NOT NULL DEFAULT 0;

UPDATE replay_run_records SET finished = 1
 WHERE cancelled = 0 AND run_id IN (SELECT id FROM replay_runs WHERE state = 'done');
