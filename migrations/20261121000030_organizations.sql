-- Organisations are tenants: their type, contact, address, settings and BAA
-- state live on `tenants`; every signed BAA is kept in `baa_agreements`.
-- Users (platform and organisation staff) sign in with a password; they
-- join by invitation. BAA reminders sent are recorded per agreement and
-- threshold, so each goes out once.

alter table tenants drop constraint tenants_status_check;
alter table tenants add constraint tenants_status_check
    check (status in ('active', 'suspended', 'inactive'));
alter table tenants
    add column type text not null default 'clinic'
        check (type in ('platform', 'clinic', 'hospital', 'pharmacy', 'laboratory',
                        'telehealth', 'distributor', 'other')),
    add column contact jsonb not null default '{}'::jsonb,
    add column address jsonb not null default '{}'::jsonb,
    add column settings jsonb not null default '{}'::jsonb,
    add column current_baa_id uuid;
-- One platform organisation: its admins administer every organisation.
create unique index tenants_one_platform_idx on tenants ((type)) where type = 'platform';

create table baa_agreements (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    signed_on date not null,
    expires_on date not null,
    document_url text not null check (length(document_url) between 1 and 2048),
    signed_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check (expires_on > signed_on)
);
create index baa_agreements_tenant_idx on baa_agreements (tenant_id, created_at);
create trigger baa_agreements_updated_at before update on baa_agreements
    for each row execute function set_updated_at();
alter table tenants add constraint tenants_current_baa_fk
    foreign key (current_baa_id) references baa_agreements (id);

-- The primary key is the "sent once" guarantee: the reminder job inserts the
-- row in the transaction that queues the notices.
create table baa_reminders_sent (
    agreement_id uuid not null references baa_agreements (id),
    threshold text not null check (length(threshold) between 1 and 20),
    tenant_id uuid not null references tenants (id),
    scheduled_for timestamptz not null,
    recipients integer not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (agreement_id, threshold)
);
create trigger baa_reminders_sent_updated_at before update on baa_reminders_sent
    for each row execute function set_updated_at();

create table users (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    email text not null check (length(email) between 3 and 254),
    first_name text check (length(first_name) <= 100),
    last_name text check (length(last_name) <= 100),
    role text not null check (role in ('ADMIN', 'DOCTOR', 'LAB_TECH', 'PHARMACIST', 'MARKETER',
        'SUPPORT', 'SALES', 'DISTRIBUTOR', 'MASTER_DISTRIBUTOR', 'OFFICE_ADMIN',
        'MEDICAL_STAFF', 'IVR_COMPANY', 'SHIPPING_LOGISTICS', 'CHP_ADMIN')),
    status text not null default 'active' check (status in ('active', 'inactive')),
    -- argon2id PHC string; null until a password is set.
    password_hash text,
    must_change_password boolean not null default false,
    -- Tokens issued before this (whole seconds) are refused.
    tokens_valid_after timestamptz not null default date_trunc('second', now()),
    last_login_at timestamptz,
    created_by text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create unique index users_email_key on users (lower(email));
create index users_tenant_idx on users (tenant_id, created_at);
create trigger users_updated_at before update on users
    for each row execute function set_updated_at();

-- `token_hash` is the SHA-256 of the current token (null until the
-- invitation job issues one, and again once it is used or withdrawn).
create table invitations (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    email text not null check (length(email) between 3 and 254),
    invitation_type text not null check (invitation_type in ('doctor', 'sales', 'distributor',
        'master_distributor', 'office_admin', 'medical_staff', 'ivr_company',
        'shipping_logistics', 'admin', 'chp_admin')),
    first_name text check (length(first_name) <= 100),
    last_name text check (length(last_name) <= 100),
    message text check (length(message) <= 2000),
    token_hash bytea,
    status text not null default 'pending'
        check (status in ('pending', 'sent', 'accepted', 'failed', 'cancelled', 'expired')),
    expires_at timestamptz not null,
    invited_by text not null,
    notification_id uuid references notifications (id),
    user_id uuid references users (id),
    send_count integer not null default 0,
    sent_at timestamptz,
    accepted_at timestamptz,
    cancelled_at timestamptz,
    dispatched_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create unique index invitations_token_hash_key on invitations (token_hash) where token_hash is not null;
-- One open invitation per address and organisation.
create unique index invitations_open_email_key on invitations (tenant_id, lower(email))
    where status in ('pending', 'sent');
create index invitations_tenant_created_idx on invitations (tenant_id, created_at);
create index invitations_pending_idx on invitations (created_at) where status = 'pending';
create index invitations_open_expiry_idx on invitations (expires_at) where status in ('pending', 'sent');
create trigger invitations_updated_at before update on invitations
    for each row execute function set_updated_at();
