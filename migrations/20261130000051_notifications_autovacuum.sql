-- Batches and CSV jobs grow `notifications` and its companions by hundreds
-- of thousands of rows in minutes. With the default thresholds (20% of the
-- table) a table that starts small goes long without statistics or vacuum,
-- and the planner then picks tenant-wide scans for by-id updates. Analyze
-- after 2% change and vacuum after 5%.
alter table notifications set (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
alter table delivery_attempts set (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
alter table subscriber_events set (
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);
