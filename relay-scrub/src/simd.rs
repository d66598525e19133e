//! The production engine: simd-json validates each JSON text (stage 1 finds the structural
//! characters with SIMD and checks UTF-8, strings, escapes and control characters; stage 2 checks
//! the grammar), then a walk over its structural indexes alone finds the byte span of each PII
//! value and copies every other byte through unchanged (formatting, escapes and number spelling
//! as sent). Non-PII strings are never looked at byte by byte: the walk jumps from one
//! structural index to the next.
//!
//! The strict walker ([`crate::walker`]) is the reference: whenever simd-json refuses a text, or
//! the walk meets anything it did not expect (a number or literal simd-json accepted but RFC 8259
//! forbids, a structure it cannot follow), the whole body is handed to the walker, which then
//! produces the answer (the same output, or the exact refusal with its offset). So both engines
//! agree by construction on refusals, and the differential tests check they agree on output.

use std::cell::RefCell;

use simd_json::{Buffers, Tape};

use crate::capture::{CaptureSpec, Capturer, Captures};
use crate::hashing::{hex_encode_into, Hasher};
use crate::kv::kv_target;
use crate::matcher::{Matcher, State, NONE, ROOT, WRAPPER};
use crate::walker::{compact_into, decode_string, is_json_ws, is_number, Stop};

/// Why the simd walk did not finish on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Halt {
    /// A refusal the walker would give identically (only `too_deep` on a text simd-json
    /// accepted).
    Stop(Stop),
    /// Hand the body to the reference walker.
    Fallback,
}

impl From<Stop> for Halt {
    fn from(s: Stop) -> Halt {
        Halt::Stop(s)
    }
}

/// Reused per thread: simd-json's buffers, its tape, and the padded copy of the text it parses.
struct Scratch {
    buffers: Buffers,
    tape: Tape<'static>,
    input: Vec<u8>,
}

/// Texts larger than this (bytes) get fresh buffers that are dropped after use.
const MAX_KEPT_SCRATCH_BYTES: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Validates `text` with simd-json and gives its structural indexes (relative to `text`) to `f`.
/// `None` when simd-json refuses the text.
fn with_structurals<R>(text: &[u8], f: impl FnOnce(&[u32]) -> R) -> Option<R> {
    SCRATCH.with(|cell| {
        let mut guard = cell.try_borrow_mut().ok();
        let mut local = None;
        let slot = match guard.as_deref_mut() {
            Some(s) => s,
            // Re-entered on this thread (not expected): use fresh buffers.
            None => &mut local,
        };
        let scratch = slot.get_or_insert_with(|| Scratch {
            buffers: Buffers::new(text.len()),
            tape: Tape::null().reset(),
            input: Vec::new(),
        });
        scratch.input.clear();
        scratch.input.extend_from_slice(text);
        scratch
            .input
            .resize(text.len() + simd_json::INPUT_PADDING, b' ');
        let mut tape = std::mem::replace(&mut scratch.tape, Tape::null().reset()).reset();
        let ok = simd_json::fill_tape_padded(
            &mut scratch.input,
            text.len(),
            &mut scratch.buffers,
            &mut tape,
        )
        .is_ok();
        scratch.tape = tape.reset();
        let r = ok.then(|| f(scratch.buffers.structural_indexes()));
        // Do not keep a worker's peak body size around for ever.
        if scratch.input.capacity() > MAX_KEPT_SCRATCH_BYTES {
            *slot = None;
        }
        r
    })
}

/// One simd walk over a body: several texts (NDJSON lines) share the output.
pub(crate) struct SimdWalk<'a> {
    src: &'a [u8],
    matcher: &'a Matcher,
    hasher: &'a Hasher,
    max_depth: usize,
    suppress: u32,
    out: Vec<u8>,
    copied: usize,
    hashed: u64,
    val_buf: Vec<u8>,
    key_buf: Vec<u8>,
    /// The root members captured for routing (module `capture`).
    cap: Capturer<'a>,
}

/// The cursor over one text's structural indexes.
struct Cursor<'i> {
    /// Offset of the text in the body.
    base: usize,
    /// End of the text in the body.
    end: usize,
    idx: &'i [u32],
    i: usize,
}

impl Cursor<'_> {
    /// Body offset of structural `k`.
    #[inline]
    fn at(&self, k: usize) -> Result<usize, Halt> {
        self.idx
            .get(k)
            .map(|&p| self.base + p as usize)
            .ok_or(Halt::Fallback)
    }

    /// Body offset of the next structural after `k`, or the text's end.
    #[inline]
    fn next_or_end(&self, k: usize) -> usize {
        self.idx
            .get(k + 1)
            .map_or(self.end, |&p| self.base + p as usize)
    }
}

impl<'a> SimdWalk<'a> {
    /// A walk over `src` (valid UTF-8).
    pub(crate) fn new(
        src: &'a [u8],
        matcher: &'a Matcher,
        hasher: &'a Hasher,
        max_depth: usize,
        capture: &'a CaptureSpec,
    ) -> SimdWalk<'a> {
        SimdWalk {
            src,
            matcher,
            hasher,
            max_depth,
            suppress: 0,
            out: Vec::with_capacity(src.len() + src.len() / 4 + 64),
            copied: 0,
            hashed: 0,
            val_buf: Vec::new(),
            key_buf: Vec::new(),
            cap: Capturer::new(capture),
        }
    }

    /// Walks the one JSON text in `src[start..end]` (whitespace around it allowed); `line` is
    /// its NDJSON line (for the captures).
    pub(crate) fn text(
        &mut self,
        start: usize,
        end: usize,
        line: Option<usize>,
    ) -> Result<(), Halt> {
        let src = self.src;
        with_structurals(&src[start..end], |idx| {
            let mut c = Cursor {
                base: start,
                end,
                idx,
                i: 0,
            };
            self.cap.text(line);
            if self.src[c.at(0)?] != b'[' {
                self.cap.event(0);
            }
            self.value(&mut c, 0, ROOT, true)?;
            if c.i != idx.len() {
                return Err(Halt::Fallback);
            }
            Ok(())
        })
        .unwrap_or(Err(Halt::Fallback))
    }

    /// Copies the rest of the input and returns the output, the count of hashed values and
    /// the captures.
    pub(crate) fn finish(mut self) -> (Vec<u8>, u64, Captures) {
        self.out.extend_from_slice(&self.src[self.copied..]);
        (self.out, self.hashed, self.cap.finish())
    }

    /// The end (exclusive) of the token at structural `k`: the last non-whitespace byte before
    /// the next structural, plus one.
    #[inline]
    fn token_end(&self, c: &Cursor<'_>, k: usize) -> usize {
        let mut e = c.next_or_end(k);
        while e > 0 && is_json_ws(self.src[e - 1]) {
            e -= 1;
        }
        e
    }

    fn value(
        &mut self,
        c: &mut Cursor<'_>,
        depth: usize,
        state: State,
        batch: bool,
    ) -> Result<(), Halt> {
        let p = c.at(c.i)?;
        match self.src[p] {
            b'{' => self.object(c, depth + 1, state, None),
            b'[' => self.array(c, depth + 1, state, batch),
            b'"' => {
                c.i += 1;
                Ok(())
            }
            _ => {
                self.atom(c, p)?;
                Ok(())
            }
        }
    }

    /// A number or literal at structural `c.i` (body offset `p`): checked exactly; returns its
    /// end.
    fn atom(&mut self, c: &mut Cursor<'_>, p: usize) -> Result<usize, Halt> {
        let e = self.token_end(c, c.i);
        let t = &self.src[p..e];
        let ok = match t[0] {
            b't' => t == b"true",
            b'f' => t == b"false",
            b'n' => t == b"null",
            _ => is_number(t),
        };
        if !ok {
            return Err(Halt::Fallback);
        }
        c.i += 1;
        Ok(e)
    }

    /// The structural at `c.i` must be `b`.
    #[inline]
    fn expect(&self, c: &mut Cursor<'_>, b: u8) -> Result<(), Halt> {
        if self.src[c.at(c.i)?] == b {
            c.i += 1;
            Ok(())
        } else {
            Err(Halt::Fallback)
        }
    }

    fn object(
        &mut self,
        c: &mut Cursor<'_>,
        depth: usize,
        state: State,
        kv: Option<&'a [u8]>,
    ) -> Result<(), Halt> {
        let open = c.at(c.i)?;
        if depth > self.max_depth {
            return Err(Stop::TooDeep(open).into());
        }
        c.i += 1;
        if self.src[c.at(c.i)?] == b'}' {
            c.i += 1;
            return Ok(());
        }
        loop {
            let kstart = c.at(c.i)?;
            if self.src[kstart] != b'"' {
                return Err(Halt::Fallback);
            }
            let kend = self.token_end(c, c.i);
            c.i += 1;
            let mut slot = None;
            let (pii, next, kv_hit) = if self.suppress > 0 {
                (false, NONE, false)
            } else {
                let raw = &self.src[kstart + 1..kend - 1];
                let key: &[u8] = if raw.contains(&b'\\') {
                    self.key_buf.clear();
                    decode_string(raw, &mut self.key_buf);
                    &self.key_buf
                } else {
                    raw
                };
                if state == ROOT {
                    slot = self.cap.slot(key);
                }
                let next = self.matcher.member(state, key);
                (
                    state == WRAPPER
                        || self.matcher.is_field(key)
                        || self.matcher.is_terminal(next),
                    next,
                    kv.is_some_and(|v| self.matcher.same_name(v, key)),
                )
            };
            self.expect(c, b':')?;
            let vstart = c.at(c.i)?;
            if pii {
                self.pii_value(c, depth)?;
            } else if kv_hit && self.src[vstart] == b'{' {
                self.object(c, depth + 1, WRAPPER, None)?;
            } else if kv_hit {
                self.pii_value(c, depth)?;
            } else {
                self.value(c, depth, next, false)?;
            }
            if let Some(slot) = slot {
                // The value's last structural is the one just consumed.
                let vend = self.token_end(c, c.i - 1);
                self.cap.record(slot, &self.src[vstart..vend]);
            }
            match self.src[c.at(c.i)?] {
                b',' => c.i += 1,
                b'}' => {
                    c.i += 1;
                    return Ok(());
                }
                _ => return Err(Halt::Fallback),
            }
        }
    }

    fn array(
        &mut self,
        c: &mut Cursor<'_>,
        depth: usize,
        state: State,
        batch: bool,
    ) -> Result<(), Halt> {
        let open = c.at(c.i)?;
        if depth > self.max_depth {
            return Err(Stop::TooDeep(open).into());
        }
        c.i += 1;
        if self.src[c.at(c.i)?] == b']' {
            c.i += 1;
            return Ok(());
        }
        let elem = if batch {
            ROOT
        } else {
            self.matcher.elements(state)
        };
        let pii = self.suppress == 0 && self.matcher.is_terminal(elem);
        let kv = self.suppress == 0 && self.matcher.has_kv();
        let mut element = 0;
        loop {
            let p = c.at(c.i)?;
            if batch {
                self.cap.event(element);
                element += 1;
            }
            if pii {
                self.pii_value(c, depth)?;
            } else if kv && self.src[p] == b'{' {
                let target = kv_target(self.src, p, c.end, self.matcher);
                self.object(c, depth + 1, elem, target)?;
            } else {
                self.value(c, depth, elem, false)?;
            }
            match self.src[c.at(c.i)?] {
                b',' => c.i += 1,
                b']' => {
                    c.i += 1;
                    return Ok(());
                }
                _ => return Err(Halt::Fallback),
            }
        }
    }

    /// A PII value at structural `c.i`: hash it and replace its span in the output.
    fn pii_value(&mut self, c: &mut Cursor<'_>, depth: usize) -> Result<(), Halt> {
        let start = c.at(c.i)?;
        let (digest, end) = match self.src[start] {
            b'"' => {
                let end = self.token_end(c, c.i);
                c.i += 1;
                let raw = &self.src[start + 1..end - 1];
                let d = if raw.contains(&b'\\') {
                    let mut buf = std::mem::take(&mut self.val_buf);
                    buf.clear();
                    decode_string(raw, &mut buf);
                    let d = self.hasher.digest(&buf);
                    self.val_buf = buf;
                    d
                } else {
                    self.hasher.digest(raw)
                };
                (d, end)
            }
            b'n' => {
                self.atom(c, start)?;
                return Ok(());
            }
            b'{' | b'[' => {
                self.suppress += 1;
                let r = self.value(c, depth, NONE, false);
                self.suppress -= 1;
                r?;
                // The container ends just after its closing bracket, the structural before c.i.
                let end = c.at(c.i - 1)? + 1;
                let mut buf = std::mem::take(&mut self.val_buf);
                buf.clear();
                compact_into(&self.src[start..end], &mut buf);
                let d = self.hasher.digest(&buf);
                self.val_buf = buf;
                (d, end)
            }
            _ => {
                let end = self.atom(c, start)?;
                (self.hasher.digest(&self.src[start..end]), end)
            }
        };
        self.out.extend_from_slice(&self.src[self.copied..start]);
        self.out.push(b'"');
        hex_encode_into(&digest, &mut self.out);
        self.out.push(b'"');
        self.copied = end;
        self.hashed += 1;
        Ok(())
    }
}
