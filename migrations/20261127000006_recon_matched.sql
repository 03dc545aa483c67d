-- Reconciliation (issue 6): a billing customer a run's CRM pages linked to or compared against
-- (its identity link or billing id property, or its origin marker naming a listed CRM record)
-- is marked in the same transaction as the page's checkpoint, so a resumed run still knows
-- which customers have a CRM counterpart. The rules phase reports the unmarked customers of a
-- synced mapping as `missing_crm_counterpart`.
ALTER TABLE recon_seen ADD COLUMN matched INTEGER NOT NULL DEFAULT 0;
