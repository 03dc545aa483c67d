-- Parked records (paused, observing, rate limited, backing off, waiting for a full CRM batch
-- call) by reason: the CRM write lanes look up the bulk updates waiting for a full call every
-- half second. Partial, so the many unparked rows cost nothing.
CREATE INDEX work_queue_parked ON work_queue (parked_reason, not_before_ms) WHERE parked_reason IS NOT NULL;
