//! Personal data in logs: member ids are written as keyed pseudonyms
//! (`m-` + 16 hex digits of HMAC-SHA256 under a key derived from the
//! configured secret), so log lines about one member can be correlated
//! without the logs holding the id itself, and nobody without the key can
//! test a guessed id against them. `security.log_member_ids = true` writes
//! ids in clear for debugging.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Turns member ids into what logs may hold.
#[derive(Clone)]
pub struct Pseudonyms {
    /// None: ids in clear (debug setting).
    key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.key.is_some() {
            "Pseudonyms(keyed)"
        } else {
            "Pseudonyms(clear)"
        })
    }
}

impl Pseudonyms {
    /// Keyed pseudonyms under `key`.
    pub fn keyed(key: [u8; 32]) -> Pseudonyms {
        Pseudonyms { key: Some(key) }
    }

    /// Ids in clear (debugging only).
    pub fn clear() -> Pseudonyms {
        Pseudonyms { key: None }
    }

    /// What a log line may say about `member_id`.
    pub fn of(&self, member_id: &str) -> String {
        match &self.key {
            None => member_id.to_string(),
            Some(k) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length");
                mac.update(member_id.as_bytes());
                let tag = mac.finalize().into_bytes();
                format!("m-{}", to_hex(&tag[..8]))
            }
        }
    }
}

/// Lower-case hex.
pub fn to_hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// Parses hex (either case).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_hide_the_id() {
        let p = Pseudonyms::keyed([7; 32]);
        let a = p.of("M00000042");
        assert_eq!(a, p.of("M00000042"));
        assert!(
            a.starts_with("m-") && a.len() == 18 && !a.contains("42"),
            "{a}"
        );
        assert_ne!(a, p.of("M00000043"));
        assert_ne!(a, Pseudonyms::keyed([8; 32]).of("M00000042"));
        assert_eq!(Pseudonyms::clear().of("M00000042"), "M00000042");
    }
}
