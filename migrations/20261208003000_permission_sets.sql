-- Permission sets and delegation. A permission is `resource:action`
-- (shared::permissions). A set holds permissions and may include other sets
-- (no cycles: the API refuses them). Built-in sets have no organisation;
-- custom sets belong to one. A user's base set is the one assigned to it,
-- else the one its role maps to (`role_permission_sets`), so every existing
-- user keeps exactly what its role allowed: ADMIN maps to Owner (every
-- permission), every other role to Member (invite, read lookups, track
-- shipments).
create table permission_sets (
    id uuid primary key,
    -- null: built in, visible to every organisation.
    tenant_id uuid references tenants (id),
    key text not null check (key ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    name text not null check (length(name) between 1 and 100),
    description text check (length(description) <= 500),
    permissions text[] not null default '{}',
    created_by text not null default 'system',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create unique index permission_sets_key
    on permission_sets (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid), key);
create index permission_sets_tenant on permission_sets (tenant_id, id);
create trigger permission_sets_updated_at before update on permission_sets
    for each row execute function set_updated_at();

create table permission_set_includes (
    set_id uuid not null references permission_sets (id) on delete cascade,
    included_id uuid not null references permission_sets (id),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (set_id, included_id),
    check (set_id <> included_id)
);
create index permission_set_includes_included on permission_set_includes (included_id);
create trigger permission_set_includes_updated_at before update on permission_set_includes
    for each row execute function set_updated_at();

create table role_permission_sets (
    role text primary key,
    set_id uuid not null references permission_sets (id),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger role_permission_sets_updated_at before update on role_permission_sets
    for each row execute function set_updated_at();

-- The set assigned to a user (replaces its role's set).
create table user_permission_sets (
    user_id uuid primary key references users (id) on delete cascade,
    tenant_id uuid not null references tenants (id),
    set_id uuid not null references permission_sets (id),
    assigned_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index user_permission_sets_set on user_permission_sets (set_id);
create trigger user_permission_sets_updated_at before update on user_permission_sets
    for each row execute function set_updated_at();

-- Single permissions granted to a user on top of its base set.
create table user_permissions (
    id uuid primary key,
    user_id uuid not null references users (id) on delete cascade,
    tenant_id uuid not null references tenants (id),
    permission text not null,
    granted_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint user_permissions_user_permission_key unique (user_id, permission)
);
create trigger user_permissions_updated_at before update on user_permissions
    for each row execute function set_updated_at();

-- A user lends some of its permissions to another user of its organisation
-- for a window. Effective only while the window is open, it is not revoked,
-- and the delegator still holds each permission (checked when used).
create table permission_delegations (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    delegator_id uuid not null references users (id) on delete cascade,
    delegate_id uuid not null references users (id) on delete cascade,
    permissions text[] not null check (cardinality(permissions) between 1 and 64),
    starts_at timestamptz not null,
    ends_at timestamptz not null,
    reason text check (length(reason) <= 500),
    revoked_at timestamptz,
    revoked_by text,
    created_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check (delegator_id <> delegate_id),
    check (ends_at > starts_at)
);
create index permission_delegations_delegate on permission_delegations (delegate_id, ends_at);
create index permission_delegations_tenant on permission_delegations (tenant_id, id);
create trigger permission_delegations_updated_at before update on permission_delegations
    for each row execute function set_updated_at();

-- An API key's scopes; null: every permission (what keys could always do).
alter table api_keys add column scopes text[];

insert into permission_sets (id, tenant_id, key, name, description, permissions) values
    ('00000000-0000-7000-8000-000000000001', null, 'member', 'Member',
     'What every role but ADMIN could do: invite whom its role may invite, read lookups, track shipments',
     '{users:invite,lookups:read,shipments:read,shipments:write}'),
    ('00000000-0000-7000-8000-000000000002', null, 'viewer', 'Viewer',
     'Read everything but the audit log and security events',
     '{notifications:read,subscribers:read,topics:read,workflows:read,templates:read,providers:read,webhooks:read,users:read,organizations:read,alerts:read,errors:read,lookups:read,reports:read,shipments:read,console:read,permissions:read}'),
    ('00000000-0000-7000-8000-000000000003', null, 'developer', 'Developer',
     'Viewer, plus sending and building: templates, subscribers, topics, workflows, webhooks',
     '{notifications:send,notifications:cancel,subscribers:write,topics:write,workflows:write,workflows:trigger,templates:write,webhooks:manage,shipments:write}'),
    ('00000000-0000-7000-8000-000000000004', null, 'admin', 'Admin',
     'Developer, plus providers, users, organisation settings, audit, security and operations',
     '{providers:manage,users:invite,users:manage,organizations:manage,audit:read,security:read,alerts:manage,lookups:write,reports:manage,console:retry,console:manage}'),
    ('00000000-0000-7000-8000-000000000005', null, 'owner', 'Owner',
     'Admin, plus managing permission sets: every permission',
     '{permissions:manage}');

insert into permission_set_includes (set_id, included_id) values
    ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-000000000002'),
    ('00000000-0000-7000-8000-000000000004', '00000000-0000-7000-8000-000000000003'),
    ('00000000-0000-7000-8000-000000000005', '00000000-0000-7000-8000-000000000004');

insert into role_permission_sets (role, set_id)
select r, case when r = 'ADMIN' then '00000000-0000-7000-8000-000000000005'::uuid
               else '00000000-0000-7000-8000-000000000001'::uuid end
from unnest(array['ADMIN', 'DOCTOR', 'LAB_TECH', 'PHARMACIST', 'MARKETER', 'SUPPORT', 'SALES',
    'DISTRIBUTOR', 'MASTER_DISTRIBUTOR', 'OFFICE_ADMIN', 'MEDICAL_STAFF', 'IVR_COMPANY',
    'SHIPPING_LOGISTICS', 'CHP_ADMIN']) as r;
