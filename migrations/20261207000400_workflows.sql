-- Workflows: an organisation's multi-step notification journeys (send,
-- delay, wait for a status or an event, branch, digest, throttle), keyed and
-- versioned. Each save is a new version; a run keeps the version it started
-- with. A run's current step is the run row itself with its `run_at`: the
-- scheduler claims due runs (`for update skip locked`), executes the step and
-- advances in the same transaction, so each step runs once per run.
create table workflows (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    key text not null check (key ~ '^[a-z0-9][a-z0-9._-]{0,99}$'),
    -- The newest version (the one new runs start with).
    version integer not null check (version >= 1),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint workflows_tenant_key_key unique (tenant_id, key)
);
create trigger workflows_updated_at before update on workflows
    for each row execute function set_updated_at();

create table workflow_versions (
    workflow_id uuid not null references workflows (id) on delete cascade,
    tenant_id uuid not null references tenants (id),
    version integer not null check (version >= 1),
    name text not null check (length(name) between 1 and 200),
    -- The steps as validated on save.
    steps jsonb not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (workflow_id, version)
);
create trigger workflow_versions_updated_at before update on workflow_versions
    for each row execute function set_updated_at();

-- One trigger request (its Idempotency-Key and the runs it started).
create table workflow_triggers (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    idempotency_key text check (length(idempotency_key) between 1 and 255),
    request_hash bytea,
    run_ids uuid[] not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create unique index workflow_triggers_idempotency_idx
    on workflow_triggers (tenant_id, idempotency_key) where idempotency_key is not null;
create trigger workflow_triggers_updated_at before update on workflow_triggers
    for each row execute function set_updated_at();

create table workflow_runs (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    workflow_id uuid not null references workflows (id) on delete cascade,
    version integer not null,
    subscriber_id uuid not null references subscribers (id) on delete cascade,
    payload jsonb not null,
    cancellation_key text check (length(cancellation_key) between 1 and 255),
    -- `running` (the current step is due at run_at), `waiting` (for a
    -- status, an event or a digest window; run_at is when to look again),
    -- then `completed`, `cancelled`, `failed`, `merged` (its trigger was
    -- collected by another run's digest) or `dropped` (throttled).
    status text not null check (status in
        ('running', 'waiting', 'completed', 'cancelled', 'failed', 'merged', 'dropped')),
    -- The current step's place in the version's steps.
    step integer not null default 0,
    -- When the current step became current.
    step_started_at timestamptz not null default now(),
    run_at timestamptz,
    -- While waiting: the deadline, and what ends the wait early.
    wait_until timestamptz,
    wait_notifications uuid[],
    wait_status text check (wait_status in ('read', 'delivered', 'sent')),
    wait_event text,
    -- The event that ended a wait (its payload), until the step takes it.
    event_payload jsonb,
    -- While collecting a digest: its key, and the triggers collected.
    digest_key text,
    digest_items jsonb,
    error text,
    finished_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index workflow_runs_due_idx on workflow_runs (run_at)
    where status in ('running', 'waiting');
create index workflow_runs_waiting_notifications_idx on workflow_runs (tenant_id)
    where status = 'waiting' and wait_notifications is not null;
create index workflow_runs_event_idx on workflow_runs (tenant_id, subscriber_id, wait_event)
    where status = 'waiting' and wait_event is not null;
create index workflow_runs_cancellation_idx on workflow_runs (tenant_id, cancellation_key)
    where cancellation_key is not null;
create index workflow_runs_digest_idx on workflow_runs (workflow_id, subscriber_id, step, digest_key)
    where status = 'waiting' and digest_key is not null;
create trigger workflow_runs_updated_at before update on workflow_runs
    for each row execute function set_updated_at();

-- Each step a run executed, once: the primary key makes a second execution
-- of a step in the same run impossible.
create table workflow_run_steps (
    run_id uuid not null references workflow_runs (id) on delete cascade,
    tenant_id uuid not null references tenants (id),
    step_key text not null,
    seq integer not null,
    kind text not null,
    -- What came of it: `sent`, `skipped`, `met`, `timed_out`, `done`,
    -- `taken`, `not_taken`, `collected`, `passed`, `dropped`, `failed`.
    outcome text not null,
    detail text,
    notification_ids uuid[] not null default '{}',
    -- For throttles: whose quota it used.
    workflow_id uuid not null,
    subscriber_id uuid not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (run_id, step_key)
);
create index workflow_run_steps_throttle_idx
    on workflow_run_steps (workflow_id, subscriber_id, step_key, finished_at)
    where outcome = 'passed';
create trigger workflow_run_steps_updated_at before update on workflow_run_steps
    for each row execute function set_updated_at();
