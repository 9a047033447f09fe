-- A tenant's share of slots and guest CPU when a node is saturated (scheduler::slots,
-- runtime::cpu). Weight 2 gets twice what weight 1 gets.
ALTER TABLE tenants ADD COLUMN weight integer NOT NULL DEFAULT 1
    CHECK (weight BETWEEN 1 AND 1000);
