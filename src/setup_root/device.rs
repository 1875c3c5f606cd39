//! Finding the store partition named on the command line.
//!
//! `/dev/…` paths are used as they are. `UUID=`, `LABEL=`, `PARTUUID=` and
//! `PARTLABEL=` are looked up in `/dev/disk/by-*` (udev's links, present in
//! systemd and dracut initrds); a minimal initramfs without udev finds
//! `UUID=` and `LABEL=` of ext4 partitions by reading their superblocks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a device was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Path(PathBuf),
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
}

impl DeviceSpec {
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, value) = match s.split_once('=') {
            Some((k, v)) if !v.is_empty() => (k, v),
            Some(_) => return None,
            None if s.starts_with('/') => return Some(Self::Path(PathBuf::from(s))),
            None => return None,
        };
        Some(match kind {
            "UUID" => Self::Uuid(value.to_ascii_lowercase()),
            "LABEL" => Self::Label(value.to_owned()),
            "PARTUUID" => Self::PartUuid(value.to_ascii_lowercase()),
            "PARTLABEL" => Self::PartLabel(value.to_owned()),
            _ => return None,
        })
    }

    /// Looks once; `None` if the device is not (yet) there.
    pub fn find(&self) -> Option<PathBuf> {
        let by = |dir: &str, name: &str| {
            let p = Path::new("/dev/disk").join(dir).join(name);
            p.exists().then_some(p)
        };
        match self {
            Self::Path(p) => p.exists().then(|| p.clone()),
            Self::Uuid(u) => by("by-uuid", u).or_else(|| scan_ext4(|sb| sb.uuid == *u)),
            Self::Label(l) => by("by-label", l).or_else(|| scan_ext4(|sb| sb.label == *l)),
            Self::PartUuid(u) => by("by-partuuid", u),
            Self::PartLabel(l) => by("by-partlabel", l),
        }
    }

    /// Looks until the device appears or `timeout` passes (disks may show
    /// up after their driver was loaded).
    pub fn wait(&self, timeout: Duration) -> Option<PathBuf> {
        let start = Instant::now();
        loop {
            if let Some(p) = self.find() {
                return Some(p);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The identity fields of an ext2/3/4 superblock.
#[derive(Debug, PartialEq, Eq)]
pub struct Ext4Identity {
    pub uuid: String,
    pub label: String,
}

/// Parses the 1024-byte superblock found at offset 1024 of an ext4 device.
pub fn parse_ext4_superblock(sb: &[u8]) -> Option<Ext4Identity> {
    if sb.len() < 0x88 || sb[0x38..0x3a] != [0x53, 0xef] {
        return None;
    }
    let u = &sb[0x68..0x78];
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&u[0..4]),
        hex::encode(&u[4..6]),
        hex::encode(&u[6..8]),
        hex::encode(&u[8..10]),
        hex::encode(&u[10..16])
    );
    let raw = &sb[0x78..0x88];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let label = String::from_utf8_lossy(&raw[..end]).into_owned();
    Some(Ext4Identity { uuid, label })
}

fn scan_ext4(matches: impl Fn(&Ext4Identity) -> bool) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/block").ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let dev = Path::new("/dev").join(&name);
        let Ok(mut f) = File::open(&dev) else {
            continue;
        };
        let mut sb = [0u8; 1024];
        if f.seek(SeekFrom::Start(1024)).is_err() || f.read_exact(&mut sb).is_err() {
            continue;
        }
        if parse_ext4_superblock(&sb).is_some_and(|id| matches(&id)) {
            return Some(dev);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let table = [
            ("/dev/vda", Some(DeviceSpec::Path("/dev/vda".into()))),
            ("UUID=ABCD-1", Some(DeviceSpec::Uuid("abcd-1".into()))),
            ("LABEL=store", Some(DeviceSpec::Label("store".into()))),
            ("PARTUUID=0a-01", Some(DeviceSpec::PartUuid("0a-01".into()))),
            ("PARTLABEL=data", Some(DeviceSpec::PartLabel("data".into()))),
            ("UUID=", None),
            ("vda", None),
            ("FOO=bar", None),
        ];
        for (input, expected) in table {
            assert_eq!(DeviceSpec::parse(input), expected, "{input:?}");
        }
    }

    #[test]
    fn ext4_superblock() {
        let mut sb = vec![0u8; 1024];
        assert_eq!(parse_ext4_superblock(&sb), None);
        sb[0x38] = 0x53;
        sb[0x39] = 0xef;
        for (i, b) in (0x68..0x78).zip(0u8..) {
            sb[i] = b;
        }
        sb[0x78..0x7d].copy_from_slice(b"store");
        assert_eq!(
            parse_ext4_superblock(&sb),
            Some(Ext4Identity {
                uuid: "00010203-0405-0607-0809-0a0b0c0d0e0f".into(),
                label: "store".into()
            })
        );
        assert_eq!(parse_ext4_superblock(&sb[..100]), None);
    }
}
