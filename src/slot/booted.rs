//! Which slot is running: `didymos.slot=<bootname>` on the kernel command
//! line (`rauc.slot=` too, for devices migrating from RAUC).

use crate::config::SystemConfig;
use crate::slot::{Bootname, SlotName};

/// How the system was booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booted {
    /// Through a configured slot.
    Slot { bootname: Bootname, slot: SlotName },
    /// The command line names a bootname no slot has.
    Unknown(String),
    /// No slot on the command line (e.g. a factory or recovery system).
    None,
}

impl Booted {
    pub fn slot(&self) -> Option<&SlotName> {
        match self {
            Booted::Slot { slot, .. } => Some(slot),
            _ => None,
        }
    }
    pub fn bootname(&self) -> Option<&Bootname> {
        match self {
            Booted::Slot { bootname, .. } => Some(bootname),
            _ => None,
        }
    }
}

/// Reads the bootname from command-line text.
pub fn bootname_from_cmdline(cmdline: &str) -> Option<String> {
    let params = crate::cmdline::parse(cmdline);
    crate::cmdline::get(&params, "didymos.slot")
        .or_else(|| crate::cmdline::get(&params, "rauc.slot"))
        .map(str::to_owned)
}

/// Resolves a command line against the configured slots.
pub fn resolve(config: &SystemConfig, cmdline: &str) -> Booted {
    let Some(name) = bootname_from_cmdline(cmdline) else {
        return Booted::None;
    };
    match Bootname::new(&name)
        .ok()
        .and_then(|b| config.slot_by_bootname(&b).map(|s| (b, s)))
    {
        Some((bootname, slot)) => Booted::Slot {
            bootname,
            slot: slot.name.clone(),
        },
        None => Booted::Unknown(name),
    }
}

/// Reads `[system] kernel-cmdline` (normally /proc/cmdline) and resolves it.
/// An unreadable command line counts as "not booted through a slot".
pub fn detect(config: &SystemConfig) -> Booted {
    match crate::util::read_bounded_to_string(&config.system.kernel_cmdline, 64 * 1024) {
        Ok(text) => resolve(config, &text),
        Err(e) => {
            log::warn!(
                "cannot read {}: {e}; assuming no slot was booted",
                config.system.kernel_cmdline.display()
            );
            Booted::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> SystemConfig {
        SystemConfig::parse(
            crate::config::tests::MINIMAL,
            Path::new("/etc/didymos/system.conf"),
        )
        .unwrap()
    }

    #[test]
    fn table() {
        let c = config();
        let slot = |b: &str, s: &str| Booted::Slot {
            bootname: Bootname::new(b).unwrap(),
            slot: SlotName::parse(s).unwrap(),
        };
        let cases = [
            ("root=/dev/vda didymos.slot=B", slot("B", "rootfs.1")),
            ("rauc.slot=A", slot("A", "rootfs.0")),
            ("rauc.slot=A didymos.slot=B", slot("B", "rootfs.1")),
            ("didymos.slot=C", Booted::Unknown("C".into())),
            ("quiet", Booted::None),
        ];
        for (line, want) in cases {
            assert_eq!(resolve(&c, line), want, "{line}");
        }
    }
}
