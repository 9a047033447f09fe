-- How long a tenant's finished runs, their task runs and logs, and its events are kept
-- (scheduler::retention); NULL: the nodes' default (`hatchery serve --retention-days`).
ALTER TABLE tenants ADD COLUMN retention_days integer CHECK (retention_days BETWEEN 1 AND 3650);
