-- The statement-level triggers that read transition tables are planned
-- for each statement. PL/pgSQL otherwise switches to a cached generic
-- plan after a few calls, planned for whatever size the transition table
-- had then; a plan made for a one-row update joined old and new rows by a
-- nested loop, so one update of 5,000 notifications took 2.8 s instead of
-- 25 ms (quadratic in the statement's rows).
alter function delivery_deltas_of_update() set plan_cache_mode = force_custom_plan;
alter function delivery_deltas_of_insert() set plan_cache_mode = force_custom_plan;
alter function delivery_attempts_errors() set plan_cache_mode = force_custom_plan;
