//! Why a request cannot be dispatched: its events go to different destinations and the route
//! does not (or cannot) split it. Mapped to 422 `mixed_destinations` by `crate::error`.

/// The refusal: events of one request go to different destinations (the message names the
/// two events or lines, their destinations and what to do).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MixedDestinations(pub String);
