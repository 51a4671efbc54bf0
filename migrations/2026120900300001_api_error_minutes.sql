-- API 5xx answers per organisation and minute, for alert rules
-- (`api_server_errors`) whose windows are shorter than the hourly error
-- counts (`error_hours`). Written in the same statement as the error groups
-- (`shared::db::errors::record`); the nil uuid is the platform's own, which
-- is where the API counts its 5xx today. Kept two days (the longest alert
-- window is one).
create table api_error_minutes (
    tenant_id uuid not null,
    minute timestamptz not null,
    occurrences bigint not null default 0 check (occurrences >= 0),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, minute)
);
create index api_error_minutes_minute_idx on api_error_minutes (minute);
create trigger api_error_minutes_updated_at before update on api_error_minutes
    for each row execute function set_updated_at();
