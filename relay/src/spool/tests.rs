//! The spool store against an in-memory model (proptest), and its repair paths.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::record::{self, sample};
use super::segment;
use super::store::{Pos, Store};

fn open(dir: &Path, seg_bytes: u64) -> (Store, super::store::OpenReport) {
    Store::open(&dir.join("w0"), &dir.join("corrupt"), "w0", seg_bytes).unwrap()
}

fn append(store: &mut Store, ids: &[usize]) -> (Vec<Pos>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut meta = Vec::new();
    for i in ids {
        let r = sample(*i);
        let n = record::encode(&r, &mut buf);
        meta.push((n as u32, r.timestamp_ms));
    }
    (store.append(&buf, &meta).unwrap(), buf)
}

/// request id -> record index of every unacknowledged record, read back from disk.
fn unacked(store: &Store) -> BTreeMap<String, Pos> {
    let mut out = BTreeMap::new();
    for p in store.unacked_positions() {
        let r = store.read(p).unwrap();
        let i: usize = r.request_id.strip_prefix("id-").unwrap().parse().unwrap();
        assert_eq!(
            r,
            sample(i),
            "record read back differs from what was appended"
        );
        assert!(out.insert(r.request_id, p).is_none(), "record twice");
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    /// Append this many records in one group commit.
    Append(usize),
    /// Kafka acknowledges the n-th (mod count) unacknowledged record.
    Ack(usize),
    /// Clean restart.
    Reopen,
    /// Crash during the write of a batch of this many records: the file ends at the given
    /// fraction (per mille) of the batch; the fsync never returned, so no client was answered.
    Crash(usize, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..5).prop_map(Op::Append),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => ((1usize..5), 0u16..1000).prop_map(|(n, f)| Op::Crash(n, f)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Nothing acknowledged to a client (appended and synced) and not yet acknowledged by
    /// Kafka is ever missing after a reopen, whatever byte a crash cut a write at; nothing
    /// that was never appended appears, every record read back is byte-identical, and once
    /// all is acknowledged the segments are deleted. (A record acknowledged out of order,
    /// beyond its segment's mark, may be replayed again: at least once.)
    #[test]
    fn spool_never_loses_an_acknowledged_record(ops in proptest::collection::vec(op(), 1..60),
                                                seg_bytes in 200u64..2000) {
        let tmp = tempfile::tempdir().unwrap();
        let (mut store, _) = open(tmp.path(), seg_bytes);
        let mut next = 0usize;
        // Acknowledged to a client and not by Kafka: must survive.
        let mut must: BTreeMap<String, Pos> = BTreeMap::new();
        // Everything the store reports unacknowledged (must + records of torn batches).
        let mut live: BTreeMap<String, Pos> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Append(n) => {
                    let ids: Vec<usize> = (next..next + n).collect();
                    next += n;
                    let (pos, _) = append(&mut store, &ids);
                    for (i, p) in ids.iter().zip(pos) {
                        must.insert(format!("id-{i}"), p);
                        live.insert(format!("id-{i}"), p);
                    }
                }
                Op::Ack(k) => {
                    if live.is_empty() { continue; }
                    let (id, p) = live.iter().nth(k % live.len()).map(|(a, b)| (a.clone(), *b)).unwrap();
                    store.ack(p).unwrap();
                    live.remove(&id);
                    must.remove(&id);
                }
                Op::Reopen | Op::Crash(..) => {
                    if let Op::Crash(n, frac) = op {
                        let ids: Vec<usize> = (next..next + n).collect();
                        next += n;
                        let (pos, buf) = append(&mut store, &ids);
                        let start = pos[0].off;
                        let cut = start + (buf.len() as u64 * u64::from(frac) / 1000);
                        let f = std::fs::OpenOptions::new().write(true)
                            .open(segment::seg_path(store.dir(), pos[0].seg)).unwrap();
                        f.set_len(cut).unwrap();
                    }
                    drop(store);
                    let (s, report) = open(tmp.path(), seg_bytes);
                    store = s;
                    prop_assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
                    let got = unacked(&store);
                    for id in must.keys() {
                        prop_assert!(got.contains_key(id), "{} lost after reopen", id);
                    }
                    prop_assert_eq!(report.unacked, got.len() as u64);
                    must = must.keys().map(|k| (k.clone(), got[k])).collect();
                    live = got;
                }
            }
        }
        // Everything acknowledged: every segment but the active one is gone.
        for p in live.values() {
            store.ack(*p).unwrap();
        }
        prop_assert_eq!(store.unacked(), 0);
        let segs = std::fs::read_dir(store.dir()).unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
            .count();
        prop_assert!(segs <= 1, "{} segments left", segs);
    }
}

#[test]
fn damage_in_the_middle_is_quarantined_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, _) = open(tmp.path(), 1 << 20);
    let (pos, _) = append(&mut store, &[1, 2, 3]);
    let path = segment::seg_path(store.dir(), pos[1].seg);
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[pos[1].off as usize + 20] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (store, report) = open(tmp.path(), 1 << 20);
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    let (seg, at, err, copy) = &report.corrupt[0];
    assert_eq!((*seg, *at), (pos[1].seg, pos[1].off));
    assert!(err.contains("CRC32C"), "{err}");
    assert_eq!(
        std::fs::read(copy).unwrap(),
        bytes,
        "the copy is the damaged file"
    );
    assert!(copy.starts_with(tmp.path().join("corrupt")));
    assert_eq!(
        report.truncated_bytes,
        bytes.len() as u64 - pos[1].off,
        "everything from the damage on is cut from the live segment"
    );
    // The valid record before the damage is still delivered.
    let got = unacked(&store);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["id-1"]);
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, _) = open(tmp.path(), 1 << 20);
    let (pos, _) = append(&mut store, &[1, 2]);
    let path = segment::seg_path(store.dir(), pos[0].seg);
    drop(store);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (store, report) = open(tmp.path(), 1 << 20);
    assert_eq!(report.torn, vec![(pos[0].seg, u64::from(pos[1].len) - 3)]);
    assert_eq!(report.truncated_bytes, u64::from(pos[1].len) - 3);
    assert!(report.corrupt.is_empty());
    assert_eq!(unacked(&store).keys().collect::<Vec<_>>(), ["id-1"]);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        pos[1].off,
        "cut back to the last whole record"
    );
}

#[test]
fn acknowledged_marks_survive_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, _) = open(tmp.path(), 1 << 20);
    let (pos, _) = append(&mut store, &[1, 2, 3, 4]);
    store.ack(pos[0]).unwrap();
    store.ack(pos[2]).unwrap(); // beyond the mark: replayed again (at least once)
    drop(store);
    let (store, report) = open(tmp.path(), 1 << 20);
    assert_eq!(report.unacked, 3);
    assert_eq!(
        unacked(&store).keys().collect::<Vec<_>>(),
        ["id-2", "id-3", "id-4"]
    );
    assert_eq!(store.first_unacked(), Some(pos[1]));
    assert_eq!(store.next_unacked_after(pos[1]), Some(pos[2]));
}
