//! Content digests: `sha256:HEX`, the only algorithm OCI images use in
//! practice. A [`Digest`] is the 32 raw bytes; it prints and parses in the
//! OCI form, and names what the store keeps (`blobs/sha256/HEX`).

use std::fmt;
use std::io;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:HEX` (64 lowercase or uppercase hex digits).
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| BadDigest(s.to_owned()))?;
        Digest::from_hex(hex).ok_or_else(|| BadDigest(s.to_owned()))
    }

    /// Parses 64 hex digits without the algorithm.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        if hex.len() != 64 {
            return None;
        }
        let mut d = [0u8; 32];
        hex::decode_to_slice(hex, &mut d).ok()?;
        Some(Digest(d))
    }

    /// A short form for messages: the first 12 hex digits.
    pub fn short(&self) -> String {
        self.hex()[..12].to_owned()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.short())
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Digest, BadDigest> {
        Digest::parse(s)
    }
}

/// A string that is not a `sha256:` digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDigest(pub String);

impl fmt::Display for BadDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a digest rcfs can check (it takes sha256:<64 hex digits>)",
            self.0
        )
    }
}

impl std::error::Error for BadDigest {}

impl From<BadDigest> for io::Error {
    fn from(e: BadDigest) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A sha256 computed as bytes go by.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(sha256)")
    }
}

impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_refuses() {
        let d = Digest::of(b"");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&s).unwrap(), d);
        assert_eq!(
            Digest::parse(&s.to_uppercase().replace("SHA256", "sha256")).unwrap(),
            d
        );
        for bad in [
            "",
            "sha256:",
            "sha512:00",
            "sha256:xyz",
            &s[..70],
            "e3b0c442",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let mut h = Hasher::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), Digest::of(b"abc"));
    }
}
