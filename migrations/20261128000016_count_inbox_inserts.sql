-- Issue 8 (batch and webhook ingest): the inbox's per-state counts (migration 12) stop being
-- kept on insert by a trigger, which ran one UPDATE per new event. Inbox rows are inserted in
-- exactly two places, and each now adds what it inserted in the same transaction, once per
-- batch: `Ledger::ingest_in` (every inbound event: webhooks, polls, backfill, replay) adds its
-- new events to 'pending', and the development seeder (`seed.rs`) adds its rows per state.
-- Updates and deletes keep their triggers (state changes come from many statements).
-- Never edit a landed migration: add a new one.
DROP TRIGGER IF EXISTS inbox_count_insert;
