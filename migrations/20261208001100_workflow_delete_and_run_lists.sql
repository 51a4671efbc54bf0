-- Deleting a workflow keeps its versions and its runs' history (who was
-- sent what, and why a run ended) and frees its key: the row is marked
-- deleted, and the key is unique only among workflows not deleted.
alter table workflows add column deleted_at timestamptz;
alter table workflows drop constraint workflows_tenant_key_key;
create unique index workflows_tenant_key_key on workflows (tenant_id, key)
    where deleted_at is null;

-- Run lists: an organisation's runs, newest first.
create index workflow_runs_tenant_created_idx on workflow_runs (tenant_id, created_at desc, id desc);
