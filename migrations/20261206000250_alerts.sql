-- Alert rules, the alerts they open, each alert's history, and the
-- notifications every transition sends.
--
-- A rule belongs to one organisation, or to the platform (`tenant_id` null,
-- visible to platform admins only). `escalation` is the list of levels:
-- after N minutes unacknowledged, notify these channels. `evaluated_for` is
-- the evaluation period the rule was last claimed for: the scheduler that
-- moves it forward evaluates the rule, the others skip it, so each rule is
-- evaluated once per period however many schedulers run.
create table alert_rules (
    id uuid primary key,
    tenant_id uuid references tenants (id) on delete cascade,
    name text not null check (length(name) between 1 and 200),
    metric text not null check (metric in ('failure_rate', 'queue_oldest_due_age', 'queue_depth',
        'latency_p99', 'circuit_open', 'no_worker_alive', 'baa_expiring', 'failed_work')),
    scope jsonb not null default '{}'::jsonb,
    threshold double precision not null,
    window_secs integer not null check (window_secs between 1 and 86400),
    severity text not null check (severity in ('info', 'warning', 'critical')),
    cooldown_secs integer not null check (cooldown_secs between 0 and 604800),
    escalation jsonb not null default '[]'::jsonb,
    enabled boolean not null default true,
    builtin text check (builtin in ('high_failure_rate', 'stuck_queue', 'breaker_open',
        'baa_expiring')),
    evaluated_for timestamptz,
    created_by text not null check (length(created_by) <= 200),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index alert_rules_tenant_idx on alert_rules (tenant_id, created_at, id);
create unique index alert_rules_builtin_idx on alert_rules (tenant_id, builtin)
    where builtin is not null;
create trigger alert_rules_updated_at before update on alert_rules
    for each row execute function set_updated_at();

-- Organisations whose default rules were created: a default rule the
-- organisation deleted is not created again.
create table alert_rule_defaults (
    tenant_id uuid primary key references tenants (id) on delete cascade,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger alert_rule_defaults_updated_at before update on alert_rule_defaults
    for each row execute function set_updated_at();

-- One alert per rule and subject while it is not resolved: the partial
-- unique index is what makes an alert open once.
create table alerts (
    id uuid primary key,
    tenant_id uuid references tenants (id) on delete cascade,
    rule_id uuid not null references alert_rules (id) on delete cascade,
    subject text not null check (length(subject) between 1 and 200),
    status text not null check (status in ('open', 'acknowledged', 'resolved')),
    severity text not null check (severity in ('info', 'warning', 'critical')),
    summary text not null check (length(summary) <= 1000),
    value double precision not null,
    -- How many escalation levels were notified.
    level integer not null default 0,
    opened_at timestamptz not null,
    acknowledged_at timestamptz,
    acknowledged_by text check (length(acknowledged_by) <= 200),
    resolved_at timestamptz,
    -- `auto` when the condition cleared, else the audit actor.
    resolved_by text check (length(resolved_by) <= 200),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check ((status = 'resolved') = (resolved_at is not null))
);
create unique index alerts_active_key on alerts (rule_id, subject) where status <> 'resolved';
create index alerts_rule_subject_idx on alerts (rule_id, subject, resolved_at desc);
create index alerts_tenant_idx on alerts (tenant_id, opened_at desc, id desc);
create trigger alerts_updated_at before update on alerts
    for each row execute function set_updated_at();

-- Every transition of an alert.
create table alert_events (
    id bigint generated always as identity primary key,
    alert_id uuid not null references alerts (id) on delete cascade,
    tenant_id uuid references tenants (id) on delete cascade,
    kind text not null check (kind in ('opened', 'escalated', 'acknowledged', 'resolved')),
    level integer,
    actor text not null check (length(actor) <= 200),
    at timestamptz not null,
    details jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index alert_events_alert_idx on alert_events (alert_id, id);
create trigger alert_events_updated_at before update on alert_events
    for each row execute function set_updated_at();

-- The notifications of each transition, one per channel target. In-app and
-- email go through the platform's own notifications (`notification_ids`);
-- Slack, PagerDuty and webhooks are outgoing calls the scheduler makes with
-- retries. The unique key is the "sent once per transition" guarantee.
create table alert_deliveries (
    id uuid primary key,
    alert_id uuid not null references alerts (id) on delete cascade,
    event_id bigint not null references alert_events (id) on delete cascade,
    tenant_id uuid references tenants (id) on delete cascade,
    channel text not null check (channel in ('in_app', 'email', 'webhook', 'slack', 'pagerduty')),
    target_key text not null check (length(target_key) <= 200),
    target jsonb not null default '{}'::jsonb,
    action text not null check (action in ('trigger', 'acknowledge', 'resolve')),
    status text not null check (status in ('queued', 'sending', 'sent', 'failed', 'skipped')),
    attempts integer not null default 0,
    run_at timestamptz not null,
    response_status integer,
    last_error text check (length(last_error) <= 1000),
    notification_ids uuid[] not null default '{}',
    sent_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint alert_deliveries_once unique (event_id, channel, target_key)
);
create index alert_deliveries_alert_idx on alert_deliveries (alert_id, created_at);
create index alert_deliveries_due_idx on alert_deliveries (run_at)
    where status in ('queued', 'sending');
create trigger alert_deliveries_updated_at before update on alert_deliveries
    for each row execute function set_updated_at();
