//! The admit phase's policy: which consumer sent a request (API key or JWT), whether it may use
//! the route (401 / 403), and whether the consumer's and the route's limits let it through
//! (429). Built once per snapshot from `[auth]`, `[[consumers]]` and each route's `auth`,
//! `consumers` and `limits`; the limit counters come from the [`LimitStore`] that outlives
//! reloads. Nothing here locks on the request path.

#![forbid(unsafe_code)]

use std::sync::Arc;

use relay_http::RequestHead;

use crate::auth::{AuthError, AuthMode, Authenticator};
use crate::config::Config;
use crate::limit::{LimitStore, Limited, Limiter};
use crate::metrics::{ConsumerMetrics, Metrics};

/// Why a request was not admitted. Always the client's doing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmitError {
    /// No credential on an `auth = "required"` route, or a credential that was refused.
    #[error("{source}")]
    Unauthorized {
        /// What was wrong with the credentials.
        source: AuthError,
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// A known consumer the route does not list.
    #[error("consumer {consumer:?} is not allowed on route {route:?}; ask for access to it")]
    Forbidden {
        /// The consumer.
        consumer: Arc<str>,
        /// The route.
        route: Arc<str>,
    },
    /// A rate or quota of the consumer or the route is used up.
    #[error("the {} of {who} is used up ({} requests); retry after {} s", .limited.kind, .limited.limit, .limited.retry_after_s)]
    Limited {
        /// `consumer "ios-app"` or `route "app-logs"`.
        who: String,
        /// Which limit and when to come back.
        limited: Limited,
    },
}

impl AdmitError {
    /// The status and machine-readable code.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            AdmitError::Unauthorized { .. } => (401, "unauthorized"),
            AdmitError::Forbidden { .. } => (403, "forbidden"),
            AdmitError::Limited { limited, .. } if limited.kind == "quota" => {
                (429, "quota_exceeded")
            }
            AdmitError::Limited { .. } => (429, "rate_limited"),
        }
    }

    /// Seconds for `Retry-After` (429 only).
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            AdmitError::Limited { limited, .. } => {
                Some(u32::try_from(limited.retry_after_s).unwrap_or(u32::MAX))
            }
            _ => None,
        }
    }

    /// The headers the error response carries besides `Retry-After`: `WWW-Authenticate` on a
    /// 401; `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on a 429.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            AdmitError::Unauthorized { challenge, .. } => {
                vec![("WWW-Authenticate", challenge.clone())]
            }
            AdmitError::Forbidden { .. } => Vec::new(),
            AdmitError::Limited { limited, .. } => vec![
                ("RateLimit-Limit", limited.limit.to_string()),
                ("RateLimit-Remaining", "0".into()),
                ("RateLimit-Reset", limited.retry_after_s.to_string()),
            ],
        }
    }
}

/// What the admit phase found out about an admitted request.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// The consumer, when one was identified (Kafka header `relay-consumer`).
    pub consumer: Option<Arc<str>>,
    /// The credential header not to forward (lower case), if any.
    pub strip: Option<Box<str>>,
}

struct ConsumerPolicy {
    limiter: Option<Limiter>,
    metrics: Arc<ConsumerMetrics>,
}

struct RoutePolicy {
    mode: AuthMode,
    /// Allowed consumer indices; empty: every consumer.
    allowed: Vec<usize>,
    forward_credentials: bool,
    limiter: Option<Limiter>,
}

/// The compiled edge policy of one snapshot.
pub struct EdgePolicy {
    /// The consumers and their credentials.
    pub auth: Authenticator,
    consumers: Vec<ConsumerPolicy>,
    routes: Vec<RoutePolicy>,
}

const OUT_ADMITTED: usize = 0;
const OUT_FORBIDDEN: usize = 1;

impl EdgePolicy {
    /// Builds from a validated config; limit state comes from (and stays in) `metrics.limits`.
    pub fn build(config: &Config, metrics: &Metrics) -> Result<EdgePolicy, String> {
        let auth = Authenticator::build(&config.auth, &config.consumers)?;
        let store: &LimitStore = &metrics.limits;
        let consumers = config
            .consumers
            .iter()
            .map(|c| ConsumerPolicy {
                limiter: c
                    .limits
                    .as_ref()
                    .map(|l| Limiter::new(l, store.state(&format!("consumer:{}", c.name)))),
                metrics: metrics.consumer(&c.name),
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| RoutePolicy {
                mode: r.auth,
                allowed: r
                    .consumers
                    .iter()
                    .filter_map(|n| auth.index_of(n))
                    .collect(),
                forward_credentials: r.forward_credentials,
                limiter: r
                    .limits
                    .as_ref()
                    .map(|l| Limiter::new(l, store.state(&format!("route:{}", r.name)))),
            })
            .collect();
        Ok(EdgePolicy {
            auth,
            consumers,
            routes,
        })
    }

    fn challenge(&self, err: &AuthError) -> String {
        let realm = &self.auth.realm;
        let bearer = match err {
            AuthError::Jwt(_) => format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
            _ => format!("Bearer realm=\"{realm}\""),
        };
        format!(
            "{bearer}, ApiKey realm=\"{realm}\", header=\"{}\"",
            self.auth.api_key_header()
        )
    }

    /// Admits or refuses a request on route `route` (index and name), on worker `w`, at the
    /// times `now` (monotonic ns, Unix s; see [`crate::limit::now`]).
    pub fn admit(
        &self,
        route: usize,
        route_name: &Arc<str>,
        head: &RequestHead,
        w: usize,
        now: (u64, u64),
    ) -> Result<Admitted, AdmitError> {
        let Some(rp) = self.routes.get(route) else {
            return Ok(Admitted::default());
        };
        let mut admitted = Admitted::default();
        let mut who = None;
        if rp.mode != AuthMode::None {
            let unauthorized = |source: AuthError| AdmitError::Unauthorized {
                challenge: self.challenge(&source),
                source,
            };
            match self.auth.authenticate(head).map_err(unauthorized)? {
                None if rp.mode == AuthMode::Required => {
                    return Err(unauthorized(AuthError::Missing {
                        header: self.auth.api_key_header().to_string(),
                    }))
                }
                None => {}
                Some((i, cred)) => {
                    let c = &self.consumers[i];
                    let name = self.auth.names()[i].clone();
                    if !rp.allowed.is_empty() && !rp.allowed.contains(&i) {
                        c.metrics.outcomes[OUT_FORBIDDEN].inc(w);
                        return Err(AdmitError::Forbidden {
                            consumer: name,
                            route: route_name.clone(),
                        });
                    }
                    if !rp.forward_credentials {
                        admitted.strip = Some(self.auth.credential_header(cred).into());
                    }
                    admitted.consumer = Some(name);
                    who = Some(c);
                }
            }
        }
        if let (Some(c), Some(l)) = (who, who.and_then(|c| c.limiter.as_ref())) {
            if let Err(limited) = l.check(now.0, now.1) {
                c.metrics.outcomes[2 + usize::from(limited.kind == "quota")].inc(w);
                return Err(AdmitError::Limited {
                    who: format!("consumer {:?}", admitted.consumer.as_deref().unwrap_or("")),
                    limited,
                });
            }
        }
        if let Some(l) = &rp.limiter {
            if let Err(limited) = l.check(now.0, now.1) {
                if let Some(c) = who {
                    c.metrics.outcomes[2 + usize::from(limited.kind == "quota")].inc(w);
                }
                return Err(AdmitError::Limited {
                    who: format!("route {:?}", &**route_name),
                    limited,
                });
            }
        }
        if let Some(c) = who {
            c.metrics.outcomes[OUT_ADMITTED].inc(w);
        }
        Ok(admitted)
    }
}
