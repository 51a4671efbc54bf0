-- Reusable message templates, kept by each tenant's administrators. The
-- content of every locale and channel sits in `locales` as JSON, e.g.
-- `{"en": {"email": {"subject": "…", "html": "…"}, "sms": {"body": "…"}}}`;
-- the application validates its shape and compiles every string before it is
-- stored.
create table templates (
    id uuid primary key,
    tenant_id uuid not null references tenants (id),
    key text collate "C" not null check (key ~ '^[a-z0-9][a-z0-9._-]{0,99}$'),
    name text not null check (length(name) between 1 and 200),
    description text check (length(description) <= 2000),
    category text check (category ~ '^[A-Za-z0-9._-]{1,100}$'),
    critical boolean not null default false,
    default_locale text not null check (length(default_locale) between 2 and 16),
    default_channels text[] not null check (
        cardinality(default_channels) > 0
        and default_channels <@ array['email', 'sms', 'push', 'whatsapp', 'inapp']::text[]
    ),
    locales jsonb not null check (jsonb_typeof(locales) = 'object' and locales ? default_locale),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    -- Also serves the admin list, which pages through a tenant's keys in order.
    constraint templates_tenant_id_key_key unique (tenant_id, key)
);
create trigger templates_updated_at before update on templates
    for each row execute function set_updated_at();
