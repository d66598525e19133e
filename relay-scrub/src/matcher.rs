//! Which object members are PII: key names matched at any depth, and explicit paths compiled
//! into a trie walked alongside the document (one state per nesting level, no allocation), and
//! the key/value shapes (`kv_pairs`). Names compare exactly or without ASCII case (`key_case`).

use crate::config::{parse_path, KvPairConfig, Step};

/// A trie state; [`NONE`] when no path can match below this point.
pub(crate) type State = u32;

/// No path matches here or below.
pub(crate) const NONE: State = u32::MAX;

/// The state of each event's root.
pub(crate) const ROOT: State = 0;

/// Inside the value object of a key/value pair: every member is PII (an OTLP wrapper such as
/// `{"stringValue": "u-1"}`).
pub(crate) const WRAPPER: State = u32::MAX - 1;

#[derive(Debug, Clone, Default)]
struct Node {
    /// A path ends here: the value is PII.
    terminal: bool,
    /// Members by (unescaped) key.
    keys: Vec<(Box<[u8]>, State)>,
    /// Every element of an array.
    elems: State,
}

/// Compiled `fields` and `paths` of one policy.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    fields: Vec<Box<[u8]>>,
    nodes: Vec<Node>,
    /// Names compared without ASCII case.
    ci: bool,
    /// Key/value shapes: (name member, value member).
    kv: Vec<KvShape>,
}

/// One key/value shape: (name member, value member).
pub(crate) type KvShape = (Box<[u8]>, Box<[u8]>);

#[inline]
fn name_eq(ci: bool, a: &[u8], b: &[u8]) -> bool {
    if ci {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

impl Matcher {
    /// Compiles `fields` and `paths` (already validated; an invalid path is an error).
    pub(crate) fn new(
        fields: &[String],
        paths: &[String],
        case_insensitive: bool,
        kv_pairs: &[KvPairConfig],
    ) -> Result<Matcher, String> {
        let mut m = Matcher {
            fields: Vec::new(),
            nodes: vec![Node {
                elems: NONE,
                ..Node::default()
            }],
            ci: case_insensitive,
            kv: kv_pairs
                .iter()
                .map(|kv| (kv.key.as_bytes().into(), kv.value.as_bytes().into()))
                .collect(),
        };
        for f in fields {
            let f: Box<[u8]> = f.as_bytes().into();
            if !m.fields.contains(&f) {
                m.fields.push(f);
            }
        }
        for p in paths {
            let steps = parse_path(p).map_err(|e| format!("paths: {e}"))?;
            let mut at = ROOT;
            for s in steps {
                at = match s {
                    Step::Key(k) => {
                        let node = &m.nodes[at as usize];
                        let ci = m.ci;
                        match node
                            .keys
                            .iter()
                            .find(|(kk, _)| name_eq(ci, kk, k.as_bytes()))
                        {
                            Some((_, next)) => *next,
                            None => {
                                let next = m.push();
                                m.nodes[at as usize].keys.push((k.as_bytes().into(), next));
                                next
                            }
                        }
                    }
                    Step::Elements => match m.nodes[at as usize].elems {
                        NONE => {
                            let next = m.push();
                            m.nodes[at as usize].elems = next;
                            next
                        }
                        next => next,
                    },
                };
            }
            m.nodes[at as usize].terminal = true;
        }
        Ok(m)
    }

    /// A matcher for one key name at any depth (the Kafka record key).
    pub(crate) fn single_field(field: &str) -> Matcher {
        Matcher {
            fields: vec![field.as_bytes().into()],
            nodes: vec![Node {
                elems: NONE,
                ..Node::default()
            }],
            ci: false,
            kv: Vec::new(),
        }
    }

    fn push(&mut self) -> State {
        self.nodes.push(Node {
            elems: NONE,
            ..Node::default()
        });
        (self.nodes.len() - 1) as State
    }

    /// Whether `key` is one of the any-depth fields.
    #[inline]
    pub(crate) fn is_field(&self, key: &[u8]) -> bool {
        self.fields.iter().any(|f| name_eq(self.ci, f, key))
    }

    /// Whether any key/value shape is configured.
    #[inline]
    pub(crate) fn has_kv(&self) -> bool {
        !self.kv.is_empty()
    }

    /// The key/value shapes: (name member, value member).
    #[inline]
    pub(crate) fn kv_shapes(&self) -> &[KvShape] {
        &self.kv
    }

    /// Whether two member names are the same under this policy's `key_case`.
    #[inline]
    pub(crate) fn same_name(&self, a: &[u8], b: &[u8]) -> bool {
        name_eq(self.ci, a, b)
    }

    /// The state below member `key` of an object in state `at`.
    #[inline]
    pub(crate) fn member(&self, at: State, key: &[u8]) -> State {
        if at >= WRAPPER {
            return NONE;
        }
        self.nodes[at as usize]
            .keys
            .iter()
            .find(|(k, _)| name_eq(self.ci, k, key))
            .map_or(NONE, |(_, s)| *s)
    }

    /// The state of the elements of an array in state `at`.
    #[inline]
    pub(crate) fn elements(&self, at: State) -> State {
        if at >= WRAPPER {
            NONE
        } else {
            self.nodes[at as usize].elems
        }
    }

    /// Whether a path ends at `at` (its value is PII).
    #[inline]
    pub(crate) fn is_terminal(&self, at: State) -> bool {
        at < WRAPPER && self.nodes[at as usize].terminal
    }
}
