//! Recovery and cleanup of the data directory: what [`Wal::open`](crate::Wal::open) does
//! before the writer starts (load the newest valid snapshot, scan and replay segments, cut
//! torn tails, move unusable files aside, pick the active segment), and the garbage
//! collection of old snapshots and segments after a new snapshot.
//!
//! These are the rules of the crate documentation's *Recovery rules* and *Snapshots and
//! segment deletion*; they live together because both decide which files the next open
//! will trust. The byte layout they read is in [`crate::format`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::format::{
    list_dir, open_segment, read_snapshot, segment_path, sync_dir, RecordHeader, RECORD_HEADER_LEN,
    SNAP_HEADER_LEN,
};
use crate::{RecoveryReport, ReplayItem, WalError, WalOptions};

/// Read buffer size used during replay.
const READ_CHUNK: usize = 8 << 20;

pub(crate) type ApplyFn<'f> = dyn FnMut(ReplayItem<'_>) -> Result<(), String> + 'f;

/// The segment the writer appends to after recovery.
pub(crate) struct ActiveSegment {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    /// Length of its good prefix (where the next batch is written).
    pub(crate) len: u64,
    /// LSN the next record will get.
    pub(crate) next_lsn: u64,
}

struct ScanOutcome {
    /// LSN of the last good record (`first_lsn - 1` if none).
    end_lsn: u64,
    /// Byte length of the good prefix.
    valid_len: u64,
    file_len: u64,
    applied: u64,
    corruption: Option<String>,
}

/// Makes sure `buf[*start..*end]` holds at least `need` bytes unless the file ends first.
fn fill(
    file: &mut File,
    buf: &mut Vec<u8>,
    start: &mut usize,
    end: &mut usize,
    need: usize,
) -> io::Result<()> {
    if buf.len() - *start < need {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
        if buf.len() < need {
            buf.resize(need, 0);
        }
    }
    while *end - *start < need {
        match file.read(&mut buf[*end..]) {
            Ok(0) => break,
            Ok(n) => *end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one segment, validating every record and applying those with `lsn > skip_upto`.
fn scan_segment(
    path: &Path,
    first_lsn: u64,
    skip_upto: u64,
    buf: &mut Vec<u8>,
    apply: &mut ApplyFn<'_>,
) -> Result<ScanOutcome, WalError> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    if buf.len() < READ_CHUNK {
        buf.resize(READ_CHUNK, 0);
    }
    let (mut start, mut end) = (0usize, 0usize);
    let mut offset = 0u64;
    let mut expected = first_lsn;
    let mut applied = 0u64;
    let corruption = loop {
        if end - start < RECORD_HEADER_LEN {
            fill(&mut file, buf, &mut start, &mut end, RECORD_HEADER_LEN)?;
        }
        let avail = end - start;
        if avail == 0 {
            break None;
        }
        if avail < RECORD_HEADER_LEN {
            break Some(format!(
                "short header ({avail} of {RECORD_HEADER_LEN} bytes)"
            ));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        header.copy_from_slice(&buf[start..start + RECORD_HEADER_LEN]);
        let header = RecordHeader::decode(&header);
        let (len, lsn) = (header.len, header.lsn);
        let remaining = file_len.saturating_sub(offset + RECORD_HEADER_LEN as u64);
        if len as u64 > remaining {
            break Some(format!(
                "short payload (header says {len} bytes, {remaining} left in file)"
            ));
        }
        let total = RECORD_HEADER_LEN + len;
        if end - start < total {
            fill(&mut file, buf, &mut start, &mut end, total)?;
            if end - start < total {
                break Some(format!("short payload ({} of {len} bytes)", end - start));
            }
        }
        let payload = &buf[start + RECORD_HEADER_LEN..start + total];
        if !header.matches(payload) {
            break Some(format!(
                "crc mismatch (record expected to be lsn {expected})"
            ));
        }
        if lsn != expected {
            break Some(format!("lsn {lsn} out of sequence (expected {expected})"));
        }
        if lsn > skip_upto {
            apply(ReplayItem::Record { lsn, data: payload })
                .map_err(|e| WalError::Replay(format!("record lsn {lsn}: {e}")))?;
            applied += 1;
        }
        start += total;
        offset += total as u64;
        expected += 1;
    };
    Ok(ScanOutcome {
        end_lsn: expected - 1,
        valid_len: offset,
        file_len,
        applied,
        corruption,
    })
}

/// Rebuilds the state in `dir` through `apply` (see the crate documentation's *Recovery
/// rules*), repairs the directory, and returns the segment the writer continues.
pub(crate) fn recover(
    dir: &Path,
    opts: &WalOptions,
    apply: &mut ApplyFn<'_>,
) -> Result<(ActiveSegment, RecoveryReport), WalError> {
    fs::create_dir_all(dir)?;
    let mut report = RecoveryReport::default();
    let mut reasons: Vec<String> = Vec::new();
    let mut listing = list_dir(dir)?;
    for tmp in &listing.temps {
        if let Err(e) = fs::remove_file(tmp) {
            tracing::warn!(file = %tmp.display(), error = %e, "event log: cannot remove temp file");
        }
    }

    // 1. Newest valid snapshot.
    let mut snap_lsn = 0u64;
    while let Some((lsn, path)) = listing.snapshots.pop() {
        match read_snapshot(&path, lsn)? {
            Ok(bytes) => {
                let data = bytes.get(SNAP_HEADER_LEN..).unwrap_or(&[]);
                apply(ReplayItem::Snapshot { lsn, data })
                    .map_err(|e| WalError::Replay(format!("snapshot lsn {lsn}: {e}")))?;
                snap_lsn = lsn;
                report.snapshot_lsn = Some(lsn);
                break;
            }
            Err(why) => {
                let moved = move_aside(&path)?;
                tracing::error!(
                    file = %path.display(),
                    moved_to = %moved.display(),
                    reason = %why,
                    "event log: corrupt snapshot ignored, falling back to an older one"
                );
                reasons.push(format!(
                    "corrupt snapshot {} ({why}) moved to {}",
                    path.display(),
                    moved.display()
                ));
            }
        }
    }

    // 2. Segments.
    let segs = &mut listing.segments;
    let need = snap_lsn + 1;
    let mut start_idx = 0;
    while start_idx + 1 < segs.len() && segs[start_idx + 1].0 <= need {
        start_idx += 1;
    }
    if let Some((first, path)) = segs.get(start_idx) {
        if *first > need {
            let msg = format!(
                "records {need}..={} are missing: no snapshot covers them and the oldest segment {} starts at lsn {first}",
                first - 1,
                path.display()
            );
            tracing::error!("event log: {msg}");
            return Err(WalError::Corrupt(msg));
        }
    }
    let mut buf = Vec::new();
    let mut last = snap_lsn;
    // End lsn of the last scanned segment, and its good length.
    let mut tail: Option<(u64, u64)> = None;
    let mut i = start_idx;
    while i < segs.len() {
        let first = segs[i].0;
        if let Some((prev_end, _)) = tail {
            if first != prev_end + 1 {
                let msg = format!(
                    "segment {} starts at lsn {first} but the previous segment ends at lsn {prev_end}",
                    segs[i].1.display()
                );
                move_aside_from(segs, i, &msg, &mut reasons)?;
                break;
            }
        }
        let path = segs[i].1.clone();
        let outcome = scan_segment(&path, first, snap_lsn, &mut buf, apply)?;
        report.segments += 1;
        report.records_replayed += outcome.applied;
        last = last.max(outcome.end_lsn);
        tail = Some((outcome.end_lsn, outcome.valid_len));
        if let Some(why) = outcome.corruption {
            let cut = outcome.file_len - outcome.valid_len;
            truncate_file(&path, outcome.valid_len, opts.fsync)?;
            report.truncated_bytes += cut;
            if report.truncated_at.is_none() {
                report.truncated_at = Some((path.clone(), outcome.valid_len));
            }
            let is_last = i + 1 == segs.len();
            let lossless = segs
                .get(i + 1)
                .is_some_and(|(next_first, _)| *next_first == outcome.end_lsn + 1);
            let msg = format!(
                "cut {cut} bytes from {} at offset {} after lsn {}: {why}",
                path.display(),
                outcome.valid_len,
                outcome.end_lsn
            );
            if is_last || lossless {
                tracing::warn!(
                    file = %path.display(),
                    offset = outcome.valid_len,
                    bytes_cut = cut,
                    reason = %why,
                    "event log: torn/corrupt tail cut off"
                );
                reasons.push(msg);
            } else {
                tracing::error!(
                    file = %path.display(),
                    offset = outcome.valid_len,
                    bytes_cut = cut,
                    reason = %why,
                    "event log: corruption in a non-last segment; later records are lost"
                );
                reasons.push(msg);
                move_aside_from(segs, i + 1, "they follow a corrupt segment", &mut reasons)?;
                break;
            }
        }
        i += 1;
    }

    // 3. Active segment: reuse the last one if it ends right before the next lsn.
    let next_lsn = last + 1;
    let (seg_path, seg_len) = match (segs.last(), tail) {
        (Some((_, path)), Some((end, len))) if end + 1 == next_lsn => (path.clone(), len),
        _ => {
            let path = segment_path(dir, next_lsn);
            let file = open_segment(&path)?;
            file.set_len(0)?;
            if opts.fsync {
                file.sync_all()?;
            }
            (path, 0)
        }
    };
    let file = open_segment(&seg_path)?;
    if opts.fsync {
        sync_dir(dir)?;
    }

    report.last_lsn = last;
    if !reasons.is_empty() {
        report.reason = Some(reasons.join("; "));
    }
    tracing::info!(
        snapshot_lsn = ?report.snapshot_lsn,
        segments = report.segments,
        records = report.records_replayed,
        last_lsn = report.last_lsn,
        truncated_bytes = report.truncated_bytes,
        "event log recovered"
    );
    let active = ActiveSegment {
        file,
        path: seg_path,
        len: seg_len,
        next_lsn,
    };
    Ok((active, report))
}

/// Renames `segs[from..]` aside and removes them from `segs`.
fn move_aside_from(
    segs: &mut Vec<(u64, PathBuf)>,
    from: usize,
    why: &str,
    reasons: &mut Vec<String>,
) -> io::Result<()> {
    for (_, path) in segs.iter().skip(from) {
        let moved = move_aside(path)?;
        tracing::error!(
            file = %path.display(),
            moved_to = %moved.display(),
            reason = why,
            "event log: segment moved aside, its records are NOT replayed"
        );
        reasons.push(format!(
            "segment {} moved to {} ({why})",
            path.display(),
            moved.display()
        ));
    }
    segs.truncate(from);
    Ok(())
}

/// Renames `path` to `path.corrupt` (or `path.N.corrupt` if taken) and returns the new name.
fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let base = path.as_os_str().to_owned();
    let mut target = base.clone();
    target.push(".corrupt");
    let mut n = 1u32;
    while Path::new(&target).exists() {
        target = base.clone();
        target.push(format!(".{n}.corrupt"));
        n += 1;
    }
    let target = PathBuf::from(target);
    fs::rename(path, &target)?;
    Ok(target)
}

/// Cuts `path` to `len` bytes (and fsyncs it with `fsync`).
pub(crate) fn truncate_file(path: &Path, len: u64, fsync: bool) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// Keeps the newest snapshot (`newest`) and the previous one; deletes older snapshots and
/// the segments whose records are all covered by the previous snapshot.
pub(crate) fn collect_garbage(dir: &Path, newest: u64, fsync: bool) -> io::Result<()> {
    let listing = list_dir(dir)?;
    let previous = listing
        .snapshots
        .iter()
        .map(|(lsn, _)| *lsn)
        .filter(|lsn| *lsn < newest)
        .max();
    let Some(previous) = previous else {
        return Ok(());
    };
    let mut removed = false;
    for (lsn, path) in &listing.snapshots {
        if *lsn < previous {
            fs::remove_file(path)?;
            removed = true;
        }
    }
    // Segment i holds lsns [first_i, first_{i+1} - 1]; the last (active) one is never removed.
    for pair in listing.segments.windows(2) {
        if let [(_, path), (next_first, _)] = pair {
            if *next_first <= previous.saturating_add(1) {
                fs::remove_file(path)?;
                removed = true;
            }
        }
    }
    if removed && fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use super::truncate_file;
    use crate::format::{list_dir, snapshot_path, RECORD_HEADER_LEN};
    use crate::test_support::*;
    use crate::{ReplayItem, Wal, WalError, WalOptions};

    /// Appends 20 records, damages the last segment with `damage`, reopens and checks that
    /// the first `survivors` records come back, then that the log continues.
    fn torn_case(damage: impl FnOnce(&Path), survivors: usize, expect_cut: Option<u64>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        let acked = write_n(&wal, 0..20);
        wal.close();
        drop(wal);
        let seg = last_segment(dir.path());
        let before = fs::metadata(&seg).expect("meta").len();
        damage(&seg);
        let damaged_len = fs::metadata(&seg).expect("meta").len();

        let (wal, report, (_, recs)) = open_collect(dir.path(), opts());
        assert_eq!(recs, acked[..survivors].to_vec());
        assert_eq!(report.last_lsn, survivors as u64);
        assert!(report.truncated_bytes > 0);
        if let Some(cut) = expect_cut {
            assert_eq!(report.truncated_bytes, cut);
        }
        let (path, offset) = report.truncated_at.clone().expect("truncated_at");
        assert_eq!(path, seg);
        assert_eq!(offset, damaged_len - report.truncated_bytes);
        assert!(offset <= before);
        assert!(report.reason.as_deref().is_some_and(|r| r.contains("cut")));
        let lsn = wal
            .append_blocking(b"after".to_vec(), |_| {})
            .expect("append");
        assert_eq!(lsn, survivors as u64 + 1);
        wal.close();
        drop(wal);

        let (_, report, (_, recs)) = open_collect(dir.path(), opts());
        assert_eq!(report.truncated_bytes, 0, "second open is clean");
        assert_eq!(recs.len(), survivors + 1);
        assert_contiguous(&recs, 1);
        assert_eq!(recs[survivors].1, b"after".to_vec());
    }

    #[test]
    fn torn_tail_truncated_mid_record() {
        torn_case(
            |seg| {
                let len = fs::metadata(seg).expect("meta").len();
                truncate_file(seg, len - 5, false).expect("truncate");
            },
            19,
            None,
        );
    }

    #[test]
    fn torn_tail_mid_header() {
        torn_case(
            |seg| {
                let len = fs::metadata(seg).expect("meta").len();
                let last_len = RECORD_HEADER_LEN as u64 + payload(19).len() as u64;
                truncate_file(seg, len - last_len + 7, false).expect("truncate");
            },
            19,
            Some(7),
        );
    }

    #[test]
    fn torn_tail_garbage_appended() {
        torn_case(
            |seg| {
                let mut f = OpenOptions::new().append(true).open(seg).expect("open");
                f.write_all(&[0xAB; 37]).expect("write");
            },
            20,
            Some(37),
        );
    }

    #[test]
    fn torn_tail_zeroes_appended() {
        torn_case(
            |seg| {
                let mut f = OpenOptions::new().append(true).open(seg).expect("open");
                f.write_all(&[0; 4096]).expect("write");
            },
            20,
            Some(4096),
        );
    }

    #[test]
    fn torn_tail_flipped_byte_in_last_record() {
        torn_case(
            |seg| {
                let mut bytes = fs::read(seg).expect("read");
                let n = bytes.len();
                bytes[n - 3] ^= 0x40;
                fs::write(seg, bytes).expect("write");
            },
            19,
            Some(RECORD_HEADER_LEN as u64 + payload(19).len() as u64),
        );
    }

    #[test]
    fn snapshot_then_more_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = || WalOptions {
            segment_bytes: 300,
            ..opts()
        };
        let (wal, _, _, state) = open_state(dir.path(), small());
        append_state(&wal, &state, 0..40);
        let s1 = snap_state(&wal, &state);
        assert_eq!(s1, 40);
        append_state(&wal, &state, 40..60);
        let segs_before = segments(dir.path()).len();
        let s2 = snap_state(&wal, &state);
        assert_eq!(s2, 60);
        // Segments wholly <= s1 are gone, the ones needed after s1 remain.
        let segs = segments(dir.path());
        assert!(segs.len() < segs_before, "old segments deleted");
        assert!(
            segs[0].0 <= s1 + 1,
            "segments after the previous snapshot kept"
        );
        append_state(&wal, &state, 60..75);
        let expected = state.lock().expect("lock").clone();
        wal.close();
        drop(wal);

        let (wal, report, (snap, recs), st) = open_state(dir.path(), small());
        assert_eq!(report.snapshot_lsn, Some(60));
        assert_eq!(snap.as_ref().map(|s| s.0), Some(60));
        assert_eq!(recs.first().map(|r| r.0), Some(61), "only later records");
        assert_eq!(recs.len(), 15);
        assert_contiguous(&recs, 61);
        assert_eq!(*st.lock().expect("lock"), expected);
        let snaps = list_dir(dir.path()).expect("list").snapshots;
        assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![40, 60]);

        // A third snapshot deletes the first one.
        append_state(&wal, &st, 75..80);
        assert_eq!(snap_state(&wal, &st), 80);
        let snaps = list_dir(dir.path()).expect("list").snapshots;
        assert_eq!(snaps.iter().map(|s| s.0).collect::<Vec<_>>(), vec![60, 80]);
        append_state(&wal, &st, 80..90);
        let expected = st.lock().expect("lock").clone();
        wal.close();
        drop(wal);

        // Corrupt the newest snapshot: falls back to the previous one plus segments.
        let newest = snapshot_path(dir.path(), 80);
        let mut bytes = fs::read(&newest).expect("read");
        let n = bytes.len();
        bytes[n / 2] ^= 0xFF;
        fs::write(&newest, bytes).expect("write");
        let (wal, report, (snap, recs), st) = open_state(dir.path(), small());
        assert_eq!(report.snapshot_lsn, Some(60));
        assert_eq!(snap.map(|s| s.0), Some(60));
        assert_contiguous(&recs, 61);
        assert_eq!(recs.len(), 30);
        assert!(report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("corrupt snapshot")));
        assert_eq!(*st.lock().expect("lock"), expected);
        assert!(!newest.exists());
        append_state(&wal, &st, 90..95);
        let expected = st.lock().expect("lock").clone();
        wal.close();
        drop(wal);
        let (_, report, _, st) = open_state(dir.path(), small());
        assert!(report.reason.is_none());
        assert_eq!(*st.lock().expect("lock"), expected);
    }

    #[test]
    fn apply_error_aborts_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _, _) = open_collect(dir.path(), opts());
        write_n(&wal, 0..3);
        wal.close();
        drop(wal);
        let res = Wal::open(dir.path(), opts(), |item| match item {
            ReplayItem::Record { lsn: 2, .. } => Err("bad".to_string()),
            _ => Ok(()),
        });
        assert!(matches!(res, Err(WalError::Replay(m)) if m.contains("bad")));
    }

    #[test]
    fn corruption_in_non_last_segment_moves_later_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = || WalOptions {
            segment_bytes: 200,
            ..opts()
        };
        let (wal, _, _) = open_collect(dir.path(), small());
        let acked = write_n(&wal, 0..40);
        wal.close();
        drop(wal);
        let segs = segments(dir.path());
        assert!(segs.len() >= 4);
        // Flip a byte in the first record of the second segment.
        let (second_first, second) = segs[1].clone();
        let mut bytes = fs::read(&second).expect("read");
        bytes[RECORD_HEADER_LEN] ^= 1;
        fs::write(&second, bytes).expect("write");
        let (wal, report, (_, recs)) = open_collect(dir.path(), small());
        assert_eq!(recs, acked[..(second_first - 1) as usize].to_vec());
        assert!(report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("moved")));
        assert_eq!(segments(dir.path()).len(), 2);
        let lsn = wal.append_blocking(b"x".to_vec(), |_| {}).expect("append");
        assert_eq!(lsn, second_first);
        wal.close();
        drop(wal);
        let (_, report, (_, recs)) = open_collect(dir.path(), small());
        assert!(report.reason.is_none());
        assert_eq!(recs.len() as u64, second_first);
    }

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        for entry in fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }

    #[test]
    fn random_corruption_never_panics() {
        let base = tempfile::tempdir().expect("tempdir");
        let small = || WalOptions {
            segment_bytes: 400,
            fsync: false,
            ..opts()
        };
        let (wal, _, _, state) = open_state(base.path(), small());
        append_state(&wal, &state, 0..30);
        snap_state(&wal, &state);
        append_state(&wal, &state, 30..60);
        snap_state(&wal, &state);
        append_state(&wal, &state, 60..90);
        wal.close();
        drop(wal);

        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut opened = 0;
        for _round in 0..150 {
            let dir = tempfile::tempdir().expect("tempdir");
            copy_dir(base.path(), dir.path());
            let files: Vec<PathBuf> = fs::read_dir(dir.path())
                .expect("read_dir")
                .map(|e| e.expect("entry").path())
                .collect();
            for _ in 0..1 + rng.below(3) {
                let f = &files[rng.below(files.len() as u64) as usize];
                let Ok(mut bytes) = fs::read(f) else { continue };
                match rng.below(5) {
                    0 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len() as u64) as usize;
                        bytes[i] ^= 1 << rng.below(8);
                    }
                    1 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
                    2 => {
                        for _ in 0..rng.below(64) {
                            bytes.push(rng.next() as u8);
                        }
                    }
                    3 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len() as u64) as usize;
                        let j = (i + 1 + rng.below(40) as usize).min(bytes.len());
                        for b in &mut bytes[i..j] {
                            *b = rng.next() as u8;
                        }
                    }
                    _ => {
                        let _ = fs::remove_file(f);
                        continue;
                    }
                }
                fs::write(f, bytes).expect("write");
            }
            let res = Wal::open(dir.path(), small(), |item| {
                if let ReplayItem::Snapshot { data, .. } = item {
                    // Snapshot bytes passed the crc; they must decode.
                    let _ = decode_state(data);
                }
                Ok(())
            });
            let Ok((wal, _)) = res else { continue };
            opened += 1;
            let next = wal.last_lsn() + 1;
            assert_eq!(
                wal.append_blocking(b"z".to_vec(), |_| {}).expect("append"),
                next
            );
            wal.close();
            drop(wal);
            let (_, report, (_, recs)) = open_collect(dir.path(), small());
            assert_eq!(
                report.truncated_bytes, 0,
                "second open after repair is clean"
            );
            assert_eq!(report.last_lsn, next);
            assert_eq!(recs.last().map(|r| r.0), Some(next));
        }
        assert!(opened > 50, "most corruptions are recoverable ({opened})");
    }
}
