-- Per-tenant HS256 secrets for end-user and admin JWTs, sealed with
-- AES-256-GCM (key id stored beside the ciphertext; the tenant id is bound in
-- as associated data).
create table tenant_jwt_secrets (
    tenant_id uuid primary key references tenants (id),
    key_id text not null,
    ciphertext bytea not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger tenant_jwt_secrets_updated_at before update on tenant_jwt_secrets
    for each row execute function set_updated_at();
