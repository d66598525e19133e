//! Field capture: the values of named members of each event's root object, read by the scrub
//! walk itself (both engines, the same pass that hashes PII, so there is no second parse) for
//! relay's payload routing and sticky splits.
//!
//! An *event* is the body's JSON value when it is not an array, or each element of a
//! top-level array (the same event roots the PII paths start from); for NDJSON, the same per
//! line. Only members of an event's root object are captured (`{"event_type": ..}`), never
//! nested ones. Rules, all the same in both engines (the differential tests compare them):
//!
//! - names compare exactly, after unescaping (`"ev\u0065nt_type"` is `event_type`);
//! - a string is captured as its decoded text (`"purch\u0061se"` is `purchase`), before any
//!   hashing: a member that is also PII is captured with its raw value (the forwarded body
//!   still carries only the pseudonym);
//! - numbers, `true` and `false` as their JSON text as written; `null`, objects and arrays
//!   only as their kind;
//! - a value longer than [`MAX_CAPTURED_BYTES`] (decoded) is [`Captured::TooLong`];
//! - duplicate members in one object: the **last** one wins (as in JavaScript's `JSON.parse`,
//!   Python's `json`, Go's `encoding/json` and serde_json's maps, so relay routes on what a
//!   downstream parser most likely sees).
//!
//! Memory: 16 bytes per event plus the captured values (each at most its own length in the
//! body), so at most a small multiple of the body size; nothing at all when no name is asked.

use crate::walker::decode_string;

/// Most member names one [`CaptureSpec`] may hold.
pub const MAX_CAPTURE_FIELDS: usize = 16;

/// Longest captured value, in bytes of decoded text (strings) or JSON text (numbers); longer
/// values are [`Captured::TooLong`]. The only place this limit is checked is the capture
/// itself.
pub const MAX_CAPTURED_BYTES: usize = 1024;

/// The member names to capture (at most [`MAX_CAPTURE_FIELDS`], each once). The default
/// captures nothing and costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureSpec {
    names: Vec<Box<[u8]>>,
}

impl CaptureSpec {
    /// The spec that captures nothing (what [`Default`] gives), usable in a `static`.
    pub const fn none() -> CaptureSpec {
        CaptureSpec { names: Vec::new() }
    }

    /// A spec for `names` (duplicates folded, order kept: [`CaptureSpec::slot`] indexes it).
    /// Errors name the problem: an empty name, or more than [`MAX_CAPTURE_FIELDS`] names.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<CaptureSpec, String> {
        let mut out: Vec<Box<[u8]>> = Vec::new();
        for n in names {
            let n = n.as_ref();
            if n.is_empty() {
                return Err("a captured field name must not be empty".into());
            }
            if !out.iter().any(|o| &**o == n.as_bytes()) {
                out.push(n.as_bytes().into());
            }
        }
        if out.len() > MAX_CAPTURE_FIELDS {
            return Err(format!(
                "{} distinct fields are read from the payload; at most {MAX_CAPTURE_FIELDS} are allowed",
                out.len()
            ));
        }
        Ok(CaptureSpec { names: out })
    }

    /// Whether nothing is captured.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The slot of `name` (its index in the spec), for [`EventView::get`].
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name.as_bytes())
    }

    #[inline]
    fn slot_of(&self, key: &[u8]) -> Option<u16> {
        self.names
            .iter()
            .position(|n| **n == *key)
            .map(|i| i as u16)
    }
}

/// One captured value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    /// A string: its decoded text.
    Str(String),
    /// A number, `true` or `false`: its JSON text as written.
    Scalar(String),
    /// `null`.
    Null,
    /// An object (not captured further).
    Object,
    /// An array (not captured further).
    Array,
    /// A string or number longer than [`MAX_CAPTURED_BYTES`].
    TooLong,
}

impl Captured {
    /// The text a string equals (`None` for every other kind).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Captured::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a string, number or boolean (for hashing a sticky value); `None` for null,
    /// containers and values too long to capture.
    pub fn text(&self) -> Option<&str> {
        match self {
            Captured::Str(s) | Captured::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EventRec {
    /// NDJSON line (1-based), 0 for a JSON body.
    line: u32,
    /// Index of the event in its JSON text (element of a top-level array, else 0).
    element: u32,
    /// `values[start..end]` are this event's.
    start: u32,
    end: u32,
}

/// What a walk captured: every event of the body in order, each with its captured values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    events: Vec<EventRec>,
    values: Vec<(u16, Captured)>,
}

/// One event of [`Captures`].
#[derive(Debug, Clone, Copy)]
pub struct EventView<'c> {
    /// The NDJSON line (1-based) holding the event; `None` for a JSON body.
    pub line: Option<usize>,
    /// The event's index in its JSON text: its element index in a top-level array, else 0.
    pub element: usize,
    values: &'c [(u16, Captured)],
}

impl<'c> EventView<'c> {
    /// The value captured for the spec's `slot` ([`CaptureSpec::slot`]); `None` when the
    /// event has no such root member (or is not an object).
    pub fn get(&self, slot: usize) -> Option<&'c Captured> {
        self.values
            .iter()
            .find(|(s, _)| usize::from(*s) == slot)
            .map(|(_, v)| v)
    }
}

impl Captures {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the body had no event (or nothing was captured).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events in body order.
    pub fn events(&self) -> impl Iterator<Item = EventView<'_>> + '_ {
        self.events.iter().map(|e| EventView {
            line: (e.line != 0).then_some(e.line as usize),
            element: e.element as usize,
            values: &self.values[e.start as usize..e.end as usize],
        })
    }
}

/// The capture state a walk carries (inactive for an empty spec).
pub(crate) struct Capturer<'s> {
    spec: &'s CaptureSpec,
    out: Captures,
    line: u32,
    buf: Vec<u8>,
}

impl<'s> Capturer<'s> {
    pub(crate) fn new(spec: &'s CaptureSpec) -> Capturer<'s> {
        Capturer {
            spec,
            out: Captures::default(),
            line: 0,
            buf: Vec::new(),
        }
    }

    /// Whether anything is captured.
    #[inline]
    pub(crate) fn on(&self) -> bool {
        !self.spec.is_empty()
    }

    /// A new JSON text starts (`line`: its NDJSON line).
    #[inline]
    pub(crate) fn text(&mut self, line: Option<usize>) {
        self.line = line.map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX));
    }

    /// A new event starts (`element`: its index in the text).
    #[inline]
    pub(crate) fn event(&mut self, element: usize) {
        if !self.on() {
            return;
        }
        let at = self.out.values.len() as u32;
        self.out.events.push(EventRec {
            line: self.line,
            element: u32::try_from(element).unwrap_or(u32::MAX),
            start: at,
            end: at,
        });
    }

    /// The slot of a root member named `key` (decoded), when it is captured.
    #[inline]
    pub(crate) fn slot(&self, key: &[u8]) -> Option<u16> {
        if !self.on() {
            return None;
        }
        self.spec.slot_of(key)
    }

    /// Records the value of the current event's member `slot`: `raw` is its validated JSON
    /// text as in the body. A later duplicate replaces an earlier one.
    pub(crate) fn record(&mut self, slot: u16, raw: &[u8]) {
        let v = match raw.first() {
            Some(b'"') => {
                let inner = &raw[1..raw.len().saturating_sub(1).max(1)];
                // An escape is at most 12 bytes for 4 decoded ones (a surrogate pair), at
                // least 2 for 1: a text over 6x the limit cannot decode within it.
                if inner.len() > MAX_CAPTURED_BYTES.saturating_mul(6) {
                    Captured::TooLong
                } else {
                    self.buf.clear();
                    decode_string(inner, &mut self.buf);
                    if self.buf.len() > MAX_CAPTURED_BYTES {
                        Captured::TooLong
                    } else {
                        Captured::Str(String::from_utf8_lossy(&self.buf).into_owned())
                    }
                }
            }
            Some(b'n') => Captured::Null,
            Some(b'{') => Captured::Object,
            Some(b'[') => Captured::Array,
            Some(_) if raw.len() > MAX_CAPTURED_BYTES => Captured::TooLong,
            Some(_) => Captured::Scalar(String::from_utf8_lossy(raw).into_owned()),
            None => return,
        };
        let Some(ev) = self.out.events.last_mut() else {
            return;
        };
        let mine = &mut self.out.values[ev.start as usize..];
        if let Some(slot_v) = mine.iter_mut().find(|(s, _)| *s == slot) {
            slot_v.1 = v;
        } else {
            self.out.values.push((slot, v));
            ev.end = self.out.values.len() as u32;
        }
    }

    /// What was captured.
    pub(crate) fn finish(self) -> Captures {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_fold_duplicates_and_bound_the_count() {
        let s = CaptureSpec::new(&["a", "b", "a"]).unwrap();
        assert_eq!(
            (s.slot("a"), s.slot("b"), s.slot("c")),
            (Some(0), Some(1), None)
        );
        assert!(CaptureSpec::new(&[""]).is_err());
        let at_limit: Vec<String> = (0..MAX_CAPTURE_FIELDS).map(|i| format!("f{i}")).collect();
        CaptureSpec::new(&at_limit).unwrap();
        let over: Vec<String> = (0..=MAX_CAPTURE_FIELDS).map(|i| format!("f{i}")).collect();
        let e = CaptureSpec::new(&over).unwrap_err();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn values_by_kind_escapes_duplicates_and_the_length_limit() {
        let spec = CaptureSpec::new(&["a"]).unwrap();
        let mut c = Capturer::new(&spec);
        c.text(Some(3));
        c.event(0);
        c.record(0, br#""purch\u0061se""#);
        c.event(1);
        c.record(0, b"12.5e3");
        c.record(0, b"true"); // duplicate: the last wins
        c.event(2);
        c.record(0, b"{\"x\":1}");
        let at = format!("\"{}\"", "x".repeat(MAX_CAPTURED_BYTES));
        let over = format!("\"{}\"", "x".repeat(MAX_CAPTURED_BYTES + 1));
        c.event(3);
        c.record(0, at.as_bytes());
        c.event(4);
        c.record(0, over.as_bytes());
        c.event(5);
        let got = c.finish();
        let v: Vec<_> = got
            .events()
            .map(|e| (e.line, e.element, e.get(0).cloned()))
            .collect();
        assert_eq!(v[0], (Some(3), 0, Some(Captured::Str("purchase".into()))));
        assert_eq!(v[1].2, Some(Captured::Scalar("true".into())));
        assert_eq!(v[2].2, Some(Captured::Object));
        assert_eq!(
            v[3].2.as_ref().and_then(Captured::as_str).map(str::len),
            Some(MAX_CAPTURED_BYTES)
        );
        assert_eq!(v[4].2, Some(Captured::TooLong));
        assert_eq!(v[5].2, None);
    }
}
