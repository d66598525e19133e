//! Seeded generator of realistic app-log events: what a mobile app POSTs to relay.
//!
//! Every event carries an event name, client and server timestamps, app version, OS, locale,
//! nested `props`, and three PII fields that vary per event (`user_id`, `device_id`,
//! `order_no`). The same seed always gives the same bytes, so runs are reproducible and the
//! raw PII values can be handed to `stub-upstream --forbid-file`.

/// A small, fast, seedable PRNG (SplitMix64); quality is plenty for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// One generated request body and the raw PII values it contains.
#[derive(Debug, Clone)]
pub struct Body {
    /// The body bytes (one JSON object, or NDJSON lines when batched).
    pub bytes: Vec<u8>,
    /// `user_id`, `device_id` and `order_no` of every event in the body.
    pub pii: Vec<String>,
    /// `application/json` or `application/x-ndjson`.
    pub content_type: &'static str,
}

const EVENTS: &[&str] = &[
    "app_open",
    "screen_view",
    "product_view",
    "add_to_cart",
    "checkout_start",
    "purchase_completed",
    "search",
    "push_opened",
    "login",
    "coupon_applied",
];
const SCREENS: &[&str] = &[
    "home", "search", "product", "cart", "checkout", "mypage", "orders",
];
const OSES: &[(&str, &[&str], &[&str])] = &[
    (
        "iOS",
        &["16.7.8", "17.4.1", "17.5", "18.0.1", "18.1"],
        &["iPhone14,5", "iPhone15,2", "iPhone16,1", "iPad13,4"],
    ),
    (
        "Android",
        &["12", "13", "14", "15"],
        &["SM-S918N", "SM-A546N", "Pixel 8", "SM-F946N", "LM-V510N"],
    ),
];
const LOCALES: &[(&str, &str, &str)] = &[
    ("ko-KR", "Asia/Seoul", "KRW"),
    ("en-US", "America/Los_Angeles", "USD"),
    ("ja-JP", "Asia/Tokyo", "JPY"),
    ("en-GB", "Europe/London", "GBP"),
    ("zh-TW", "Asia/Taipei", "TWD"),
];
const VERSIONS: &[&str] = &["5.12.3", "5.12.4", "5.13.0", "5.13.1", "6.0.0-beta.2"];
const NETWORKS: &[&str] = &["wifi", "5g", "lte", "3g"];

/// Generates events; see the module documentation.
#[derive(Debug, Clone)]
pub struct EventGen {
    rng: Rng,
    seq: u64,
}

impl EventGen {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        EventGen {
            rng: Rng::new(seed),
            seq: 0,
        }
    }

    fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let v = self.rng.next_u64();
            s.push_str(&format!("{v:016X}"));
        }
        s.truncate(n);
        s
    }

    /// One event of about `size` bytes (never less than the ~600 bytes an event needs) and
    /// its three raw PII values.
    pub fn event(&mut self, size: usize) -> (String, [String; 3]) {
        self.seq += 1;
        let r = &mut self.rng;
        let user_id = format!("u{:011}", r.below(100_000_000_000));
        let device_id = {
            let h = self.hex(32);
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        };
        let r = &mut self.rng;
        let order_no = format!(
            "ORD-2026{:04}-{:08}",
            1101 + r.below(30),
            r.below(100_000_000)
        );
        let event = *r.pick(EVENTS);
        let (os, os_versions, models) = *r.pick(OSES);
        let os_version = *r.pick(os_versions);
        let model = *r.pick(models);
        let (locale, tz, currency) = *r.pick(LOCALES);
        let version = *r.pick(VERSIONS);
        let screen = *r.pick(SCREENS);
        let network = *r.pick(NETWORKS);
        // 2026-11-22T00:00:00Z plus up to a day.
        let ts_ms = 1_795_305_600_000u64 + r.below(86_400_000);
        let lag = 5 + r.below(3_000);
        let secs = (ts_ms / 1000) % 86_400;
        let sent_at = format!(
            "2026-11-22T{:02}:{:02}:{:02}.{:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            ts_ms % 1000
        );
        let session = self.hex(16);
        let event_id = self.hex(24);
        let r = &mut self.rng;
        let mut items = String::new();
        let n_items = if size < 900 { 1 } else { 1 + r.below(3) };
        let mut amount = 0;
        for i in 0..n_items {
            let price = (1 + r.below(200)) * 500;
            let qty = 1 + r.below(3);
            amount += price * qty;
            if i > 0 {
                items.push(',');
            }
            items.push_str(&format!(
                r#"{{"sku":"SKU-{:07}","qty":{qty},"price":{price},"category":"{}"}}"#,
                r.below(10_000_000),
                r.pick(&["fashion", "beauty", "food", "digital", "living"])
            ));
        }
        let mut s = if size < 900 {
            // Compact shape for 0.5 KB events: the same fields an app sends, fewer extras.
            format!(
                concat!(
                    r#"{{"event":"{event}","seq":{seq},"client_ts":{ts},"sent_at":"{sent_at}","#,
                    r#""app":{{"version":"{version}"}},"#,
                    r#""device":{{"os":"{os}","os_version":"{os_version}","locale":"{locale}"}},"#,
                    r#""user_id":"{user_id}","device_id":"{device_id}","order_no":"{order_no}","#,
                    r#""props":{{"screen":"{screen}","amount":{amount},"currency":"{currency}","#,
                    r#""items":[{items}]"#
                ),
                event = event,
                seq = self.seq,
                ts = ts_ms,
                sent_at = sent_at,
                version = version,
                os = os,
                os_version = os_version,
                locale = locale,
                user_id = user_id,
                device_id = device_id,
                order_no = order_no,
                screen = screen,
                amount = amount,
                currency = currency,
                items = items,
            )
        } else {
            format!(
                concat!(
                    r#"{{"event":"{event}","event_id":"{event_id}","seq":{seq},"client_ts":{ts},"#,
                    r#""server_ts":{sts},"sent_at":"{sent_at}","#,
                    r#""app":{{"name":"shop","version":"{version}","build":{build},"channel":"store"}},"#,
                    r#""device":{{"os":"{os}","os_version":"{os_version}","model":"{model}","#,
                    r#""locale":"{locale}","timezone":"{tz}","network":"{network}","screen":{{"w":1179,"h":2556}}}},"#,
                    r#""user_id":"{user_id}","device_id":"{device_id}","order_no":"{order_no}","#,
                    r#""session_id":"{session}","#,
                    r#""props":{{"screen":"{screen}","referrer":"push","item_count":{n_items},"#,
                    r#""amount":{amount},"currency":"{currency}","items":[{items}],"#,
                    r#""ab":{{"exp_checkout_v2":"B","exp_reco_rank":"control"}}"#
                ),
                event = event,
                event_id = event_id,
                seq = self.seq,
                ts = ts_ms,
                sts = ts_ms + lag,
                sent_at = sent_at,
                version = version,
                build = version.replace(['.', '-'], "").len() * 10_000 + 1203,
                os = os,
                os_version = os_version,
                model = model,
                locale = locale,
                tz = tz,
                network = network,
                user_id = user_id,
                device_id = device_id,
                order_no = order_no,
                session = session,
                screen = screen,
                n_items = n_items,
                amount = amount,
                currency = currency,
                items = items,
            )
        };
        // Pad to the requested size with a breadcrumb trail inside `props`.
        const TAIL: &str = r#","breadcrumbs":""}}"#;
        let want = size.saturating_sub(s.len() + TAIL.len());
        s.push_str(r#","breadcrumbs":""#);
        let crumbs = [
            "home>",
            "search>",
            "product>",
            "cart>",
            "checkout>",
            "done>",
        ];
        while s.len() < size.saturating_sub(3) && want > 0 {
            let c = *self.rng.pick(&crumbs);
            let room = size - 3 - s.len();
            s.push_str(&c[..c.len().min(room)]);
        }
        s.push_str("\"}}");
        (s, [user_id, device_id, order_no])
    }

    /// One request body: a single event of `size` bytes, or `batch > 1` events of `size`
    /// bytes each as NDJSON.
    pub fn body(&mut self, size: usize, batch: usize) -> Body {
        let mut bytes = Vec::with_capacity(size * batch.max(1) + batch);
        let mut pii = Vec::with_capacity(3 * batch.max(1));
        for i in 0..batch.max(1) {
            if i > 0 {
                bytes.push(b'\n');
            }
            let (e, p) = self.event(size);
            bytes.extend_from_slice(e.as_bytes());
            pii.extend(p);
        }
        if batch > 1 {
            bytes.push(b'\n');
        }
        Body {
            bytes,
            pii,
            content_type: if batch > 1 {
                "application/x-ndjson"
            } else {
                "application/json"
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_close_and_json_is_valid() {
        let mut g = EventGen::new(7);
        for size in [512, 1024, 4096] {
            let b = g.body(size, 1);
            assert!(
                b.bytes.len().abs_diff(size) <= 2 || b.bytes.len() > size,
                "{size}: {}",
                b.bytes.len()
            );
            assert!(b.bytes.len() <= size + 2, "{size}: {}", b.bytes.len());
            let v: serde_json::Value = serde_json::from_slice(&b.bytes).unwrap();
            assert_eq!(v["user_id"], b.pii[0].as_str());
            assert_eq!(v["device_id"], b.pii[1].as_str());
            assert_eq!(v["order_no"], b.pii[2].as_str());
            assert!(v["props"]["items"].is_array());
        }
    }

    #[test]
    fn seeded_and_varying() {
        let a = EventGen::new(1).body(1024, 1);
        let b = EventGen::new(1).body(1024, 1);
        assert_eq!(a.bytes, b.bytes);
        let mut g = EventGen::new(1);
        let x = g.body(1024, 1);
        let y = g.body(1024, 1);
        assert_ne!(x.pii, y.pii);
    }

    #[test]
    fn ndjson_batches() {
        let b = EventGen::new(3).body(512, 4);
        assert_eq!(b.content_type, "application/x-ndjson");
        assert_eq!(b.pii.len(), 12);
        let lines: Vec<_> = b
            .bytes
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 4);
        for l in lines {
            serde_json::from_slice::<serde_json::Value>(l).unwrap();
        }
    }
}
