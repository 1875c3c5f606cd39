//! Wire types: what goes over the bus, kept apart from the domain types.
//!
//! Domain types (`InstallOptions`, `SlotStatus`, `Manifest`) stay free of D-Bus;
//! this module turns `a{sv}` arguments into them (rejecting unknown keys by
//! name) and turns them into RAUC's dictionaries.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

use super::engine::BundleInfo;
use super::error::Error;
use crate::boot::BootState;
use crate::bundle::{Manifest, SignerInfo};
use crate::install::InstallOptions;
use crate::slot::{Bootname, RawRecord, SlotName, SlotRecord};
use crate::status::SlotStatus;

/// An `a{sv}` dictionary as received or sent.
pub type Dict = HashMap<String, OwnedValue>;

/// `Progress (isi)`: percent, message, nesting depth.
pub type ProgressTuple = (i32, String, i32);

/// The keys `InstallBundle` understands, with their D-Bus types.
pub const INSTALL_KEYS: &[(&str, &str)] = &[
    ("ignore-compatible", "b"),
    ("ignore-version-limit", "b"),
    ("transaction-id", "s"),
    ("require-manifest-hash", "s"),
];

/// Longest string argument accepted (transaction ids, hashes).
const MAX_ARG_STRING: usize = 256;

/// Parses `InstallBundle`'s `a{sv}` arguments.
pub fn install_options(args: &Dict) -> Result<InstallOptions, Error> {
    let mut options = InstallOptions::default();
    let mut keys: Vec<&String> = args.keys().collect();
    keys.sort();
    for key in keys {
        let value = &args[key];
        match key.as_str() {
            "ignore-compatible" => options.ignore_compatible = boolean(key, value)?,
            "ignore-version-limit" => options.ignore_version_limit = boolean(key, value)?,
            "transaction-id" => options.transaction_id = Some(string(key, value)?),
            "require-manifest-hash" => {
                let hash = string(key, value)?;
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::InvalidArgument(format!(
                        "argument \"require-manifest-hash\" must be 64 hex digits (a SHA-256), \
                         got {hash:?}"
                    )));
                }
                options.require_manifest_hash = Some(hash.to_ascii_lowercase());
            }
            other => {
                let known: Vec<String> = INSTALL_KEYS
                    .iter()
                    .map(|(k, t)| format!("{k} ({t})"))
                    .collect();
                return Err(Error::InvalidArgument(format!(
                    "unknown argument {:?}; known arguments: {}",
                    other.chars().take(80).collect::<String>(),
                    known.join(", ")
                )));
            }
        }
    }
    Ok(options)
}

/// Parses the (empty) `a{sv}` arguments of methods that take none yet.
pub fn no_options(method: &str, args: &Dict) -> Result<(), Error> {
    match args.keys().min() {
        None => Ok(()),
        Some(key) => Err(Error::InvalidArgument(format!(
            "{method} takes no arguments yet, got {:?}",
            key.chars().take(80).collect::<String>()
        ))),
    }
}

fn boolean(key: &str, value: &OwnedValue) -> Result<bool, Error> {
    match &**value {
        Value::Bool(b) => Ok(*b),
        other => Err(wrong_type(key, "b (boolean)", other)),
    }
}

fn string(key: &str, value: &OwnedValue) -> Result<String, Error> {
    match &**value {
        Value::Str(s) if s.len() <= MAX_ARG_STRING => Ok(s.to_string()),
        Value::Str(s) => Err(Error::InvalidArgument(format!(
            "argument {key:?} is {} bytes long, the limit is {MAX_ARG_STRING}",
            s.len()
        ))),
        other => Err(wrong_type(key, "s (string)", other)),
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value<'_>) -> Error {
    Error::InvalidArgument(format!(
        "argument {key:?} must be of type {expected}, got type {}",
        got.value_signature()
    ))
}

/// Converts any value into an owned variant.
pub fn owned<'a>(value: impl Into<Value<'a>>) -> Result<OwnedValue, Error> {
    value
        .into()
        .try_to_owned()
        .map_err(|e| Error::Failed(format!("cannot encode a D-Bus value: {e}")))
}

/// Builds a dictionary from (key, value) pairs, leaving out `None`s.
#[derive(Default)]
pub struct DictBuilder(Dict);

impl DictBuilder {
    pub fn put<'a>(mut self, key: &str, value: impl Into<Value<'a>>) -> Result<Self, Error> {
        self.0.insert(key.to_owned(), owned(value)?);
        Ok(self)
    }

    pub fn put_opt<'a, V: Into<Value<'a>>>(
        self,
        key: &str,
        value: Option<V>,
    ) -> Result<Self, Error> {
        match value {
            Some(v) => self.put(key, v),
            None => Ok(self),
        }
    }

    pub fn build(self) -> Dict {
        self.0
    }
}

/// One entry of `GetSlotStatus`: the slot name and RAUC's per-slot keys.
/// `device` and `status` are there for every slot: RAUC's clients print them
/// (`rauc status` shows `(device, type, state)`).
pub fn slot_status(slot: &SlotStatus) -> Result<(String, Dict), Error> {
    let mut d = DictBuilder::default()
        .put("class", slot.class.as_str())?
        .put("type", slot.kind.as_str())?
        .put("state", slot.state.as_str())?
        .put("device", slot.location.as_str())?
        .put("status", slot.install_status.as_str())?
        .put_opt("bootname", slot.bootname.as_ref().map(|b| b.to_string()))?
        .put_opt("parent", slot.parent.as_ref().map(|p| p.to_string()))?
        .put_opt("boot-status", slot.boot_status.map(|s| s.as_str()))?
        .put_opt("attempts-left", slot.attempts_left)?;
    if let Some(r) = &slot.record {
        d = d
            .put("bundle.compatible", r.bundle_compatible.as_str())?
            .put("bundle.version", r.bundle_version.as_str())?
            .put("bundle.description", r.bundle_description.as_str())?
            .put("bundle.build", r.bundle_build.as_str())?
            .put("bundle.hash", r.bundle_hash.as_str())?
            .put("image.digest", r.image.to_string())?
            .put("installed.timestamp", r.installed_timestamp.as_str())?
            .put("installed.count", count(r.installed_count))?
            .put_opt("activated.timestamp", r.activated_timestamp.as_deref())?
            .put("activated.count", count(r.activated_count))?
            .put_opt("bundle.security-version", slot.security_version)?;
    }
    d = d.put_opt("record.error", slot.record_error.as_deref())?;
    if let Some(r) = &slot.raw {
        // RAUC's keys for what a raw slot holds, plus its fs-verity digest.
        d = d
            .put("bundle.version", r.bundle_version.as_str())?
            .put("bundle.hash", r.bundle_hash.as_str())?
            .put("sha256", r.sha256.as_str())?
            .put("size", r.size)?
            .put("image.digest", r.digest.to_string())?
            .put("installed.timestamp", r.installed_timestamp.as_str())?
            .put("installed.count", count(r.installed_count))?;
    }
    Ok((slot.name.to_string(), d.build()))
}

/// The reverse of [`slot_status`], for the CLI: rebuilds a slot's status from
/// a `GetSlotStatus` entry, so `didymos status` prints the same through the
/// service as in-process.
pub fn slot_status_from_wire(name: &str, d: &Dict) -> Result<SlotStatus, String> {
    let bad = |key: &str, what: &str| format!("slot {name}: key {key:?} {what}");
    let text = |key: &str| -> Result<Option<String>, String> {
        match d.get(key).map(|v| &**v) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.to_string())),
            Some(_) => Err(bad(key, "is not a string")),
        }
    };
    let number = |key: &str| -> Result<Option<u32>, String> {
        match d.get(key).map(|v| &**v) {
            None => Ok(None),
            Some(Value::U32(n)) => Ok(Some(*n)),
            Some(_) => Err(bad(key, "is not a u32")),
        }
    };
    let required = |key: &str| text(key)?.ok_or_else(|| bad(key, "is missing"));
    let slot = SlotName::parse(name).map_err(|e| e.to_string())?;
    let kind = required("type")?;
    let parent = text("parent")?
        .map(|p| SlotName::parse(&p))
        .transpose()
        .map_err(|e| e.to_string())?;
    let digest = |key: &str| {
        required(key)?
            .parse()
            .map_err(|e| bad(key, &format!("is not a digest: {e}")))
    };
    if kind == "raw" {
        let raw = match (text("sha256")?, &parent) {
            (Some(sha256), Some(parent)) => Some(RawRecord {
                slot: slot.clone(),
                parent: parent.clone(),
                digest: digest("image.digest")?,
                sha256,
                size: match d.get("size").map(|v| &**v) {
                    Some(Value::U64(n)) => *n,
                    _ => return Err(bad("size", "is not a u64")),
                },
                bundle_version: required("bundle.version")?,
                bundle_hash: required("bundle.hash")?,
                installed_timestamp: required("installed.timestamp")?,
                installed_count: number("installed.count")?.unwrap_or(0).into(),
            }),
            _ => None,
        };
        let location = text("device")?.unwrap_or_default();
        return Ok(SlotStatus {
            name: slot,
            class: required("class")?,
            kind,
            bootname: None,
            device: Some(location.clone()).filter(|d| !d.is_empty()),
            parent,
            state: required("state")?,
            boot_status: None,
            attempts_left: None,
            record: None,
            record_error: None,
            security_version: None,
            raw,
            location,
            install_status: text("status")?.unwrap_or_default(),
        });
    }
    let bootname = text("bootname")?
        .map(|b| Bootname::new(&b))
        .transpose()
        .map_err(|e| e.to_string())?;
    let boot_status = match text("boot-status")?.as_deref() {
        None => None,
        Some("good") => Some(BootState::Good),
        Some("bad") => Some(BootState::Bad),
        Some(other) => return Err(bad("boot-status", &format!("is {other:?}"))),
    };
    let record = match text("bundle.version")? {
        None => None,
        Some(bundle_version) => Some(SlotRecord {
            slot: slot.clone(),
            bootname: bootname.clone(),
            image: digest("image.digest")?,
            bundle_compatible: required("bundle.compatible")?,
            bundle_version,
            bundle_description: text("bundle.description")?.unwrap_or_default(),
            bundle_build: text("bundle.build")?.unwrap_or_default(),
            bundle_hash: required("bundle.hash")?,
            installed_timestamp: required("installed.timestamp")?,
            installed_count: number("installed.count")?.unwrap_or(0).into(),
            activated_timestamp: text("activated.timestamp")?,
            activated_count: number("activated.count")?.unwrap_or(0).into(),
        }),
    };
    Ok(SlotStatus {
        name: slot,
        class: required("class")?,
        kind,
        bootname,
        // A composefs slot's `device` is its place in the store, not a
        // configured device (which only raw slots have).
        device: None,
        parent,
        state: required("state")?,
        boot_status,
        attempts_left: number("attempts-left")?,
        security_version: match d.get("bundle.security-version").map(|v| &**v) {
            None => None,
            Some(Value::U64(n)) => Some(*n),
            Some(_) => return Err(bad("bundle.security-version", "is not a u64")),
        },
        record,
        record_error: text("record.error")?,
        raw: None,
        location: text("device")?.unwrap_or_default(),
        install_status: text("status")?.unwrap_or_default(),
    })
}

/// `InspectBundle`'s answer: RAUC's `manifest-hash` and `update` keys, plus
/// what a composefs bundle adds (image, objects, signer).
pub fn bundle_info(info: &BundleInfo) -> Result<Dict, Error> {
    let m = &info.manifest;
    let update = DictBuilder::default()
        .put("compatible", m.compatible.as_str())?
        .put("version", m.version.as_str())?
        .put("description", m.description.as_str())?
        .put("build", m.build.as_str())?
        .build();
    let image = DictBuilder::default()
        .put("digest", m.image.digest.to_string())?
        .put("size", m.image.size)?
        .build();
    let objects = DictBuilder::default()
        .put("count", m.objects.count)?
        .put("size", m.objects.size)?
        .put("stored-size", m.objects.stored_size)?
        .put("referenced", m.objects.referenced)?
        .build();
    let signer = DictBuilder::default()
        .put("subject", info.signer.subject.as_str())?
        .put("common-name", info.signer.common_name.as_str())?
        .put("chain", info.signer.chain.clone())?
        .build();
    let bases: Vec<String> = m.bases.iter().map(|b| b.image.to_string()).collect();
    Ok(DictBuilder::default()
        .put_opt("download-size", info.for_device.map(|d| d.download))?
        .put_opt("write-size", info.for_device.map(|d| d.write))?
        .put_opt("write-objects", info.for_device.map(|d| d.objects))?
        .put("manifest-hash", info.manifest_hash.as_str())?
        .put("manifest", info.manifest_text.as_str())?
        .put("size", info.size)?
        .put("format", m.format)?
        .put("security-version", m.security_version)?
        .put("created", m.created.as_str())?
        .put("update", update)?
        .put("image", image)?
        .put("objects", objects)?
        .put("signer", signer)?
        .put("bases", bases)?
        .build())
}

/// The reverse of [`bundle_info`], for the CLI: the manifest is parsed from
/// the signed text the service sent, so `didymos info` prints the same
/// through the service as in-process.
pub fn bundle_info_from_wire(d: &Dict) -> Result<BundleInfo, String> {
    let get = |d: &Dict, key: &str| -> Result<Value<'static>, String> {
        d.get(key)
            .ok_or_else(|| format!("InspectBundle reply: key {key:?} is missing"))?
            .try_clone()
            .map(Value::from)
            .map_err(|e| format!("InspectBundle reply: key {key:?}: {e}"))
    };
    let text = |d: &Dict, key: &str| -> Result<String, String> {
        String::try_from(get(d, key)?)
            .map_err(|_| format!("InspectBundle reply: key {key:?} is not a string"))
    };
    let manifest_text = text(d, "manifest")?;
    let manifest = Manifest::parse(manifest_text.as_bytes())
        .map_err(|e| format!("InspectBundle reply: {e}"))?;
    let size = u64::try_from(get(d, "size")?)
        .map_err(|_| "InspectBundle reply: key \"size\" is not a u64".to_owned())?;
    let signer = Dict::try_from(get(d, "signer")?)
        .map_err(|_| "InspectBundle reply: key \"signer\" is not a dictionary".to_owned())?;
    let chain = <Vec<String>>::try_from(get(&signer, "chain")?)
        .map_err(|_| "InspectBundle reply: key \"chain\" is not a string array".to_owned())?;
    let number = |key: &str| -> Result<Option<u64>, String> {
        match d.get(key) {
            None => Ok(None),
            Some(_) => u64::try_from(get(d, key)?)
                .map(Some)
                .map_err(|_| format!("InspectBundle reply: key {key:?} is not a u64")),
        }
    };
    let for_device = match (
        number("download-size")?,
        number("write-size")?,
        number("write-objects")?,
    ) {
        (Some(download), Some(write), Some(objects)) => Some(crate::install::DeviceSize {
            download,
            write,
            objects,
        }),
        _ => None,
    };
    Ok(BundleInfo {
        for_device,
        manifest,
        manifest_text,
        manifest_hash: text(d, "manifest-hash")?,
        signer: SignerInfo {
            subject: text(&signer, "subject")?,
            common_name: text(&signer, "common-name")?,
            chain,
        },
        size,
    })
}

/// RAUC's counters are `u` (32 bit); saturate rather than wrap.
fn count(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: &[(&str, Value<'static>)]) -> Dict {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect()
    }

    #[test]
    fn install_arguments() {
        let hash = "ab".repeat(32);
        let o = install_options(&dict(&[
            ("ignore-compatible", Value::Bool(true)),
            ("transaction-id", Value::from("t-1")),
            ("require-manifest-hash", Value::from(hash.to_uppercase())),
        ]))
        .unwrap();
        assert!(o.ignore_compatible);
        assert!(!o.ignore_version_limit);
        assert_eq!(o.transaction_id.as_deref(), Some("t-1"));
        assert_eq!(o.require_manifest_hash.as_deref(), Some(hash.as_str()));
        assert!(install_options(&Dict::new()).is_ok());
    }

    #[test]
    fn install_argument_errors_name_the_problem() {
        let cases: &[(&str, Value<'static>, &str)] = &[
            (
                "ignore-compatibel",
                Value::Bool(true),
                "unknown argument \"ignore-compatibel\"",
            ),
            (
                "ignore-compatible",
                Value::from("yes"),
                "must be of type b (boolean), got type s",
            ),
            (
                "transaction-id",
                Value::U32(7),
                "must be of type s (string), got type u",
            ),
            (
                "require-manifest-hash",
                Value::from("abc"),
                "must be 64 hex digits",
            ),
        ];
        for (key, value, expected) in cases {
            let err = install_options(&dict(&[(key, value.clone())])).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert!(err.message().contains(expected), "{key}: {err}");
        }
    }

    #[test]
    fn empty_options() {
        assert!(no_options("InspectBundle", &Dict::new()).is_ok());
        let err = no_options("InspectBundle", &dict(&[("x", Value::Bool(true))])).unwrap_err();
        assert!(err.message().contains("\"x\""), "{err}");
    }

    #[test]
    fn slot_status_round_trip() {
        let name = SlotName::parse("rootfs.1").unwrap();
        let record = SlotRecord {
            slot: name.clone(),
            bootname: Some(Bootname::new("B").unwrap()),
            image: "11".repeat(32).parse().unwrap(),
            bundle_compatible: "c".into(),
            bundle_version: "2.0".into(),
            bundle_description: "d".into(),
            bundle_build: "b".into(),
            bundle_hash: "ab".repeat(32),
            installed_timestamp: "2025-01-01T00:00:00Z".into(),
            installed_count: 2,
            activated_timestamp: Some("2025-01-01T00:00:01Z".into()),
            activated_count: 1,
        };
        let cases = [
            SlotStatus {
                name: name.clone(),
                class: "rootfs".into(),
                kind: "composefs".into(),
                bootname: Some(Bootname::new("B").unwrap()),
                device: None,
                parent: None,
                state: "active".into(),
                boot_status: Some(BootState::Good),
                attempts_left: Some(3),
                record: Some(record),
                record_error: None,
                security_version: Some(3),
                raw: None,
                location: "/store/slots/rootfs.1".into(),
                install_status: "ok".into(),
            },
            SlotStatus {
                name: SlotName::parse("bootloader.0").unwrap(),
                class: "bootloader".into(),
                kind: "raw".into(),
                bootname: None,
                device: Some("/dev/mmcblk0boot0".into()),
                parent: Some(name.clone()),
                state: "inactive".into(),
                boot_status: None,
                attempts_left: None,
                record: None,
                record_error: None,
                security_version: None,
                raw: None,
                location: "/dev/mmcblk0boot0".into(),
                install_status: "empty".into(),
            },
            SlotStatus {
                name: SlotName::parse("bootloader.1").unwrap(),
                class: "bootloader".into(),
                kind: "raw".into(),
                bootname: None,
                device: Some("/dev/mmcblk0boot1".into()),
                parent: Some(name),
                state: "inactive".into(),
                boot_status: None,
                attempts_left: None,
                record: None,
                record_error: None,
                security_version: None,
                raw: Some(RawRecord {
                    slot: SlotName::parse("bootloader.1").unwrap(),
                    parent: SlotName::parse("rootfs.1").unwrap(),
                    digest: "33".repeat(32).parse().unwrap(),
                    sha256: "44".repeat(32),
                    size: 5 << 32,
                    bundle_version: "2.0".into(),
                    bundle_hash: "ab".repeat(32),
                    installed_timestamp: "2025-01-01T00:00:00Z".into(),
                    installed_count: 3,
                }),
                location: "/dev/mmcblk0boot1".into(),
                install_status: "ok".into(),
            },
        ];
        for slot in cases {
            let (wire_name, dict) = slot_status(&slot).unwrap();
            let back = slot_status_from_wire(&wire_name, &dict).unwrap();
            assert_eq!(format!("{slot:?}"), format!("{back:?}"));
        }
        let (n, mut d) = slot_status(&cases_first()).unwrap();
        d.insert("boot-status".into(), owned("maybe").unwrap());
        assert!(
            slot_status_from_wire(&n, &d)
                .unwrap_err()
                .contains("boot-status")
        );
    }

    fn cases_first() -> SlotStatus {
        SlotStatus {
            name: SlotName::parse("rootfs.0").unwrap(),
            class: "rootfs".into(),
            kind: "composefs".into(),
            bootname: None,
            device: None,
            parent: None,
            state: "booted".into(),
            boot_status: None,
            attempts_left: None,
            record: None,
            record_error: Some("damaged".into()),
            security_version: None,
            raw: None,
            location: "/store/slots/rootfs.0".into(),
            install_status: "update".into(),
        }
    }

    /// RAUC's clients print `device` and `status` for every slot.
    #[test]
    fn every_slot_has_device_and_status() {
        let (_, d) = slot_status(&cases_first()).unwrap();
        let text = |k: &str| String::try_from(d[k].try_clone().unwrap()).unwrap();
        assert_eq!(text("device"), "/store/slots/rootfs.0");
        assert_eq!(text("status"), "update");
    }

    #[test]
    fn bundle_info_round_trip() {
        use crate::bundle::{ManifestBase, ManifestImage, ManifestObjects};
        let manifest = Manifest {
            format: crate::bundle::manifest::MANIFEST_FORMAT,
            compatible: "c".into(),
            version: "2.0".into(),
            description: "d".into(),
            build: String::new(),
            created: "2025-01-01T00:00:00Z".into(),
            security_version: 0,
            image: ManifestImage {
                digest: "11".repeat(32).parse().unwrap(),
                size: 4096,
            },
            objects: ManifestObjects {
                count: 1,
                size: 10,
                stored_size: 9,
                referenced: 3,
                index_sha256: "22".repeat(32),
            },
            bases: vec![ManifestBase {
                image: "33".repeat(32).parse().unwrap(),
                version: "1.0".into(),
            }],
            raw: Vec::new(),
        };
        let info = BundleInfo {
            manifest_text: manifest.to_toml(),
            manifest,
            manifest_hash: "44".repeat(32),
            signer: SignerInfo {
                subject: "CN=s".into(),
                common_name: "s".into(),
                chain: vec!["CN=s".into(), "CN=ca".into()],
            },
            size: 12345,
            for_device: Some(crate::install::DeviceSize {
                download: 900,
                write: 4000,
                objects: 2,
            }),
        };
        let back = bundle_info_from_wire(&bundle_info(&info).unwrap()).unwrap();
        assert_eq!(format!("{info:?}"), format!("{back:?}"));
        let mut d = bundle_info(&info).unwrap();
        d.remove("manifest");
        assert!(
            bundle_info_from_wire(&d)
                .unwrap_err()
                .contains("\"manifest\"")
        );
    }

    #[test]
    fn counts_saturate() {
        assert_eq!(count(3), 3);
        assert_eq!(count(u64::MAX), u32::MAX);
    }
}
