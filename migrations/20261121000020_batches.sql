-- Batches: a caller streams recipients in numbered chunks of up to 1,000;
-- each chunk is expanded by one `batch_chunk` job into notifications.
--
-- A chunk row stores the first answer (its recipients and a hash of the
-- request), so repeating a chunk number is a no-op. Every notification a
-- chunk creates carries (batch_id, batch_seq, batch_index, channel), unique,
-- so a repeated or concurrent expansion, or one cut off by a crash, never
-- creates a second notification.
create table batches (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    template_key text not null check (length(template_key) between 1 and 100),
    channels text[] not null check (cardinality(channels) between 1 and 5),
    locale text check (length(locale) between 1 and 35),
    defaults jsonb not null default '{}'::jsonb,
    metadata jsonb not null default '{}'::jsonb,
    status text not null default 'open'
        check (status in ('open', 'closed', 'cancelled', 'completed')),
    idempotency_key text check (length(idempotency_key) between 1 and 255),
    request_hash bytea,
    closed_at timestamptz,
    cancelled_at timestamptz,
    completed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create unique index batches_idempotency_key_idx
    on batches (tenant_id, idempotency_key) where idempotency_key is not null;
create index batches_tenant_created_idx on batches (tenant_id, created_at);
create trigger batches_updated_at before update on batches
    for each row execute function set_updated_at();

create table batch_chunks (
    batch_id uuid not null references batches (id) on delete cascade,
    seq integer not null check (seq >= 0),
    tenant_id uuid not null references tenants (id),
    recipients jsonb not null,
    recipient_count integer not null check (recipient_count between 1 and 1000),
    request_hash bytea not null,
    -- When its job last went to Redis; a chunk still unexpanded long after
    -- is pushed again.
    dispatched_at timestamptz,
    expanded_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (batch_id, seq)
);
create index batch_chunks_pending_idx on batch_chunks (dispatched_at) where expanded_at is null;
create trigger batch_chunks_updated_at before update on batch_chunks
    for each row execute function set_updated_at();

alter table notifications
    add column batch_id uuid references batches (id),
    add column batch_seq integer,
    add column batch_index integer;
create unique index notifications_batch_item_idx
    on notifications (batch_id, batch_seq, batch_index, channel) where batch_id is not null;
create index notifications_batch_status_idx
    on notifications (batch_id, status, id) where batch_id is not null;
