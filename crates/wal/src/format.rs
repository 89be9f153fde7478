//! The on-disk format: record framing and its crc, the names of segment and snapshot files,
//! and snapshot files themselves (atomic write, validating read).
//!
//! Everything that decides which bytes land on disk lives here, so the format described in
//! the crate documentation has one place in the code; the writer and recovery only call
//! these functions. The tests at the bottom pin the bytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Size of a record header: payload length, crc32, lsn.
pub(crate) const RECORD_HEADER_LEN: usize = 16;
/// Snapshot file magic.
const SNAP_MAGIC: [u8; 8] = *b"OENSNAP\0";
/// Snapshot format version.
const SNAP_VERSION: u32 = 1;
/// Size of a snapshot header: magic, version, lsn, length, crc32.
pub(crate) const SNAP_HEADER_LEN: usize = 32;

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// Appends one framed record to `buf`:
/// `[u32 LE payload length][u32 LE crc32(lsn LE ‖ payload)][u64 LE lsn][payload]`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    let lsn_bytes = lsn.to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn_bytes);
    hasher.update(payload);
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(&lsn_bytes);
    buf.extend_from_slice(payload);
}

/// The checksum of a record or snapshot: crc32 over the LSN's little-endian bytes, then the
/// data.
pub(crate) fn record_crc(lsn_bytes: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(lsn_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// A decoded record header; whether it is valid is only known with its payload
/// ([`RecordHeader::matches`]).
pub(crate) struct RecordHeader {
    /// Payload length in bytes.
    pub(crate) len: usize,
    /// The record's LSN.
    pub(crate) lsn: u64,
    crc: u32,
}

impl RecordHeader {
    pub(crate) fn decode(header: &[u8; RECORD_HEADER_LEN]) -> RecordHeader {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let lsn = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        RecordHeader { len, lsn, crc }
    }

    /// Whether `payload` and the header's LSN match the header's crc.
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        record_crc(&self.lsn.to_le_bytes(), payload) == self.crc
    }
}

// ---------------------------------------------------------------------------------------------
// File names and directory listing
// ---------------------------------------------------------------------------------------------

/// `wal-{first_lsn:020}.log`.
pub(crate) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("wal-{first_lsn:020}.log"))
}

/// `snapshot-{lsn:020}.snap`.
pub(crate) fn snapshot_path(dir: &Path, lsn: u64) -> PathBuf {
    dir.join(format!("snapshot-{lsn:020}.snap"))
}

/// `snapshot-{lsn:020}.snap.tmp`: a snapshot being written.
fn snapshot_tmp_path(dir: &Path, lsn: u64) -> PathBuf {
    dir.join(format!("snapshot-{lsn:020}.snap.tmp"))
}

/// Parses `{prefix}{lsn:020}{suffix}`. LSNs below `min` or absurdly large (so that LSN
/// arithmetic can never overflow) are not ours and are ignored.
fn parse_lsn_name(name: &str, prefix: &str, suffix: &str, min: u64) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let lsn: u64 = digits.parse().ok()?;
    (min..=u64::MAX / 2).contains(&lsn).then_some(lsn)
}

/// The log's files in a data directory.
#[derive(Default)]
pub(crate) struct Listing {
    /// `(first_lsn, path)`, ascending.
    pub(crate) segments: Vec<(u64, PathBuf)>,
    /// `(lsn, path)`, ascending.
    pub(crate) snapshots: Vec<(u64, PathBuf)>,
    /// Leftover `snapshot-*.tmp` files.
    pub(crate) temps: Vec<PathBuf>,
}

/// Lists the segments, snapshots and snapshot temp files in `dir`; other files are ignored.
pub(crate) fn list_dir(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(lsn) = parse_lsn_name(name, "wal-", ".log", 1) {
            listing.segments.push((lsn, entry.path()));
        } else if let Some(lsn) = parse_lsn_name(name, "snapshot-", ".snap", 0) {
            listing.snapshots.push((lsn, entry.path()));
        } else if name.starts_with("snapshot-") && name.ends_with(".tmp") {
            listing.temps.push(entry.path());
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// Opens (creating it if needed) a segment for appending.
pub(crate) fn open_segment(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot files
// ---------------------------------------------------------------------------------------------

/// Writes `snapshot-{lsn:020}.snap` atomically: `*.snap.tmp`, fsync, rename, fsync of the
/// directory (the fsyncs only with `fsync`). The header is
/// `[magic "OENSNAP\0"][u32 LE version = 1][u64 LE lsn][u64 LE data length][u32 LE crc32(lsn LE ‖ data)]`.
pub(crate) fn write_snapshot(
    dir: &Path,
    lsn: u64,
    data: &[u8],
    fsync: bool,
) -> io::Result<PathBuf> {
    let final_path = snapshot_path(dir, lsn);
    let tmp = snapshot_tmp_path(dir, lsn);
    let mut header = [0u8; SNAP_HEADER_LEN];
    header[0..8].copy_from_slice(&SNAP_MAGIC);
    header[8..12].copy_from_slice(&SNAP_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&lsn.to_le_bytes());
    header[20..28].copy_from_slice(&(data.len() as u64).to_le_bytes());
    header[28..32].copy_from_slice(&record_crc(&lsn.to_le_bytes(), data).to_le_bytes());
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&header)?;
        file.write_all(data)?;
        if fsync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, &final_path)?;
        if fsync {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| final_path)
}

/// Reads and validates a snapshot. `Ok(Err(why))` means the file is corrupt;
/// on success the state bytes start at `SNAP_HEADER_LEN`.
pub(crate) fn read_snapshot(path: &Path, lsn: u64) -> io::Result<Result<Vec<u8>, String>> {
    let bytes = fs::read(path)?;
    if bytes.len() < SNAP_HEADER_LEN {
        return Ok(Err(format!("file too short ({} bytes)", bytes.len())));
    }
    let mut header = [0u8; SNAP_HEADER_LEN];
    header.copy_from_slice(&bytes[..SNAP_HEADER_LEN]);
    let u32_at =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if header[0..8] != SNAP_MAGIC {
        return Ok(Err("bad magic".to_string()));
    }
    let version = u32_at(8);
    if version != SNAP_VERSION {
        return Ok(Err(format!("unsupported version {version}")));
    }
    let header_lsn = u64_at(12);
    if header_lsn != lsn {
        return Ok(Err(format!(
            "header lsn {header_lsn} does not match file name"
        )));
    }
    let len = u64_at(20);
    let actual = (bytes.len() - SNAP_HEADER_LEN) as u64;
    if len != actual {
        return Ok(Err(format!("length {len} in header, {actual} in file")));
    }
    let crc = u32_at(28);
    if record_crc(&lsn.to_le_bytes(), &bytes[SNAP_HEADER_LEN..]) != crc {
        return Ok(Err("crc mismatch".to_string()));
    }
    Ok(Ok(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The record framing, byte for byte (crc computed independently with zlib's crc32).
    #[test]
    fn record_bytes_are_pinned() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, b"abc");
        assert_eq!(hex(&buf), "03000000fcf66c600100000000000000616263");
        let header = RecordHeader::decode(buf[..RECORD_HEADER_LEN].try_into().expect("16"));
        assert_eq!((header.len, header.lsn), (3, 1));
        assert!(header.matches(b"abc"));
        assert!(!header.matches(b"abd"));

        buf.clear();
        encode_record(&mut buf, 2, b"");
        assert_eq!(hex(&buf), "0000000014d807270200000000000000");
    }

    /// The snapshot file, byte for byte, and its names.
    #[test]
    fn snapshot_bytes_and_names_are_pinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_snapshot(dir.path(), 7, b"state", false).expect("write");
        assert_eq!(path, dir.path().join("snapshot-00000000000000000007.snap"));
        let bytes = fs::read(&path).expect("read");
        assert_eq!(
            hex(&bytes),
            "4f454e534e41500001000000070000000000000005000000000000003c65b6177374617465"
        );
        let read = read_snapshot(&path, 7).expect("io").expect("valid");
        assert_eq!(&read[SNAP_HEADER_LEN..], b"state");
        assert!(
            read_snapshot(&path, 8).expect("io").is_err(),
            "lsn must match the name"
        );
        assert_eq!(
            segment_path(dir.path(), 1),
            dir.path().join("wal-00000000000000000001.log")
        );
        let listing = list_dir(dir.path()).expect("list");
        assert_eq!(listing.snapshots, vec![(7, path)]);
        assert!(listing.segments.is_empty() && listing.temps.is_empty());
    }
}
