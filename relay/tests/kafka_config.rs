//! `[kafka]` configuration: defaults, relay's librdkafka defaults, and librdkafka's own
//! messages for unknown or invalid properties (no broker needed).

use relay::config::Problems;
use relay::kafka::{KafkaConfig, KafkaPath, OnFull};

fn problems(cfg: &KafkaConfig) -> Vec<(String, String)> {
    let mut p = Problems::default();
    cfg.validate("kafka", &mut p);
    p.0.into_iter().map(|e| (e.field, e.message)).collect()
}

#[test]
fn defaults_from_toml() {
    let cfg: KafkaConfig = toml::from_str("brokers = \"127.0.0.1:9092\"").unwrap();
    assert_eq!(cfg.queue_capacity, 65536);
    assert_eq!(cfg.on_full, OnFull::Reject);
    assert_eq!(cfg.retry_after_s, 1);
    assert_eq!(cfg.producer_threads, 1);
    assert_eq!(cfg.flush_timeout_ms, 30_000);
    assert!(problems(&cfg).is_empty(), "{:?}", problems(&cfg));
    let cc = cfg.client_config();
    assert_eq!(cc.get("acks"), Some("all"));
    assert_eq!(cc.get("enable.idempotence"), Some("true"));
    assert_eq!(cc.get("compression.type"), Some("lz4"));
    assert_eq!(cc.get("bootstrap.servers"), Some("127.0.0.1:9092"));
}

#[test]
fn properties_override_defaults() {
    let cfg: KafkaConfig = toml::from_str(
        "brokers = \"b:9092\"\n[properties]\n\"compression.type\" = \"zstd\"\n\"linger.ms\" = \"5\"\n",
    )
    .unwrap();
    let cc = cfg.client_config();
    assert_eq!(cc.get("compression.type"), Some("zstd"));
    assert_eq!(cc.get("linger.ms"), Some("5"));
    assert_eq!(cc.get("acks"), Some("all"));
}

#[test]
fn unknown_fields_are_rejected() {
    let e = toml::from_str::<KafkaConfig>("brokers = \"b:1\"\nqueue_capacty = 5\n").unwrap_err();
    assert!(e.to_string().contains("queue_capacty"), "{e}");
    let e = toml::from_str::<KafkaConfig>("brokers = \"b:1\"\non_full = \"drop\"\n").unwrap_err();
    assert!(e.to_string().contains("drop"), "{e}");
}

#[test]
fn unknown_librdkafka_property_is_an_error_with_librdkafkas_message() {
    let mut cfg = KafkaConfig::new("127.0.0.1:1"); // nothing listens there: not needed
    cfg.properties.insert("linger.mss".into(), "5".into());
    let p = problems(&cfg);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "kafka.properties.\"linger.mss\"");
    assert!(
        p[0].1
            .contains("No such configuration property: \"linger.mss\""),
        "{}",
        p[0].1
    );
    // start refuses it too, with the same message.
    let e = KafkaPath::start(&cfg).unwrap_err().to_string();
    assert!(e.contains("No such configuration property"), "{e}");
}

#[test]
fn every_bad_property_is_reported() {
    let mut cfg = KafkaConfig::new("127.0.0.1:1");
    cfg.properties.insert("linger.mss".into(), "5".into());
    cfg.properties.insert("batch.sise".into(), "5".into());
    cfg.properties.insert("acks".into(), "sometimes".into());
    cfg.properties.insert("linger.ms".into(), "5".into());
    let fields: Vec<String> = problems(&cfg).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "kafka.properties.\"acks\"",
            "kafka.properties.\"batch.sise\"",
            "kafka.properties.\"linger.mss\""
        ]
    );
}

#[test]
fn invalid_values_and_combinations_are_errors() {
    let mut cfg = KafkaConfig::new("127.0.0.1:1");
    cfg.properties
        .insert("compression.type".into(), "brotli".into());
    let p = problems(&cfg);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].1.contains("compression.type"), "{}", p[0].1);

    // Checked by librdkafka only when a client is created.
    let mut cfg = KafkaConfig::new("127.0.0.1:1");
    cfg.properties.insert("acks".into(), "1".into());
    let p = problems(&cfg);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].1.contains("acks"), "{}", p[0].1);
}

#[test]
fn field_checks() {
    let mut cfg = KafkaConfig::new("nohost, :9092,h:0");
    cfg.queue_capacity = 0;
    cfg.retry_after_s = 0;
    cfg.flush_timeout_ms = 0;
    cfg.producer_threads = 0;
    cfg.properties
        .insert("bootstrap.servers".into(), "x:1".into());
    let fields: Vec<String> = problems(&cfg).into_iter().map(|(f, _)| f).collect();
    for f in [
        "kafka.brokers",
        "kafka.queue_capacity",
        "kafka.retry_after_s",
        "kafka.flush_timeout_ms",
        "kafka.producer_threads",
        "kafka.properties",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
    assert_eq!(
        fields.iter().filter(|f| *f == "kafka.brokers").count(),
        3,
        "{fields:?}"
    );
}
