//! The kernel command line, as setup-root reads it.
//!
//! Keys:
//!
//! - `didymos.slot=<bootname>` (also `rauc.slot=`): the slot the bootloader chose;
//! - `didymos.digest=<64 hex>`: sealed mode, the image this boot must use;
//! - `didymos.store=<device>` or else `root=<device>`: the store partition
//!   (`/dev/…`, `UUID=…`, `LABEL=…`, `PARTUUID=…`, `PARTLABEL=…`);
//! - `rootfstype=`, `rootflags=`: the store's filesystem type and mount options;
//! - `init=`: the program executed in the new root (plain `/init` mode).
//!
//! Words are split by [`crate::cmdline::parse`] (double quotes group, the
//! first `=` splits key from value); the last of a repeated key wins.

use crate::Digest;
use crate::slot::Bootname;

/// Largest command line accepted (the kernel's own limit is lower on every
/// architecture).
pub const MAX_CMDLINE: usize = 64 * 1024;

/// What setup-root takes from the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootArgs {
    pub slot: Option<Bootname>,
    pub sealed_digest: Option<Digest>,
    pub store_device: Option<String>,
    pub store_fstype: Option<String>,
    pub store_flags: Option<String>,
    pub init: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line is {0} bytes, more than the {MAX_CMDLINE}-byte limit")]
    TooLong(usize),
    #[error("kernel command line: {key}={value:?}: {reason}")]
    BadValue {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "kernel command line has no didymos.slot=<bootname> (nor rauc.slot=); \
         the bootloader must pass the slot it chose"
    )]
    NoSlot,
    #[error(
        "kernel command line names no store partition: add root=/dev/… or \
         didymos.store=/dev/… (UUID=, LABEL=, PARTUUID=, PARTLABEL= also work)"
    )]
    NoStore,
}

impl BootArgs {
    /// Parses the keys setup-root cares about; others are ignored.
    pub fn parse(cmdline: &str) -> Result<Self, CmdlineError> {
        let mut args = BootArgs::default();
        let mut didymos_slot = None;
        let mut rauc_slot = None;
        let mut root = None;
        if cmdline.len() > MAX_CMDLINE {
            return Err(CmdlineError::TooLong(cmdline.len()));
        }
        for (key, value) in crate::cmdline::parse(cmdline) {
            let value = value.as_str();
            match key.as_str() {
                "didymos.slot" => didymos_slot = Some(parse_bootname("didymos.slot", value)?),
                "rauc.slot" => rauc_slot = Some(parse_bootname("rauc.slot", value)?),
                "didymos.digest" => {
                    let d = Digest::from_hex(value).map_err(|e| CmdlineError::BadValue {
                        key: "didymos.digest",
                        value: value.chars().take(80).collect(),
                        reason: e.to_string(),
                    })?;
                    args.sealed_digest = Some(d);
                }
                "didymos.store" => args.store_device = Some(non_empty("didymos.store", value)?),
                "root" => root = Some(non_empty("root", value)?),
                "rootfstype" => args.store_fstype = Some(non_empty("rootfstype", value)?),
                "rootflags" => args.store_flags = Some(value.to_owned()),
                "init" => args.init = Some(non_empty("init", value)?),
                _ => {}
            }
        }
        // didymos.slot wins over rauc.slot, didymos.store over root.
        args.slot = didymos_slot.or(rauc_slot);
        args.store_device = args.store_device.or(root);
        Ok(args)
    }

    pub fn require_slot(&self) -> Result<&Bootname, CmdlineError> {
        self.slot.as_ref().ok_or(CmdlineError::NoSlot)
    }

    pub fn require_store(&self) -> Result<&str, CmdlineError> {
        self.store_device.as_deref().ok_or(CmdlineError::NoStore)
    }
}

fn parse_bootname(key: &'static str, value: &str) -> Result<Bootname, CmdlineError> {
    Bootname::new(value).map_err(|e| CmdlineError::BadValue {
        key,
        value: value.chars().take(80).collect(),
        reason: e.to_string(),
    })
}

fn non_empty(key: &'static str, value: &str) -> Result<String, CmdlineError> {
    if value.is_empty() {
        return Err(CmdlineError::BadValue {
            key,
            value: String::new(),
            reason: "empty value".into(),
        });
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let digest = "ab".repeat(32);
        let b = |s: &str| Some(Bootname::new(s).unwrap());
        let table: Vec<(String, BootArgs)> = vec![
            (
                "BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet didymos.slot=A".into(),
                BootArgs {
                    slot: b("A"),
                    store_device: Some("/dev/vda".into()),
                    ..Default::default()
                },
            ),
            (
                "rauc.slot=B root=UUID=1234 rootfstype=ext4 rootflags=noatime,discard".into(),
                BootArgs {
                    slot: b("B"),
                    store_device: Some("UUID=1234".into()),
                    store_fstype: Some("ext4".into()),
                    store_flags: Some("noatime,discard".into()),
                    ..Default::default()
                },
            ),
            (
                "rauc.slot=B didymos.slot=A".into(),
                BootArgs {
                    slot: b("A"),
                    ..Default::default()
                },
            ),
            (
                "didymos.slot=A didymos.slot=B".into(),
                BootArgs {
                    slot: b("B"),
                    ..Default::default()
                },
            ),
            (
                format!(
                    "didymos.slot=A didymos.digest={digest} root=/dev/sda2 didymos.store=LABEL=store"
                ),
                BootArgs {
                    slot: b("A"),
                    sealed_digest: Some(Digest::from_hex(&digest).unwrap()),
                    store_device: Some("LABEL=store".into()),
                    ..Default::default()
                },
            ),
            (
                "init=/sbin/myinit didymos.slot=A rootfstype=\"btrfs\"".into(),
                BootArgs {
                    slot: b("A"),
                    init: Some("/sbin/myinit".into()),
                    store_fstype: Some("btrfs".into()),
                    ..Default::default()
                },
            ),
            ("didymos rauc slot=A".into(), BootArgs::default()),
        ];
        for (input, expected) in table {
            assert_eq!(BootArgs::parse(&input).unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        for (input, key) in [
            ("didymos.slot=", "didymos.slot"),
            ("didymos.slot=A;B", "didymos.slot"),
            ("rauc.slot=x=y", "rauc.slot"),
            ("didymos.digest=abc", "didymos.digest"),
            ("root=", "root"),
            ("didymos.store=", "didymos.store"),
        ] {
            match BootArgs::parse(input) {
                Err(CmdlineError::BadValue { key: k, .. }) => assert_eq!(k, key, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
        let none = BootArgs::parse("quiet").unwrap();
        assert_eq!(none.require_slot(), Err(CmdlineError::NoSlot));
        assert_eq!(none.require_store(), Err(CmdlineError::NoStore));
        assert!(matches!(
            BootArgs::parse(&"x".repeat(MAX_CMDLINE + 1)),
            Err(CmdlineError::TooLong(_))
        ));
    }
}
