-- Two more metrics alert rules may watch: API 5xx answers
-- (`api_server_errors`, platform-wide rules) and disabled webhook
-- endpoints (`webhook_endpoint_disabled`).
alter table alert_rules drop constraint alert_rules_metric_check;
alter table alert_rules add constraint alert_rules_metric_check check (metric in (
    'failure_rate', 'queue_oldest_due_age', 'queue_depth', 'latency_p99', 'circuit_open',
    'no_worker_alive', 'baa_expiring', 'failed_work', 'api_server_errors',
    'webhook_endpoint_disabled'));
