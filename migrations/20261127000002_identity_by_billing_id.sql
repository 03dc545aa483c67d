-- Inbound billing events resolve their CRM record by billing id alone (a customer may belong
-- to a contact or a company mapping).
CREATE INDEX identity_map_by_billing_id ON identity_map (billing_id) WHERE billing_id IS NOT NULL;
