-- Operators may pause one provider config of an organisation: sends skip
-- it (failing over to the next config, or waiting when none is left) until
-- it is resumed. `paused_by` is the audit actor that paused it.
alter table provider_configs add column paused_at timestamptz;
alter table provider_configs add column paused_by text check (length(paused_by) <= 200);
alter table provider_configs add constraint provider_configs_paused_check
    check ((paused_at is null) = (paused_by is null));

-- Which scheduler replica won (and enqueued) each cron tick.
alter table cron_ticks add column claimed_by text check (length(claimed_by) <= 200);
