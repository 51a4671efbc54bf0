-- Topics: named groups of an organisation's subscribers (a care team's
-- patients, a ward, a programme). A send to a topic becomes a closed batch
-- whose chunks are cut from the membership in one statement, and is then
-- expanded by the batch workers like any other batch.
create table topics (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    -- The caller's name for it: lower-case letters, digits, `.`, `_`, `-`.
    key text not null check (key ~ '^[a-z0-9][a-z0-9._-]{0,99}$'),
    name text not null check (length(name) between 1 and 200),
    description text check (length(description) between 1 and 2000),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint topics_tenant_key_key unique (tenant_id, key)
);
create trigger topics_updated_at before update on topics
    for each row execute function set_updated_at();

-- Membership: deleting a topic or a subscriber removes their rows. The
-- primary key is also the order members are listed and chunks are cut in.
create table topic_members (
    topic_id uuid not null references topics (id) on delete cascade,
    subscriber_id uuid not null references subscribers (id) on delete cascade,
    tenant_id uuid not null references tenants (id),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (topic_id, subscriber_id)
);
create index topic_members_subscriber_idx on topic_members (subscriber_id);
create trigger topic_members_updated_at before update on topic_members
    for each row execute function set_updated_at();


-- System broadcasts: a platform admin's message to every subscriber of every
-- organisation, or of the ones named. Each organisation's share is a set of
-- in-app (and optionally email) notifications born undispatched; the
-- dispatcher feeds them to the channel queues.
create table broadcasts (
    id uuid primary key,
    -- Who sent it (`user:<id>` or `api_key:<id>`), as the audit log names them.
    actor text not null check (length(actor) between 1 and 200),
    title text not null check (length(title) between 1 and 200),
    body text not null check (length(body) between 1 and 5000),
    severity text not null check (severity in ('info', 'warning', 'critical')),
    action_url text check (length(action_url) between 1 and 2000),
    email_subject text check (length(email_subject) between 1 and 998),
    -- The organisations named; null: every organisation.
    organizations uuid[],
    -- Notifications created, per channel.
    inapp_count bigint not null default 0,
    email_count bigint not null default 0,
    idempotency_key text check (length(idempotency_key) between 1 and 255),
    request_hash bytea,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create unique index broadcasts_idempotency_key_idx
    on broadcasts (actor, idempotency_key) where idempotency_key is not null;
create index broadcasts_created_idx on broadcasts (created_at, id);
create trigger broadcasts_updated_at before update on broadcasts
    for each row execute function set_updated_at();

-- A notification of a broadcast names it.
alter table notifications add column broadcast_id uuid references broadcasts (id);
create index notifications_broadcast_idx on notifications (broadcast_id, channel, status)
    where broadcast_id is not null;
