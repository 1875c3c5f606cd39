//! Names of slots: `rootfs.0` (class and index) and bootnames (`A`, `B`).

use std::fmt;

/// A slot's name, RAUC style: `<class>.<index>`, e.g. `rootfs.1`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotName {
    class: String,
    index: u32,
}

/// A string that is not `<class>.<index>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid slot name {0:?}: expected <class>.<index> such as \"rootfs.0\" \
     (class: letters, digits, '-' or '_'; index: a number)"
)]
pub struct SlotNameError(pub String);

impl SlotName {
    pub fn new(class: &str, index: u32) -> Result<Self, SlotNameError> {
        if !is_identifier(class) {
            return Err(SlotNameError(format!("{class}.{index}")));
        }
        Ok(Self {
            class: class.to_owned(),
            index,
        })
    }

    pub fn parse(s: &str) -> Result<Self, SlotNameError> {
        let err = || SlotNameError(s.chars().take(80).collect());
        let (class, index) = s.rsplit_once('.').ok_or_else(err)?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || index.len() > 9 {
            return Err(err());
        }
        let index = index.parse().map_err(|_| err())?;
        Self::new(class, index).map_err(|_| err())
    }

    pub fn class(&self) -> &str {
        &self.class
    }

    pub fn index(&self) -> u32 {
        self.index
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.class, self.index)
    }
}

impl fmt::Debug for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotName({self})")
    }
}

impl serde::Serialize for SlotName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SlotName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The name the bootloader knows a slot by (`A`, `B`, `system0`…).
///
/// Bootnames appear in bootloader variables (`A_OK`, `BOOT_A_LEFT`) and on the
/// kernel command line (`didymos.slot=A`), so they are restricted to
/// characters that are safe in all of those places.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bootname(String);

/// A string that cannot be a bootname.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid bootname {0:?}: expected 1 to 32 characters from A-Z, a-z, 0-9, '-' and '_'")]
pub struct BootnameError(pub String);

impl Bootname {
    pub fn new(s: &str) -> Result<Self, BootnameError> {
        if s.is_empty() || s.len() > 32 || !is_identifier(s) {
            return Err(BootnameError(s.chars().take(80).collect()));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Bootname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Bootname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bootname({})", self.0)
    }
}

impl serde::Serialize for Bootname {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Bootname {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        let s = SlotName::parse("rootfs.1").unwrap();
        assert_eq!((s.class(), s.index()), ("rootfs", 1));
        assert_eq!(s.to_string(), "rootfs.1");
        assert_eq!(SlotName::parse("my.class.0").ok(), None);
        for bad in [
            "",
            "rootfs",
            "rootfs.",
            ".0",
            "rootfs.x",
            "root fs.0",
            "rootfs.-1",
        ] {
            assert!(SlotName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bootnames() {
        assert_eq!(Bootname::new("A").unwrap().as_str(), "A");
        for bad in ["", "A B", "A=B", "a;b", &"x".repeat(33)] {
            assert!(Bootname::new(bad).is_err(), "{bad:?}");
        }
    }
}
