//! Edge policies, black box, on both io engines: consumers authenticated by API key or JWT
//! (401 with `WWW-Authenticate`, 403 for a consumer the route does not list), the
//! `relay-consumer` Kafka header and the stripped credential, limits (429 with `Retry-After`
//! and `RateLimit-*`; nothing forwarded and nothing published for a refused request), limit
//! counters that survive a reload. Real sockets, the built binary, librdkafka's mock cluster
//! and a recording stub upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use relay_e2e::broker::{read_topic, Broker, Mock};
use relay_e2e::on_both_engines;
use relay_e2e::{wait_for, Behavior, Client, Relay, Response, StubUpstream};
use sha2::{Digest, Sha256};

/// A request admitted by the edge policy: path, credential headers, the consumer it is.
type Admitted<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);

const TOPIC: &str = "edge-topic";
const SECRET: &str = "an-hs256-secret-that-is-long-enough-0123";

fn sha_hex(s: &str) -> String {
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("openssl on PATH");
    assert!(st.success(), "openssl {args:?}");
}

/// Key files in `dir`: `hs.key` (HS256 secret), `rsa.pem` / `rsa.pub.pem`.
fn make_keys(dir: &Path) {
    std::fs::write(dir.join("hs.key"), SECRET).unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(
        dir,
        &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"],
    );
}

fn config(engine: &str, up: SocketAddr, brokers: &str, keys: &Path, limits: &str) -> String {
    let k = keys.display();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
io_engine = "{engine}"

[admin]
listen = "127.0.0.1:0"

[kafka]
brokers = "{brokers}"
[kafka.properties]
"linger.ms" = "5"
"message.max.bytes" = "1049600"

[[upstreams]]
name = "tracking"
nodes = ["{up}"]

[[consumers]]
name = "ios-app"
api_key_sha256 = ["{ios}"]
[consumers.jwt]
algorithm = "HS256"
key_file = "{k}/hs.key"
issuer = "https://id.example"
audience = "relay"

[[consumers]]
name = "web"
api_key_sha256 = ["{web}"]
[consumers.jwt]
algorithm = "RS256"
key_file = "{k}/rsa.pub.pem"
audience = "relay"

[[consumers]]
name = "limited"
api_key_sha256 = ["{limited}"]
limits = {{ rate = 0.001, burst = 2 }}

[[routes]]
name = "logs"
path = "/v1/logs"
upstream = "tracking"
topic = "{TOPIC}"
auth = "required"

[[routes]]
name = "web-only"
path = "/v1/web"
upstream = "tracking"
topic = "{TOPIC}"
auth = "required"
consumers = ["web"]
forward_credentials = true

[[routes]]
name = "open"
path = "/v1/open"
upstream = "tracking"
topic = "{TOPIC}"
auth = "optional"

[[routes]]
name = "quota"
path = "/v1/quota"
upstream = "tracking"
topic = "{TOPIC}"
limits = {{ quota = 2, window = "day" }}
{limits}
"#,
        ios = sha_hex("ios-key"),
        web = sha_hex("web-key"),
        limited = sha_hex("limited-key"),
    )
}

fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut c = Client::connect(addr);
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    c.send(raw.as_bytes());
    c.recv().expect("a response")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(alg: Algorithm, key: &EncodingKey, iss: &str, aud: &str, exp_in: i64) -> String {
    let c = serde_json::json!({"iss": iss, "aud": aud, "exp": now() + exp_in, "sub": "u"});
    format!("Bearer {}", encode(&Header::new(alg), &c, key).unwrap())
}

fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

fn statuses_headers_kafka_and_upstream(engine: &str) {
    let keys = tempfile::tempdir().unwrap();
    make_keys(keys.path());
    let broker = Mock::new();
    broker.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(
        engine,
        up.addr,
        &broker.bootstrap(),
        keys.path(),
        "",
    ));
    assert_eq!(relay.io_engine, engine, "{}", relay.log());
    let a = relay.addr;
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let rs =
        EncodingKey::from_rsa_pem(&std::fs::read(keys.path().join("rsa.pem")).unwrap()).unwrap();
    let iss = "https://id.example";

    // 401: nothing, an unknown key, a bad scheme, expired / wrong audience / wrong issuer
    // tokens, and the algorithm-confusion forgery (HS256 "signed" with the RSA public key).
    let public_pem = std::fs::read(keys.path().join("rsa.pub.pem")).unwrap();
    let forged = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
        iss,
        "relay",
        600,
    );
    let expired = token(Algorithm::HS256, &hs, iss, "relay", -3600);
    let wrong_aud = token(Algorithm::RS256, &rs, iss, "elsewhere", 600);
    let wrong_iss = token(Algorithm::HS256, &hs, "https://evil.example", "relay", 600);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "needs credentials"),
        (vec![("X-API-Key", "nope")], "not known"),
        (vec![("Authorization", "Basic dTpw")], "Bearer"),
        (vec![("Authorization", &expired)], "expired"),
        (vec![("Authorization", &wrong_aud)], "audience"),
        (vec![("Authorization", &wrong_iss)], "issuer"),
        (vec![("Authorization", &forged)], "signature"),
    ];
    for (headers, says) in &cases {
        let r = send(a, "/v1/logs", headers, r#"{"n":0}"#);
        assert_error(&r, 401, "unauthorized");
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{headers:?}: {msg}");
        let challenge = r.header("www-authenticate").expect("WWW-Authenticate");
        assert!(
            challenge.starts_with("Bearer realm=\"relay\"")
                && challenge.contains("ApiKey realm=\"relay\", header=\"x-api-key\""),
            "{challenge}"
        );
    }
    // 403: a known consumer the route does not list.
    let r = send(a, "/v1/web", &[("X-API-Key", "ios-key")], r#"{"n":0}"#);
    assert_error(&r, 403, "forbidden");
    assert!(r.header("www-authenticate").is_none());
    assert_eq!(up.count(), 0, "nothing refused reached the upstream");

    // Admitted: by API key (stripped), by HS256 and RS256 JWT (stripped), on a route that
    // forwards credentials, and anonymous on an optional route.
    let hs_ok = token(Algorithm::HS256, &hs, iss, "relay", 600);
    let rs_ok = token(Algorithm::RS256, &rs, "anyone", "relay", 600);
    let admitted: Vec<Admitted> = vec![
        ("/v1/logs", vec![("X-API-Key", "ios-key")], Some("ios-app")),
        ("/v1/logs", vec![("Authorization", &hs_ok)], Some("ios-app")),
        ("/v1/logs", vec![("Authorization", &rs_ok)], Some("web")),
        ("/v1/web", vec![("x-api-key", "web-key")], Some("web")),
        ("/v1/open", vec![], None),
        ("/v1/open", vec![("X-API-Key", "ios-key")], Some("ios-app")),
    ];
    for (i, (path, headers, _)) in admitted.iter().enumerate() {
        let r = send(a, path, headers, &format!(r#"{{"n":{}}}"#, i + 1));
        assert_eq!(
            r.status,
            200,
            "{path} {headers:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A bad credential on an optional route is still a 401.
    assert_error(
        &send(a, "/v1/open", &[("X-API-Key", "bad")], "{}"),
        401,
        "unauthorized",
    );

    let got = up.requests();
    assert_eq!(got.len(), admitted.len());
    for (rec, (path, headers, _)) in got.iter().zip(&admitted) {
        let forwarded_key = rec.header("x-api-key");
        let forwarded_authz = rec.header("authorization");
        if *path == "/v1/web" {
            assert_eq!(
                forwarded_key,
                Some("web-key"),
                "forward_credentials = true keeps it"
            );
        } else {
            assert!(
                forwarded_key.is_none() && forwarded_authz.is_none(),
                "{headers:?} reached the upstream: {:?}",
                rec.headers
            );
        }
    }

    // Kafka: one original per admitted request, with relay-consumer when one was identified;
    // none for the refused ones.
    let records = read_topic(
        &broker.bootstrap(),
        TOPIC,
        admitted.len(),
        Duration::from_secs(60),
    );
    assert_eq!(records.len(), admitted.len());
    let by_body: HashMap<Vec<u8>, Option<Vec<u8>>> = records
        .iter()
        .map(|r| {
            (
                r.payload.clone(),
                r.header("relay-consumer").map(<[u8]>::to_vec),
            )
        })
        .collect();
    for (i, (_, _, consumer)) in admitted.iter().enumerate() {
        let body = format!(r#"{{"n":{}}}"#, i + 1).into_bytes();
        assert_eq!(
            by_body.get(&body),
            Some(&consumer.map(|c| c.as_bytes().to_vec())),
            "record {i}"
        );
    }
    assert_eq!(
        relay.metric(r#"relay_consumer_requests_total{consumer="ios-app",outcome="admitted"}"#),
        3.0
    );
    assert_eq!(
        relay.metric(r#"relay_consumer_requests_total{consumer="ios-app",outcome="forbidden"}"#),
        1.0
    );
}

fn limits_refuse_with_headers_and_survive_a_reload(engine: &str) {
    let keys = tempfile::tempdir().unwrap();
    make_keys(keys.path());
    let broker = Mock::new();
    broker.create_topic(TOPIC);
    let up = StubUpstream::start(Behavior::default());
    let relay = Relay::start(&config(
        engine,
        up.addr,
        &broker.bootstrap(),
        keys.path(),
        "",
    ));
    let a = relay.addr;
    let key = [("X-API-Key", "limited-key")];

    // Consumer rate 0.001/s with a burst of 2: two pass at once, the third is refused (a new
    // token takes 1000 s, so no clock reading in this test can see one).
    for i in 0..2 {
        assert_eq!(
            send(a, "/v1/logs", &key, &format!(r#"{{"r":{i}}}"#)).status,
            200
        );
    }
    let r = send(a, "/v1/logs", &key, r#"{"r":"over"}"#);
    assert_error(&r, 429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((990..=1000).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-limit"), Some("2"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert_eq!(
        r.header("ratelimit-reset"),
        Some(retry.to_string().as_str())
    );

    // Route quota 2 per day (no auth on the route).
    for i in 0..2 {
        assert_eq!(
            send(a, "/v1/quota", &[], &format!(r#"{{"q":{i}}}"#)).status,
            200
        );
    }
    let r = send(a, "/v1/quota", &[], r#"{"q":"over"}"#);
    assert_error(&r, 429, "quota_exceeded");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-limit"), Some("2"));

    // Reload: a changed file (one more route) keeps every counter.
    let cfg = config(
        engine,
        up.addr,
        &broker.bootstrap(),
        keys.path(),
        "[[routes]]\nname = \"extra\"\npath = \"/v1/extra\"\nupstream = \"tracking\"\n",
    );
    std::fs::write(&relay.config_path, cfg).unwrap();
    let (status, body) = relay.admin_post("/reload");
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(10), || {
        (relay.metric(r#"relay_config_reloads_total{result="success"}"#) >= 1.0).then_some(())
    })
    .expect("reloaded");
    assert_error(
        &send(a, "/v1/logs", &key, r#"{"r":"after"}"#),
        429,
        "rate_limited",
    );
    assert_error(
        &send(a, "/v1/quota", &[], r#"{"q":"after"}"#),
        429,
        "quota_exceeded",
    );
    // A raised burst applies at once, on the same counters: one more passes.
    let cfg = config(engine, up.addr, &broker.bootstrap(), keys.path(), "")
        .replace("rate = 0.001, burst = 2", "rate = 0.001, burst = 3");
    std::fs::write(&relay.config_path, cfg).unwrap();
    assert_eq!(relay.admin_post("/reload").0, 200);
    assert_eq!(send(a, "/v1/logs", &key, r#"{"r":2}"#).status, 200);
    assert_error(
        &send(a, "/v1/logs", &key, r#"{"r":"over2"}"#),
        429,
        "rate_limited",
    );

    // Nothing refused was forwarded or published: 2 + 2 + 1 forwarded, as many originals.
    assert_eq!(up.count(), 5);
    let records = read_topic(&broker.bootstrap(), TOPIC, 5, Duration::from_secs(60));
    assert_eq!(records.len(), 5);
    assert!(records
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.payload).contains("over")
            && !String::from_utf8_lossy(&r.payload).contains("after")));
    assert_eq!(
        relay.metric(r#"relay_consumer_requests_total{consumer="limited",outcome="rate_limited"}"#),
        3.0
    );
}

on_both_engines!(
    statuses_headers_kafka_and_upstream,
    limits_refuse_with_headers_and_survive_a_reload,
);
