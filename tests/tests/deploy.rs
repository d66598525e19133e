//! `deploy/`: the Grafana dashboard only queries metrics relay publishes (plus the standard
//! cAdvisor / kube-state-metrics series it names on purpose) and has the seed team's panels; the
//! Kubernetes ConfigMap carries a relay.toml that `relay check` accepts; the Deployment is
//! Guaranteed QoS with an integer CPU count; KEDA scales on CPU 50% with a cron pre-scale.

use std::collections::BTreeSet;
use std::process::Command;

use relay_e2e::{relay_bin, workspace_root, REQUIRED_METRICS};

/// Histograms: queried through their `_bucket`, `_sum` and `_count` series.
const HISTOGRAMS: &[&str] = &[
    "relay_request_duration_seconds",
    "relay_upstream_duration_seconds",
    "relay_kafka_delivery_duration_seconds",
];

/// Series from outside relay the dashboard uses on purpose (limits, CFS throttling).
const EXTERNAL: &[&str] = &[
    "kube_pod_container_resource_limits",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_periods_total",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap()
}

/// Identifiers in a PromQL expression that look like metric names (have an `_`, are not
/// functions, keywords, labels or label values).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_braces = 0;
    let mut in_string = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut BTreeSet<String>, brace: i32, next: char| {
        if brace == 0 && word.contains('_') && next != '(' && !word.starts_with('$') {
            out.insert(word.clone());
        }
        word.clear();
    };
    let chars: Vec<char> = expr.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if in_string {
            in_string = c != '"';
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' {
            word.push(c);
            continue;
        }
        let next = chars[i..]
            .iter()
            .find(|c| !c.is_whitespace())
            .copied()
            .unwrap_or(' ');
        flush(&mut word, &mut out, in_braces, next);
        match c {
            '{' => in_braces += 1,
            '}' => in_braces -= 1,
            '"' => in_string = true,
            _ => {}
        }
    }
    flush(&mut word, &mut out, in_braces, ' ');
    // `by (le, route)` / `without (...)` lists are labels, not metrics.
    for list in expr.split(" by (").skip(1) {
        for label in list.split(')').next().unwrap_or("").split(',') {
            out.remove(label.trim());
        }
    }
    out
}

fn allowed(name: &str) -> bool {
    REQUIRED_METRICS.contains(&name)
        || EXTERNAL.contains(&name)
        || HISTOGRAMS.iter().any(|h| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{h}{s}"))
        })
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn promql_name_extraction() {
    let e = r#"histogram_quantile(0.95, sum by (le, route) (rate(relay_request_duration_seconds_bucket{namespace="$namespace", pod=~"a_b"}[$__rate_interval])))"#;
    assert_eq!(
        metric_names(e).into_iter().collect::<Vec<_>>(),
        vec!["relay_request_duration_seconds_bucket"]
    );
}

#[test]
fn dashboard_queries_only_published_metrics_and_has_the_seed_panels() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/relay-dashboard.json")).unwrap();
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() > 20, "{} queries", all.len());
    let mut used = BTreeSet::new();
    for e in &all {
        for name in metric_names(e) {
            assert!(allowed(&name), "unknown metric {name:?} in {e}");
            used.insert(name);
        }
    }
    for m in REQUIRED_METRICS {
        let hit = used.iter().any(|u| {
            u == m || u.strip_suffix("_bucket") == Some(m) || u.strip_suffix("_sum") == Some(m)
        });
        assert!(hit, "the dashboard never shows {m}");
    }
    let titles: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap_or("").to_lowercase())
        .collect();
    for want in [
        "cpu per pod",
        "memory per pod",
        "requests/s by status",
        "total latency",
        "upstream latency",
        "relay's own",
        "bandwidth in",
        "bandwidth out",
        "kafka queue depth",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel {want:?}: {titles:?}"
        );
    }
    // Unique panel ids, as Grafana requires.
    let ids: Vec<_> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len());
}

/// The `relay.toml: |` block of the ConfigMap, de-indented.
fn configmap_toml() -> String {
    let text = read("deploy/k8s/configmap.yaml");
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_end().ends_with("relay.toml: |"));
    lines.next().expect("a relay.toml key in the ConfigMap");
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.get(4..).unwrap_or(""))
        .collect();
    body.join("\n")
}

#[test]
fn configmap_carries_a_valid_config_with_auto_workers() {
    let toml = configmap_toml();
    assert!(toml.contains("workers = \"auto\""), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, &toml).unwrap();
    // The key comes from the Secret in the pod; here a generated one stands in.
    std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/pii.key"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let out = Command::new(relay_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relay check refused the ConfigMap's relay.toml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        effective.contains("0.0.0.0:9901"),
        "admin on the pod IP:\n{effective}"
    );
}

#[test]
fn deployment_is_guaranteed_with_integer_cpus_and_probes() {
    let d = read("deploy/k8s/deployment.yaml");
    let block = |name: &str| -> String {
        let start = d.find(&format!("            {name}:\n")).unwrap();
        d[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with("              "))
            .map(|l| l.trim().to_string())
            .collect::<Vec<_>>()
            .join(";")
    };
    let (req, lim) = (block("requests"), block("limits"));
    assert_eq!(req, lim, "requests must equal limits (Guaranteed QoS)");
    let cpu = req
        .split(';')
        .find_map(|kv| kv.strip_prefix("cpu: "))
        .unwrap();
    let cpu: u32 = cpu.trim_matches('"').parse().expect("an integer CPU count");
    assert!(cpu >= 1);
    assert!(d.contains("path: /readyz") && d.contains("path: /healthz"));
    assert!(d.contains("port: admin"));
    assert!(!d.contains("\n  replicas:"), "KEDA owns the replica count");
}

#[test]
fn keda_scales_on_cpu_50_and_prescales_by_cron() {
    let k = read("deploy/k8s/keda-scaledobject.yaml");
    assert!(k.contains("kind: ScaledObject"));
    assert!(
        k.contains("- type: cpu") && k.contains("value: \"50\""),
        "{k}"
    );
    assert!(
        k.contains("- type: cron") && k.contains("desiredReplicas:"),
        "{k}"
    );
    assert!(k.contains("name: relay"));
    let kz = read("deploy/k8s/kustomization.yaml");
    for f in [
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "keda-scaledobject.yaml",
    ] {
        assert!(kz.contains(f), "{f} not in kustomization.yaml");
    }
}
