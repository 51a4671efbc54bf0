//! The production deployment (`deploy/`) against the platform it deploys:
//! the Kustomize overlay renders and wires every queue, probe, secret and
//! drain bound to what the services really do, and every metric the KEDA
//! triggers, the Grafana dashboard and the alert rules read is one the
//! running platform exports.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use promql::{missing, selectors};
use serde_json::Value;
use shared::jobs::QueueName;
use testkit::{
    TestApp,
    smtp::{Behaviour, SmtpServer},
};

mod promql;

const WAIT: Duration = Duration::from_secs(30);

/// Gauges the scheduler sets for every queue of jobs.toml (`queue_depth`
/// only exists for the queues the dispatcher feeds).
const PER_QUEUE: &[&str] = &[
    "queue_due",
    "queue_oldest_due_seconds",
    "queue_paused",
    "workers_alive",
];

/// The variables that hold credentials: only ever read from a Secret.
const SECRET_VARS: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "ENCRYPTION_KEYS",
    "ENCRYPTION_KEY_ID",
    "SMTP_URL",
];

fn root() -> PathBuf {
    testkit::repo_root()
}

/// `kubectl kustomize <dir>` as parsed documents.
fn render(dir: &str) -> Vec<Value> {
    let kubectl = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
    assert!(
        kubectl.exists(),
        "kubectl not found at {} (set KUBECTL to its path): the deployment test renders \
         the Kustomize overlay with `kubectl kustomize`",
        kubectl.display()
    );
    let out = std::process::Command::new(&kubectl)
        .arg("kustomize")
        .arg(root().join(dir))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout).expect("UTF-8 manifests"))
}

fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            let v = serde_yaml::Value::deserialize(d).expect("valid YAML");
            serde_json::to_value(v).expect("YAML with string keys")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        .collect()
}

/// A container's environment as the process sees it: `envFrom` ConfigMaps,
/// then `env` values; variables from a Secret read `<secret:name/key>`.
fn environment(docs: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let cm = from["configMapRef"]["name"]
            .as_str()
            .expect("envFrom names a ConfigMap");
        let map = of_kind(docs, "ConfigMap")
            .into_iter()
            .find(|d| name(d) == cm)
            .unwrap_or_else(|| panic!("envFrom ConfigMap {cm} is rendered"));
        for (k, v) in map["data"].as_object().into_iter().flatten() {
            env.insert(k.clone(), v.as_str().unwrap_or_default().to_owned());
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let key = var["name"].as_str().unwrap().to_owned();
        let value = match (&var["value"], &var["valueFrom"]["secretKeyRef"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::Object(r)) => format!("<secret:{}/{}>", r["name"], r["key"]),
            other => panic!("env {key}: neither a value nor a Secret key: {other:?}"),
        };
        env.insert(key, value);
    }
    env
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().expect("host:port")
}

#[test]
fn the_production_overlay_wires_every_queue_probe_secret_and_drain_bound() {
    let base = render("deploy/kubernetes/base");
    assert!(!of_kind(&base, "Deployment").is_empty());
    let docs = render("deploy/kubernetes/overlays/production");
    let deployments = of_kind(&docs, "Deployment");

    // jobs.toml ships as a ConfigMap equal to the repository's file, mounted
    // where JOBS_FILE points.
    let jobs_text = std::fs::read_to_string(root().join("jobs.toml")).unwrap();
    let jobs_maps: Vec<&Value> = of_kind(&docs, "ConfigMap")
        .into_iter()
        .filter(|d| d["data"]["jobs.toml"].is_string())
        .collect();
    assert_eq!(jobs_maps.len(), 1, "one jobs.toml ConfigMap");
    assert!(
        jobs_maps[0]["data"]["jobs.toml"] == jobs_text.as_str(),
        "deploy/kubernetes/base/jobs.toml differs from jobs.toml; run \
         `cp jobs.toml deploy/kubernetes/base/jobs.toml`"
    );
    let jobs_map = name(jobs_maps[0]);

    // Every queue of jobs.toml is served by exactly one worker group, and
    // every group has its ScaledObject reading its own queues.
    let jobs = shared::config::JobsConfig::load(&root().join("jobs.toml"), Vec::new()).unwrap();
    let mut served: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let exported = exported_gauges();
    for d in &deployments {
        let pod = &d["spec"]["template"]["spec"];
        let main = &pod["containers"][0];
        let env = environment(&docs, main);
        let Some(queues) = env.get("WORKER_QUEUES") else {
            continue;
        };
        let queues: BTreeSet<String> = queues.split(',').map(|q| q.trim().to_owned()).collect();
        for q in &queues {
            q.parse::<QueueName>()
                .unwrap_or_else(|e| panic!("{}: WORKER_QUEUES: {e}", name(d)));
            served
                .entry(q.clone())
                .or_default()
                .push(name(d).to_owned());
        }
        assert!(
            d["spec"]["replicas"].is_null(),
            "{}: replicas belong to its ScaledObject",
            name(d)
        );
        let scaled: Vec<&Value> = of_kind(&docs, "ScaledObject")
            .into_iter()
            .filter(|s| s["spec"]["scaleTargetRef"]["name"] == name(d))
            .collect();
        assert_eq!(scaled.len(), 1, "{}: one ScaledObject", name(d));
        let spec = &scaled[0]["spec"];
        assert!(spec["minReplicaCount"].as_u64().unwrap() >= 1, "{spec}");
        assert!(
            spec["maxReplicaCount"].as_u64() >= spec["minReplicaCount"].as_u64(),
            "{spec}"
        );
        let triggers = spec["triggers"].as_array().unwrap();
        assert!(!triggers.is_empty());
        let mut read = BTreeSet::new();
        for t in triggers {
            assert_eq!(t["type"], "prometheus", "{t}");
            let query = t["metadata"]["query"].as_str().unwrap();
            assert!(
                t["metadata"]["threshold"]
                    .as_str()
                    .unwrap()
                    .parse::<f64>()
                    .unwrap()
                    > 0.0
            );
            for (metric, matchers) in selectors(query) {
                assert!(
                    exported.contains(&metric),
                    "{}: trigger reads {metric}, a gauge the platform does not set",
                    name(d)
                );
                let regex = matchers
                    .get("queue")
                    .unwrap_or_else(|| panic!("{query}: selects its queues"));
                let selected: BTreeSet<String> = regex.split('|').map(str::to_owned).collect();
                assert_eq!(selected, queues, "{}: {query}", name(d));
                read.insert(metric);
            }
        }
        for needed in ["queue_depth", "queue_due"] {
            assert!(read.contains(needed), "{}: scales on {needed}", name(d));
        }
    }
    for queue in jobs.queues.keys() {
        let groups = served.get(queue).cloned().unwrap_or_default();
        assert_eq!(groups.len(), 1, "queue {queue} is served by {groups:?}");
    }
    for queue in served.keys() {
        assert!(
            jobs.queues.contains_key(queue),
            "{queue} is not in jobs.toml"
        );
    }

    // Every pod: probes on the port its process listens on, a grace period
    // above the drain bound, non-root read-only containers with resources,
    // credentials only from Secrets, jobs.toml mounted where JOBS_FILE says.
    let mut migrates = false;
    for d in &deployments {
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{}", name(d));
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        for c in containers(pod) {
            let what = format!("{}/{}", name(d), c["name"].as_str().unwrap());
            let env = environment(&docs, c);
            let command: Vec<&str> = ["command", "args"]
                .iter()
                .flat_map(|k| c[*k].as_array().into_iter().flatten())
                .map(|v| v.as_str().unwrap())
                .collect();
            migrates |= command == ["api", "migrate"];
            for limit in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    assert!(c["resources"][limit][r].is_string(), "{what}: {limit}.{r}");
                }
            }
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{what}"
            );
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{what}"
            );
            for var in SECRET_VARS {
                if let Some(v) = env.get(*var) {
                    assert!(v.starts_with("<secret:"), "{what}: {var} is inlined");
                }
            }
            assert!(env.contains_key("DATABASE_URL"), "{what}: DATABASE_URL");
            let jobs_file = env.get("JOBS_FILE").expect("JOBS_FILE is set");
            let mounted = c["volumeMounts"].as_array().unwrap().iter().any(|m| {
                let volume = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .unwrap();
                volume["configMap"]["name"] == jobs_map
                    && format!("{}/jobs.toml", m["mountPath"].as_str().unwrap()) == *jobs_file
            });
            assert!(mounted, "{what}: jobs.toml is mounted at {jobs_file}");
            if pod["initContainers"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i == c))
            {
                continue;
            }
            let drain: u64 = env
                .get("SHUTDOWN_TIMEOUT_SECS")
                .map_or(30, |v| v.parse().unwrap());
            let pause: u64 = match c["lifecycle"]["preStop"]["exec"]["command"].as_array() {
                Some(cmd) if cmd[0] == "sleep" => cmd[1].as_str().unwrap().parse().unwrap(),
                Some(cmd) => panic!("{what}: unexpected preStop {cmd:?}"),
                None => 0,
            };
            assert!(
                grace > drain + pause,
                "{what}: terminationGracePeriodSeconds {grace} <= SHUTDOWN_TIMEOUT_SECS {drain} + preStop {pause}"
            );
            let listen = match command[0] {
                "api" => env.get("API_ADDR"),
                _ => env.get("METRICS_ADDR"),
            }
            .unwrap_or_else(|| panic!("{what}: listens on an address"));
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                let get = &c[probe]["httpGet"];
                assert!(get["path"].is_string(), "{what}: {probe}");
                let port = match &get["port"] {
                    Value::String(named) => c["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["name"] == named.as_str())
                        .unwrap_or_else(|| panic!("{what}: port {named}"))["containerPort"]
                        .as_u64()
                        .unwrap(),
                    n => n.as_u64().unwrap(),
                };
                assert_eq!(port, port_of(listen), "{what}: {probe} port");
                let served_paths = probe_paths(command[0]);
                assert!(
                    served_paths.contains(&get["path"].as_str().unwrap()),
                    "{what}: {probe} {} is not a route of `{}`",
                    get["path"],
                    command[0]
                );
            }
            if command[0] != "api" {
                assert_eq!(
                    d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
                    port_of(listen).to_string(),
                    "{what}: scraped on its metrics port"
                );
            }
        }
        let pdbs: Vec<&Value> = of_kind(&docs, "PodDisruptionBudget")
            .into_iter()
            .filter(|p| p["spec"]["selector"] == d["spec"]["selector"])
            .collect();
        assert_eq!(pdbs.len(), 1, "{}: a PodDisruptionBudget", name(d));
    }
    assert!(migrates, "something runs `api migrate`");
    let commands: BTreeSet<&str> = deployments
        .iter()
        .map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["command"][0]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(commands, BTreeSet::from(["api", "scheduler", "worker"]));

    // Credentials are referenced by name, never shipped.
    for s in of_kind(&docs, "Secret") {
        assert!(
            s["data"].is_null() && s["stringData"].is_null(),
            "Secret {} has inline data",
            name(s)
        );
    }
    for cm in of_kind(&docs, "ConfigMap") {
        for var in SECRET_VARS {
            assert!(
                cm["data"][var].is_null(),
                "ConfigMap {} holds {var}",
                name(cm)
            );
        }
    }
}

/// The paths each service answers probes on: the api's come from its
/// OpenAPI document; the worker and scheduler serve `/health/live` and
/// `/metrics` on METRICS_ADDR (checked over HTTP below).
fn probe_paths(service: &str) -> Vec<&'static str> {
    match service {
        "api" => {
            let spec: Value = serde_json::from_str(&api::openapi().spec()).unwrap();
            let paths = spec["paths"].as_object().unwrap();
            ["/health/live", "/health/ready"]
                .into_iter()
                .filter(|p| paths.contains_key(*p))
                .collect()
        }
        _ => vec!["/health/live", "/metrics"],
    }
}

/// Gauges some service sets (`gauge!("name"` in the sources).
fn exported_gauges() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = ["api/src", "worker/src", "scheduler/src", "shared/src"]
        .iter()
        .map(|d| root().join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .split_whitespace()
                    .collect();
                for part in text.split("gauge!(\"").skip(1) {
                    found.insert(part.split('"').next().unwrap().to_owned());
                }
            }
        }
    }
    found
}

/// Every PromQL expression the deployment reads: KEDA triggers, dashboard
/// panels (and its variables' sources), alert rules.
fn deployment_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let scaling =
        std::fs::read_to_string(root().join("deploy/kubernetes/base/scaling.yaml")).unwrap();
    for so in yaml_documents(&scaling) {
        for t in so["spec"]["triggers"].as_array().unwrap() {
            queries.push((
                format!("ScaledObject {}", name(&so)),
                t["metadata"]["query"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/platform-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                format!("panel {}", panel["title"]),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(def) = var["definition"].as_str() {
            // label_values(metric, label)
            let inner = def
                .trim_start_matches("label_values(")
                .trim_end_matches(')');
            let metric = inner.split(',').next().unwrap().trim();
            queries.push((format!("variable {}", var["name"]), metric.to_owned()));
        }
    }
    let alerts: Value = {
        let text = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
        yaml_documents(&text).remove(0)
    };
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            for key in ["alert", "expr", "for"] {
                assert!(rule[key].is_string(), "alert rule without {key}: {rule}");
            }
            assert!(
                ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap()),
                "{rule}"
            );
            for key in ["summary", "description", "runbook"] {
                assert!(
                    rule["annotations"][key].is_string(),
                    "{}: {key}",
                    rule["alert"]
                );
            }
            queries.push((
                format!("alert {}", rule["alert"]),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    queries
}

/// Starts the platform, drives sends that succeed, one that is retried and
/// then fails, and a dispatcher pass over its due retry; then every metric
/// the deployment reads must be on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_the_dashboard_alerts_and_autoscaling_read_is_exported() {
    let queries = deployment_queries();
    assert!(queries.len() > 20, "{queries:?}");
    let jobs = shared::config::JobsConfig::load(&root().join("jobs.toml"), Vec::new()).unwrap();
    let smtp = SmtpServer::start_with(Behaviour::RejectRecipients(421, "4.3.2 Busy".into())).await;
    let app = TestApp::builder().smtp(smtp).spawn().await;

    // Retried once (its next attempt is due in Postgres and dispatched by
    // the scheduler), then refused for good.
    let failing = app.send_to("pat@example.org").await;
    testkit::eventually("a first attempt to be retried", WAIT, || async {
        (app.notification(&failing).await["attempt_count"] == 1).then_some(())
    })
    .await;
    app.smtp.set_behaviour(Behaviour::RejectRecipients(
        550,
        "5.1.1 No such user".into(),
    ));
    app.wait_for_status(&failing, "failed", WAIT).await;
    app.smtp.set_behaviour(Behaviour::Accept);
    let mut sent = Vec::new();
    for to in ["a@example.org", "b@example.org", "c@example.org"] {
        sent.push(app.send_to(to).await);
    }
    for id in &sent {
        app.wait_for_status(id, "sent", WAIT).await;
    }
    let health = app.get_anonymous("/health/ready").await;
    assert_eq!(health.status(), 200);

    // The gauges are set on the scheduler's sweeps: wait for the page to
    // carry everything, up to a bound, then report what is missing.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (page, gaps) = loop {
        let page = app.metrics_page().await;
        let mut gaps = missing(&page, &queries);
        // The per-queue gauges the scaling and the alerts rely on carry a
        // series for every queue, idle ones included (0, not absent).
        for queue in jobs.queues.keys() {
            for gauge in PER_QUEUE {
                let series = format!("{gauge}{{queue=\"{queue}\"}}");
                if !page.contains(&series) {
                    gaps.insert(series);
                }
            }
        }
        if gaps.is_empty() || tokio::time::Instant::now() > deadline {
            break (page, gaps);
        }
        // Polls /metrics until every series shows; ends on a condition.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        gaps.is_empty(),
        "read by the deployment but not on /metrics: {gaps:?}\n{}",
        queries
            .iter()
            .filter(|(_, q)| selectors(q).iter().any(|(m, _)| gaps.contains(m)))
            .map(|(w, q)| format!("  {w}: {q}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        page.contains(r#"notifications_sent_total{channel="email",outcome="failed"}"#),
        "the failed send is counted:\n{page}"
    );
    app.shutdown().await;
}

/// The probe paths the manifests use answer 200 on the real servers: the
/// api's on its port, the worker's and scheduler's on METRICS_ADDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_routes_answer_on_the_running_services() {
    let app = TestApp::spawn_api_only().await;
    assert_eq!(probe_paths("api"), ["/health/live", "/health/ready"]);
    for path in probe_paths("api") {
        let resp = app.get_anonymous(path).await;
        assert_eq!(resp.status(), 200, "{path}");
    }
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(shared::telemetry::serve_metrics(addr, async move {
        let _ = stopped.await;
    }));
    for path in probe_paths("worker") {
        let resp = testkit::eventually(&format!("{path} on the metrics address"), WAIT, || async {
            app.client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .ok()
        })
        .await;
        assert_eq!(resp.status(), 200, "{path}");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    app.shutdown().await;
}
