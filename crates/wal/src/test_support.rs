//! Helpers shared by the unit tests of the modules: a log opened with a collecting `apply`,
//! deterministic payloads, and a tiny state machine ("the list of applied payloads") with
//! snapshots, so writer and recovery tests drive the log the same way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::format::list_dir;
use crate::{RecoveryReport, ReplayItem, Wal, WalOptions};

pub(crate) fn opts() -> WalOptions {
    WalOptions::default()
}

/// Replays `dir`, returning (snapshot, records) as delivered.
pub(crate) type Replayed = (Option<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>);

/// Test state machine: the list of applied payloads.
pub(crate) type State = Arc<Mutex<Vec<Vec<u8>>>>;

pub(crate) fn open_collect(dir: &Path, o: WalOptions) -> (Wal, RecoveryReport, Replayed) {
    let mut snap = None;
    let mut recs = Vec::new();
    let (wal, report) = Wal::open(dir, o, |item| {
        match item {
            ReplayItem::Snapshot { lsn, data } => {
                assert!(snap.is_none(), "snapshot delivered twice");
                assert!(recs.is_empty(), "snapshot after records");
                snap = Some((lsn, data.to_vec()));
            }
            ReplayItem::Record { lsn, data } => recs.push((lsn, data.to_vec())),
        }
        Ok(())
    })
    .expect("open");
    (wal, report, (snap, recs))
}

pub(crate) fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    list_dir(dir).expect("list").segments
}

pub(crate) fn payload(i: u64) -> Vec<u8> {
    format!("event-{i:08}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

pub(crate) fn assert_contiguous(recs: &[(u64, Vec<u8>)], first: u64) {
    for (k, (lsn, _)) in recs.iter().enumerate() {
        assert_eq!(*lsn, first + k as u64, "lsn sequence");
    }
}

pub(crate) fn write_n(wal: &Wal, range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    range
        .map(|i| {
            let p = payload(i);
            (wal.append_blocking(p.clone(), |_| {}).expect("append"), p)
        })
        .collect()
}

pub(crate) fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a segment").1
}

pub(crate) fn encode_state(state: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in state {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

pub(crate) fn decode_state(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        out.push(data[4..4 + len].to_vec());
        data = &data[4 + len..];
    }
    out
}

/// Opens with a state machine "list of payloads" and returns it.
pub(crate) fn open_state(dir: &Path, o: WalOptions) -> (Wal, RecoveryReport, Replayed, State) {
    let (wal, report, replayed) = open_collect(dir, o);
    let mut state = replayed
        .0
        .as_ref()
        .map(|(_, d)| decode_state(d))
        .unwrap_or_default();
    state.extend(replayed.1.iter().map(|(_, p)| p.clone()));
    (wal, report, replayed, Arc::new(Mutex::new(state)))
}

pub(crate) fn append_state(wal: &Wal, state: &State, range: std::ops::Range<u64>) {
    for i in range {
        let st = Arc::clone(state);
        let p = payload(i);
        wal.append_blocking(p.clone(), move |_| st.lock().expect("lock").push(p))
            .expect("append");
    }
}

pub(crate) fn snap_state(wal: &Wal, state: &State) -> u64 {
    let st = Arc::clone(state);
    wal.snapshot_blocking(move || encode_state(&st.lock().expect("lock")))
        .expect("snapshot")
}
