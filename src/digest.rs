//! The fs-verity SHA-256 digest that names every object and image.

use std::fmt;
use std::path::PathBuf;

/// An fs-verity digest (SHA-256, 4096-byte blocks, no salt).
///
/// Objects in the store live at `objects/xx/<62 hex>`, exactly as
/// `mkcomposefs --digest-store` lays them out.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

/// A string that is not 64 hexadecimal digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {input:?}: expected 64 hexadecimal digits")]
pub struct DigestParseError {
    pub input: String,
}

impl Digest {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, DigestParseError> {
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(DigestParseError {
                input: s.chars().take(80).collect(),
            });
        }
        Ok(Self(out))
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The path of this object relative to a store root: `objects/xx/<62 hex>`.
    pub fn to_object_path(&self) -> PathBuf {
        let hex = self.to_hex();
        PathBuf::from(format!("objects/{}/{}", &hex[..2], &hex[2..]))
    }

    /// The path of this object relative to the `objects/` directory: `xx/<62 hex>`.
    pub fn to_object_subpath(&self) -> String {
        let hex = self.to_hex();
        format!("{}/{}", &hex[..2], &hex[2..])
    }

    /// Parses an object's `xx/<62 hex>` relative path back into a digest.
    pub fn from_object_subpath(dir: &str, name: &str) -> Option<Self> {
        if dir.len() != 2 || name.len() != 62 {
            return None;
        }
        Self::from_hex(&format!("{dir}{name}")).ok()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_object_path() {
        let hex = "ab".repeat(32);
        let d = Digest::from_hex(&hex).unwrap();
        assert_eq!(d.to_hex(), hex);
        assert_eq!(
            d.to_object_path(),
            PathBuf::from(format!("objects/ab/{}", "ab".repeat(31)))
        );
        assert_eq!(Digest::from_object_subpath("ab", &"ab".repeat(31)), Some(d));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert!(Digest::from_hex(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Digest::from_object_subpath("a", &"b".repeat(63)), None);
    }
}
