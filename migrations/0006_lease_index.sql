-- The reaper's index of leases, keyed so that no other statement can use it.
--
-- `task_runs_leases` was partial on `status = 'running'`, so every statement that checks
-- `status = 'running'` could read it: completions and heartbeats join a batch of (tenant, id)
-- pairs with `task_runs`, and with a few thousand running rows in the statistics the planner
-- chose a bitmap scan of every running row plus a hash join over the primary-key lookups. Each
-- completed attempt leaves a dead entry in that index until vacuum, so at a million runs the
-- scan walked ~40,000 entries and ~3,000 heap pages for a batch of 300 (190 ms, CPU-bound):
-- the drain slowed to a third. Keyed on `lease_expires_at IS NOT NULL` instead, it serves only
-- statements that look for expiring leases (the reaper's `lease_expires_at < $1` implies it);
-- completions and heartbeats go through the primary key at any size. Every path that ends a
-- lease clears `lease_expires_at`, so the index holds exactly the live leases.
DROP INDEX task_runs_leases;
UPDATE task_runs SET lease_owner = NULL, lease_expires_at = NULL
WHERE status <> 'running' AND lease_expires_at IS NOT NULL;
CREATE INDEX task_runs_leases ON task_runs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
