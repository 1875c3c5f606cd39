//! Raw slot payloads: a bundle's raw image written whole, at offset 0, to
//! the device of each `raw` child slot of the target slot.
//!
//! Planned (and refused) before anything is written; written after the
//! target is marked bad: the image is decoded from the bundle into `tmp/` of
//! the store while its fs-verity digest is checked, only then copied to the
//! device, synced, read back and compared.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::InstallError;
use crate::Digest;
use crate::bundle::{IndexEntry, ManifestRaw, VerifiedBundle};
use crate::config::{SlotConfig, SlotKind, SystemConfig};
use crate::image::VerityHasher;
use crate::slot::{RawRecord, SlotName};
use crate::store::{Store, StoreError};

const CHUNK: u64 = 1024 * 1024;

/// One raw image to write to one slot's device.
#[derive(Debug, Clone)]
pub(super) struct RawWrite {
    pub slot: SlotName,
    pub device: PathBuf,
    pub image: ManifestRaw,
    pub entry: IndexEntry,
}

/// The bundle image name a raw slot takes: its `image` key, else its class.
fn payload_name(slot: &SlotConfig) -> &str {
    slot.image.as_deref().unwrap_or(slot.name.class())
}

/// Matches the bundle's raw images to the target's raw child slots and
/// checks each device, writing nothing. A raw image no child slot takes is
/// refused; a raw child slot the bundle has no image for is left untouched.
pub(super) fn plan(
    config: &SystemConfig,
    target: &SlotConfig,
    bundle: &VerifiedBundle,
) -> Result<Vec<RawWrite>, InstallError> {
    let children: Vec<&SlotConfig> = config
        .slots
        .iter()
        .filter(|s| s.kind == SlotKind::Raw && s.parent.as_ref() == Some(&target.name))
        .collect();
    let mut plan = Vec::new();
    for image in &bundle.manifest().raw {
        let err = |message: String| InstallError::Raw {
            class: image.class.clone(),
            message,
        };
        let slots: Vec<&&SlotConfig> = children
            .iter()
            .filter(|s| payload_name(s) == image.class)
            .collect();
        if slots.is_empty() {
            return Err(err(format!(
                "the bundle carries it but {} has no raw child slot for it \
                 (system.conf [slot.{}.N] type = \"raw\", parent = \"{}\"); \
                 nothing was written",
                target.name, image.class, target.name
            )));
        }
        let entry = bundle
            .entry(&image.digest)
            .cloned()
            .ok_or_else(|| err(format!("object {} is not in the bundle", image.digest)))?;
        for slot in slots {
            let device = slot
                .device
                .clone()
                .expect("system.conf requires a device for raw slots");
            let capacity = device_size(&device).map_err(|e| {
                err(format!(
                    "cannot open {} (device of {}): {e}; nothing was written",
                    device.display(),
                    slot.name
                ))
            })?;
            if image.size > capacity {
                return Err(err(format!(
                    "the image is {} bytes but {} (device of {}) holds {capacity}; \
                     nothing was written",
                    image.size,
                    device.display(),
                    slot.name
                )));
            }
            plan.push(RawWrite {
                slot: slot.name.clone(),
                device,
                image: image.clone(),
                entry: entry.clone(),
            });
        }
    }
    for slot in &children {
        if bundle.manifest().raw_image(payload_name(slot)).is_none() {
            log::info!(
                "{}: the bundle has no raw image {:?}; the slot is left as it is",
                slot.name,
                payload_name(slot)
            );
        }
    }
    Ok(plan)
}

/// The size of a block device or of a (pre-sized) regular file.
fn device_size(path: &std::path::Path) -> std::io::Result<u64> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::End(0))
}

/// Writes one planned image: bundle → `tmp/` (digest checked) → device
/// (synced) → read back and compared → raw record. `progress(done)` is
/// called with the bytes written to the device so far.
#[allow(clippy::too_many_arguments)]
pub(super) fn write(
    store: &Store,
    bundle: &VerifiedBundle,
    w: &RawWrite,
    parent: &SlotName,
    started: &str,
    store_root: &std::path::Path,
    progress: &mut dyn FnMut(u64),
    failpoint: &dyn Fn(&str),
) -> Result<(), InstallError> {
    let err = |message: String| InstallError::Raw {
        class: w.image.class.clone(),
        message,
    };
    let dev = w.device.display();
    let previous = RawRecord::load(store_root, &w.slot).ok();
    RawRecord::remove(store_root, &w.slot)
        .map_err(|e| InstallError::Store(StoreError::Source(e.to_string())))?;

    // No byte reaches the device before the whole image was checked.
    let mut tmp = store.temp_file()?;
    {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        bundle.copy_object(&w.entry, &mut out)?;
        out.flush().map_err(|e| {
            err(format!(
                "cannot write a temporary copy in {}: {e}",
                store.root().display()
            ))
        })?;
    }
    let src = tmp.as_file_mut();
    src.seek(SeekFrom::Start(0))
        .map_err(|e| err(format!("cannot read the temporary copy: {e}")))?;

    let mut device = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&w.device)
        .map_err(|e| err(format!("cannot open {dev} for writing: {e}")))?;
    let size = w.image.size;
    let chunk = CHUNK.min(size.div_ceil(2).max(1));
    let mut buf = vec![0u8; chunk as usize];
    let mut done = 0u64;
    let mut halfway = false;
    while done < size {
        let n = (size - done).min(chunk) as usize;
        src.read_exact(&mut buf[..n])
            .map_err(|e| err(format!("cannot read the temporary copy: {e}")))?;
        device
            .write_all(&buf[..n])
            .map_err(|e| err(format!("cannot write {dev} at byte {done}: {e}")))?;
        done += n as u64;
        progress(done);
        if !halfway && done * 2 >= size {
            halfway = true;
            failpoint("raw-half-written");
        }
    }
    device
        .sync_all()
        .map_err(|e| err(format!("cannot sync {dev}: {e}")))?;
    failpoint("raw-written");

    let actual =
        read_back(&mut device, size).map_err(|e| err(format!("cannot read {dev} back: {e}")))?;
    if actual != w.image.digest {
        return Err(err(format!(
            "{dev} reads back as {actual} instead of {}; the device may be failing \
             (the slot was not activated)",
            w.image.digest
        )));
    }
    RawRecord {
        slot: w.slot.clone(),
        parent: parent.clone(),
        digest: w.image.digest,
        sha256: w.image.sha256.clone(),
        size,
        bundle_version: bundle.manifest().version.clone(),
        bundle_hash: bundle.manifest_hash(),
        installed_timestamp: started.to_owned(),
        installed_count: previous.map_or(0, |p| p.installed_count) + 1,
    }
    .save(store_root)
    .map_err(|e| InstallError::Store(StoreError::Source(e.to_string())))?;
    Ok(())
}

/// The fs-verity digest of the first `size` bytes of `device`.
fn read_back(device: &mut File, size: u64) -> std::io::Result<Digest> {
    // Drop the cached pages (written back by the sync) so the bytes come from
    // the device, where it honours the advice; a failure only weakens the check.
    if let Err(e) = rustix::fs::fadvise(
        &*device,
        0,
        std::num::NonZeroU64::new(size),
        rustix::fs::Advice::DontNeed,
    ) {
        log::debug!("cannot drop cached pages before reading back: {e}");
    }
    device.seek(SeekFrom::Start(0))?;
    let mut hasher = VerityHasher::new();
    let mut buf = vec![0u8; CHUNK.min(size.max(1)) as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        device.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finish())
}
