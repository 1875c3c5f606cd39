//! The install steps, in the order that never loses a bootable slot:
//!
//! verify → checks (compatible, version, target slot, delta base, space) →
//! journal → mark the target bad → write missing objects → write the image →
//! check every reference → write raw images to the target's raw child slots →
//! write the slot record → boot files → post-install → mark active (the
//! commit point) → drop the journal → garbage-collect.

use std::collections::BTreeSet;

use super::journal::{self, Journal};
use super::lock::InstallLock;
use super::{BundleSource, CancelToken, InstallError, InstallOptions, InstallOutcome, Progress};
use crate::Digest;
use crate::boot::{self, BootState, Bootloader};
use crate::bundle::{Bundle, VerifiedBundle};
use crate::config::{SlotConfig, SlotKind, SystemConfig};
use crate::keyring::Keyring;
use crate::slot::{Booted, SlotRecord};
use crate::store::{Store, StoreError};

/// Test-only power cuts: with the `failpoints` feature, `DIDYMOS_FAILPOINT=<step>`
/// ends the process at once (no cleanup, like a power cut) after that step.
fn failpoint(step: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("DIDYMOS_FAILPOINT").is_ok_and(|v| v == step) {
        eprintln!("didymos: failpoint {step}: exiting as if the power was cut");
        std::process::exit(86);
    }
    let _ = step;
}

/// Test-only: `DIDYMOS_FAILPOINT=skip-space-check` skips the free-space check,
/// so tests can run into ENOSPC in the middle of writing.
fn skip_space_check() -> bool {
    #[cfg(feature = "failpoints")]
    if std::env::var("DIDYMOS_FAILPOINT").is_ok_and(|v| v == "skip-space-check") {
        return true;
    }
    false
}

/// Test-only: `DIDYMOS_FAILPOINT=slow-objects` pauses 2 ms after each object,
/// so tests can reliably cancel or kill an install in the middle of writing.
fn slow_objects() {
    #[cfg(feature = "failpoints")]
    if std::env::var("DIDYMOS_FAILPOINT").is_ok_and(|v| v == "slow-objects") {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The names of the failpoints, in the order the install passes them. Two
/// more fire only when the bundle carries raw images for the target:
/// `raw-half-written` (half of the first image is on the device) and
/// `raw-written` (an image is on the device and synced), both between
/// `image-written` and `record-written`.
pub const FAILPOINTS: &[&str] = &[
    "verified",
    "journal-written",
    "target-marked-bad",
    "objects-half-written",
    "objects-written",
    "image-written",
    "record-written",
    "boot-files-written",
    "activated",
    "journal-removed",
];

struct Reporter<'a> {
    progress: &'a dyn Fn(Progress),
    cancel: &'a CancelToken,
    last: std::cell::Cell<i32>,
}

impl Reporter<'_> {
    fn step(&self, percent: i32, message: impl Into<String>, depth: i32) {
        let percent = percent.clamp(self.last.get(), 100);
        self.last.set(percent);
        (self.progress)(Progress {
            percent,
            message: message.into(),
            depth,
        });
    }
    fn check_cancel(&self) -> Result<(), InstallError> {
        if self.cancel.is_cancelled() {
            Err(InstallError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The checks that write nothing and read only the bundle's head (header,
/// manifest, signature, object index): the signature against the keyring,
/// `require-manifest-hash`, compatible, the version limit, the security
/// version floor, and that the booted slot stays a fall back. The install runs
/// them first; the service also runs them in the method call, so that a bundle
/// this device would refuse is refused before an install starts. The payload
/// (image and objects) is checked later, as the install reads it.
pub fn check(
    config: &SystemConfig,
    bundle: Bundle,
    options: &InstallOptions,
) -> Result<VerifiedBundle, InstallError> {
    let keyring = Keyring::load(&config.keyring)?;
    let bundle = bundle.verify(&keyring)?;
    let manifest = bundle.manifest();
    if let Some(want) = &options.require_manifest_hash {
        let actual = bundle.manifest_hash();
        if !actual.eq_ignore_ascii_case(want) {
            return Err(InstallError::ManifestHashMismatch {
                expected: want.clone(),
                actual,
            });
        }
    }
    if !options.ignore_compatible && manifest.compatible != config.system.compatible {
        return Err(InstallError::NotCompatible {
            bundle: manifest.compatible.clone(),
            system: config.system.compatible.clone(),
        });
    }
    // Anti-rollback: no override, not even --ignore-version-limit.
    let floor = super::security::load(&config.store.path)?;
    if manifest.security_version < floor.floor {
        return Err(InstallError::SecurityVersionTooOld {
            bundle_version: manifest.version.clone(),
            security_version: manifest.security_version,
            floor: floor.floor,
            raised: super::mark::describe_raise(&floor),
        });
    }
    if let Some(min) = &config.system.min_bundle_version
        && !options.ignore_version_limit
        && super::version::compare(&manifest.version, min) == std::cmp::Ordering::Less
    {
        return Err(InstallError::VersionTooOld {
            bundle: manifest.version.clone(),
            minimum: min.clone(),
        });
    }
    let bootloader = boot::from_config(config)?;
    check_fallback(bootloader.as_ref(), &crate::slot::booted::detect(config))?;
    Ok(bundle)
}

pub fn install(
    config: &SystemConfig,
    source: BundleSource,
    options: &InstallOptions,
    progress: &dyn Fn(Progress),
    cancel: &CancelToken,
) -> Result<InstallOutcome, InstallError> {
    let r = Reporter {
        progress,
        cancel,
        last: std::cell::Cell::new(0),
    };
    r.step(0, "Installing", 1);
    let data_dir = &config.system.data_directory;
    let _lock = InstallLock::acquire(data_dir, "install")?;
    let bootloader = boot::from_config(config)?;
    super::recover_locked(config, bootloader.as_ref())?;

    r.step(5, "Checking bundle signature", 2);
    let bundle = source.open(config)?;
    let bundle = check(config, bundle, options)?;
    r.check_cancel()?;
    failpoint("verified");
    let manifest = bundle.manifest().clone();

    r.step(8, "Determining target slot", 2);
    let booted = crate::slot::booted::detect(config);
    let target = select_target(config, bootloader.as_ref(), &booted)?;
    let bootname = target.bootname.clone();
    log::info!(
        "installing version {} into {}",
        manifest.version,
        target.name
    );

    let store = Store::open(&config.store.path, config.store.verity);
    r.step(10, "Checking the image and what the device already has", 2);
    let image_digest = manifest.image.digest;
    // An image the store has (a bundle installed before, into the other
    // slot) is read from there, checked against the same signed digest, and
    // not fetched again.
    let image = match store.read_image(&image_digest) {
        Ok(bytes) => bytes,
        Err(_) => bundle
            .read_image_with(&store)
            .map_err(|e| image_base_missing(e, &manifest))?,
    };
    let referenced = crate::image::referenced_objects(&image)
        .map_err(|e| InstallError::Store(StoreError::Source(format!("bundle image: {e}"))))?;
    let carried: BTreeSet<Digest> = bundle.index().iter().map(|e| e.digest).collect();
    let present = store.list_objects()?;
    // Objects the store has are reused only when sound (see
    // Store::damaged_objects); a damaged one is written again from the
    // bundle, replacing the bad file, or refused when the bundle lacks it.
    let reused: BTreeSet<Digest> = referenced.intersection(&present).copied().collect();
    let check_started = std::time::Instant::now();
    let damaged = store.damaged_objects(&reused);
    log::info!(
        "checked the {} objects the store already has in {:.2?}",
        reused.len(),
        check_started.elapsed()
    );
    let needed: BTreeSet<Digest> = referenced
        .iter()
        .filter(|d| !present.contains(d) || damaged.contains(d))
        .copied()
        .collect();
    let lacking: Vec<&Digest> = needed.difference(&carried).collect();
    if let Some(bad) = lacking.iter().find(|d| damaged.contains(d)) {
        return Err(InstallError::MissingBaseObjects(format!(
            "object {bad} on this device is damaged (its content does not match its name) and \
             this bundle does not carry it; run `didymos fsck --repair`, then install a full \
             bundle (one without --base) to write it again"
        )));
    }
    if !damaged.is_empty() {
        log::warn!(
            "{} damaged object(s) in the store are written again from the bundle",
            damaged.len()
        );
    }
    if !lacking.is_empty() {
        let base = describe_bases(&manifest);
        return Err(InstallError::MissingBaseObjects(format!(
            "{} object(s) the image needs are neither in the bundle nor on the device \
             (first: {}); {base}; install a full bundle or one built with --base of the \
             installed version",
            lacking.len(),
            lacking[0]
        )));
    }
    let mut to_write: Vec<_> = bundle
        .index()
        .iter()
        .filter(|e| needed.contains(&e.digest))
        .cloned()
        .collect();
    // In the order they lie in the bundle (container version 2 does not keep
    // them in digest order): sequential reads, and over HTTP the order the
    // prefetcher fetches them in; the members of a pack one after another,
    // so that it is decoded once.
    to_write.sort_by_key(crate::bundle::IndexEntry::stored_order);
    check_delta_sources(&store, &present, &to_write)?;
    let raw_plan = super::raw::plan(config, target, &bundle)?;
    let boot_plan = super::boot_files::plan(target, &image)?;
    if !skip_space_check() {
        check_space(
            config,
            &store,
            &to_write,
            image.len() as u64,
            &raw_plan,
            &boot_plan,
        )?;
    }

    let mut handler_env = handler_env(config, target, &bundle);
    if let Some(h) = &config.handlers.system_info {
        handler_env.extend(super::handlers::system_info(h)?);
    }
    if let Some(h) = &config.handlers.pre_install {
        super::handlers::run("pre-install", h, &handler_env)?;
    }
    r.check_cancel()?;

    // From here on the target slot is being changed.
    let store = Store::open_for_writing(&config.store.path, config.store.verity)?;
    store.clean_tmp()?;
    let previous = SlotRecord::load(&config.store.path, &target.name).ok();
    let started = now();
    journal::write(
        data_dir,
        &Journal {
            slot: target.name.clone(),
            image: image_digest,
            bundle_version: manifest.version.clone(),
            bundle_hash: bundle.manifest_hash(),
            started: started.clone(),
        },
    )
    .map_err(|source| InstallError::Io {
        context: format!("cannot write the install journal in {}", data_dir.display()),
        source,
    })?;
    failpoint("journal-written");
    if let Some(b) = &bootname {
        bootloader.set_state(b, BootState::Bad)?;
    }
    SlotRecord::remove(&config.store.path, &target.name)
        .map_err(|e| InstallError::Store(StoreError::Source(e.to_string())))?;
    failpoint("target-marked-bad");

    let result = write_slot(
        &r,
        config,
        &store,
        &bundle,
        target,
        &image,
        &referenced,
        &to_write,
        &raw_plan,
        &boot_plan,
        previous,
        &started,
    )
    .and_then(|written| {
        if let Some(h) = &config.handlers.post_install {
            super::handlers::run("post-install", h, &handler_env)?;
        }
        Ok(written)
    });
    let (bytes_written, objects_written) = match result {
        Ok(v) => v,
        Err(e) => {
            // Seen and reported, so cleaned up now rather than at the next
            // start: the target stays marked bad, without a record.
            let _ = SlotRecord::remove(&config.store.path, &target.name);
            let _ = store.clean_tmp();
            let _ = journal::remove(data_dir);
            return Err(e);
        }
    };
    r.step(95, "Activating the slot", 2);
    if let Some(b) = &bootname {
        bootloader.set_primary(b)?;
    }
    failpoint("activated");
    if let Ok(mut rec) = SlotRecord::load(&config.store.path, &target.name) {
        rec.activated_timestamp = Some(now());
        rec.activated_count += 1;
        if let Err(e) = rec.save_record_only(&config.store.path) {
            log::warn!("cannot record the activation time of {}: {e}", target.name);
        }
    }
    journal::remove(data_dir).map_err(|source| InstallError::Io {
        context: "cannot remove the install journal".into(),
        source,
    })?;
    journal::clear_interrupted(data_dir);
    failpoint("journal-removed");

    r.step(97, "Removing objects no slot needs", 2);
    let (collected, gc_refused) = match super::gc_locked(config, &store) {
        Ok(report) => (report.objects_removed, None),
        Err(e) => {
            log::warn!("garbage collection after the install failed: {e}");
            (0, Some(e.to_string()))
        }
    };
    r.step(100, "Installing done.", 1);
    Ok(InstallOutcome {
        slot: target.name.clone(),
        bootname,
        image: image_digest,
        bundle_version: manifest.version.clone(),
        objects_written,
        bytes_written,
        objects_reused: referenced.len() as u64 - objects_written,
        objects_collected: collected,
        gc_refused,
        raw_written: raw_plan
            .iter()
            .map(|w| (w.slot.clone(), w.image.class.clone()))
            .collect(),
    })
}

#[allow(clippy::too_many_arguments)]
fn write_slot(
    r: &Reporter<'_>,
    config: &SystemConfig,
    store: &Store,
    bundle: &VerifiedBundle,
    target: &SlotConfig,
    image: &[u8],
    referenced: &BTreeSet<Digest>,
    to_write: &[crate::bundle::IndexEntry],
    raw_plan: &[super::raw::RawWrite],
    boot_plan: &super::boot_files::BootFiles,
    previous: Option<SlotRecord>,
    started: &str,
) -> Result<(u64, u64), InstallError> {
    let manifest = bundle.manifest();
    let write_bytes: u64 = to_write.iter().map(|e| e.size).sum();
    let mut done_bytes = 0u64;
    let mut written = 0u64;
    r.step(15, format!("Writing {} objects", to_write.len()), 2);
    let fetch = super::fetch::Fetch::plan(store, bundle, to_write)?;
    if let Some(total) = fetch.total() {
        r.step(
            15,
            format!("Fetching {} of objects this device lacks", human(total)),
            2,
        );
    }
    let mut batch = if fetch.is_remote() {
        // Fetching is what costs: commit often, so a power cut loses little.
        store.batch_committing_every(super::fetch::COMMIT_BYTES)
    } else {
        store.batch()
    };
    let started_at = std::time::Instant::now();
    for (i, entry) in to_write.iter().enumerate() {
        if let Err(e) = r.check_cancel() {
            // What is complete is kept: the next install does not fetch it again.
            let _ = batch.commit();
            return Err(e);
        }
        let mut source_error = None;
        let added = fetch.write_object(r.cancel, entry, &mut batch, &mut |src, at, w| {
            let mut w = DeltaFailpoint::wrap(entry, w);
            bundle
                .copy_object_from(entry, src, at, store, &mut w)
                .map_err(|e| {
                    let message = e.to_string();
                    source_error = Some(e);
                    StoreError::Source(message)
                })
        });
        match added {
            Ok(n) => written += n,
            Err(e) => {
                let _ = batch.commit();
                return Err(match (source_error, e) {
                    (_, e @ InstallError::Store(StoreError::NoSpace { .. })) => e,
                    (Some(b), _) => InstallError::Bundle(b),
                    (None, e) => e,
                });
            }
        }
        done_bytes += entry.size;
        slow_objects();
        let pct = 15 + ((done_bytes as f64 / write_bytes.max(1) as f64) * 70.0) as i32;
        r.step(
            pct.min(85),
            format!(
                "Writing objects ({done_bytes} of {write_bytes} bytes{})",
                fetch.describe_progress(started_at.elapsed())
            ),
            3,
        );
        if i == to_write.len() / 2 {
            failpoint("objects-half-written");
        }
    }
    batch.commit()?;
    fetch.finish()?;
    failpoint("objects-written");

    r.step(86, "Writing the image", 2);
    written += store.insert_image(&manifest.image.digest, image)?;
    failpoint("image-written");

    r.step(88, "Checking every object the image references", 2);
    if let Some(missing) = referenced.iter().find(|d| !store.has_object(d)) {
        return Err(InstallError::Store(StoreError::Source(format!(
            "object {missing} is referenced by the new image but missing from the store; \
             the slot was not activated"
        ))));
    }

    let raw_total: u64 = raw_plan.iter().map(|w| w.image.size).sum();
    let mut raw_done = 0u64;
    for w in raw_plan {
        r.check_cancel()?;
        r.step(
            89,
            format!(
                "Writing raw image {} to {} ({})",
                w.image.class,
                w.slot,
                w.device.display()
            ),
            2,
        );
        super::raw::write(
            store,
            bundle,
            w,
            &target.name,
            started,
            &config.store.path,
            &mut |n| {
                r.step(
                    89,
                    format!("Writing raw images ({} of {raw_total} bytes)", raw_done + n),
                    3,
                )
            },
            &failpoint,
        )?;
        raw_done += w.image.size;
    }

    r.step(90, "Writing the slot record", 2);
    let record = SlotRecord {
        slot: target.name.clone(),
        bootname: target.bootname.clone(),
        image: manifest.image.digest,
        bundle_compatible: manifest.compatible.clone(),
        bundle_version: manifest.version.clone(),
        bundle_description: manifest.description.clone(),
        bundle_build: manifest.build.clone(),
        bundle_hash: bundle.manifest_hash(),
        installed_timestamp: started.to_owned(),
        installed_count: previous.as_ref().map_or(0, |p| p.installed_count) + 1,
        activated_timestamp: None,
        activated_count: previous.as_ref().map_or(0, |p| p.activated_count),
    };
    record
        .save(
            &config.store.path,
            bundle.manifest_bytes(),
            bundle.signature_bytes(),
        )
        .map_err(|e| StoreError::Source(e.to_string()))?;
    failpoint("record-written");

    if !boot_plan.files.is_empty() {
        r.step(92, "Installing boot files", 2);
        super::boot_files::install(store, boot_plan)?;
    }
    failpoint("boot-files-written");
    Ok((written, to_write.len() as u64))
}

/// Refuses, before anything is written, a bundle whose deltas need source
/// objects the store lacks or holds damaged (a delta decodes only against the
/// exact bytes it was made from; the result is checked against its digest
/// anyway). The sources are objects of the installed slots, which nothing
/// removes before the new slot is active.
fn check_delta_sources(
    store: &Store,
    present: &BTreeSet<Digest>,
    to_write: &[crate::bundle::IndexEntry],
) -> Result<(), InstallError> {
    let deltas: Vec<(Digest, Digest)> = to_write
        .iter()
        .filter_map(|e| e.source.map(|s| (e.digest, s)))
        .collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let missing: Vec<&(Digest, Digest)> = deltas
        .iter()
        .filter(|(_, s)| !present.contains(s))
        .collect();
    let held: BTreeSet<Digest> = deltas
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| present.contains(s))
        .collect();
    let damaged = store.damaged_objects(&held);
    let bad: Vec<&(Digest, Digest)> = deltas.iter().filter(|(_, s)| damaged.contains(s)).collect();
    let list = |v: &[&(Digest, Digest)]| {
        v.iter()
            .take(3)
            .map(|(d, s)| format!("{d} (delta against {s})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !missing.is_empty() {
        return Err(InstallError::MissingBaseObjects(format!(
            "{} object(s) of the bundle are deltas against objects this device does not hold \
             ({}{}); the bundle was built with --base of a version this device does not have; \
             install a full bundle, or one built with --base of the installed version",
            missing.len(),
            list(&missing),
            if missing.len() > 3 { ", …" } else { "" }
        )));
    }
    if !bad.is_empty() {
        return Err(InstallError::MissingBaseObjects(format!(
            "{} object(s) of the bundle are deltas against objects that are damaged on this \
             device ({}{}); run `didymos fsck --repair`, then install a full bundle",
            bad.len(),
            list(&bad),
            if bad.len() > 3 { ", …" } else { "" }
        )));
    }
    Ok(())
}

/// What a delta bundle is built against, for a device that lacks it.
fn describe_bases(manifest: &crate::bundle::Manifest) -> String {
    let bases: Vec<String> = manifest.bases.iter().map(ToString::to_string).collect();
    if bases.is_empty() {
        "this is not a delta bundle, so the bundle is incomplete".to_owned()
    } else {
        format!(
            "the bundle is a delta against {}, which this device does not have",
            bases.join(", ")
        )
    }
}

/// An image stored as a delta against a base image the store lacks is the
/// missing-base refusal, before anything is written.
pub(crate) fn image_base_missing(
    e: crate::bundle::BundleError,
    manifest: &crate::bundle::Manifest,
) -> InstallError {
    match e {
        crate::bundle::BundleError::ImageBaseMissing { base } => {
            InstallError::MissingBaseObjects(format!(
                "the bundle's image is stored as a delta against image {base}, which is not on \
                 this device; {}; install a full bundle or one built with --base of the \
                 installed version",
                describe_bases(manifest)
            ))
        }
        other => other.into(),
    }
}

/// Test-only: `DIDYMOS_FAILPOINT=delta-half-decoded` ends the process (as a
/// power cut) once half of the first delta object's bytes are in its
/// temporary file; `delta-decode-pause` instead prints
/// `didymos: delta-decode-pause` and sleeps 60 s there, so a test can kill it.
struct DeltaFailpoint<'a> {
    inner: &'a mut dyn std::io::Write,
    armed: Option<u64>,
    written: u64,
}

impl<'a> DeltaFailpoint<'a> {
    fn wrap(entry: &crate::bundle::IndexEntry, inner: &'a mut dyn std::io::Write) -> Self {
        let armed =
            (cfg!(feature = "failpoints") && entry.source.is_some()).then_some(entry.size / 2);
        DeltaFailpoint {
            inner,
            armed,
            written: 0,
        }
    }
}

impl std::io::Write for DeltaFailpoint<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if let Some(half) = self.armed
            && self.written >= half
        {
            self.armed = None;
            self.inner.flush()?;
            failpoint("delta-half-decoded");
            #[cfg(feature = "failpoints")]
            if std::env::var("DIDYMOS_FAILPOINT").is_ok_and(|v| v == "delta-decode-pause") {
                eprintln!("didymos: delta-decode-pause");
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Picks the slot to install into: never the booted one; when the system was
/// not booted through a slot, never the one the bootloader boots next.
fn select_target<'c>(
    config: &'c SystemConfig,
    bootloader: &dyn Bootloader,
    booted: &Booted,
) -> Result<&'c SlotConfig, InstallError> {
    let candidates: Vec<&SlotConfig> = config
        .bootable_slots()
        .filter(|s| s.kind == SlotKind::Composefs)
        .collect();
    let avoid = match booted {
        Booted::Slot { slot, .. } => Some(slot.clone()),
        Booted::Unknown(name) => {
            return Err(InstallError::NoTargetSlot(format!(
                "the kernel command line names slot \"{name}\", which system.conf does not \
                 configure; refusing to guess which slot is safe to overwrite"
            )));
        }
        // Not booted through a slot (factory or recovery system): keep what
        // the bootloader would boot next, unless that slot holds nothing yet.
        Booted::None => bootloader
            .get_primary()?
            .and_then(|b| config.slot_by_bootname(&b).map(|s| s.name.clone()))
            .filter(|slot| SlotRecord::load(&config.store.path, slot).is_ok()),
    };
    candidates
        .into_iter()
        .find(|s| Some(&s.name) != avoid.as_ref())
        .ok_or_else(|| {
            InstallError::NoTargetSlot(match &avoid {
                Some(a) => format!(
                    "the only composefs slot is {a}, which is in use; an A/B system needs two"
                ),
                None => "system.conf has no composefs slot with a bootname".into(),
            })
        })
}

/// Activating the new slot makes the booted one its fall back; refuse when
/// the bootloader would not boot the booted slot again (booted on trial and
/// never marked good, its attempts used up), since a new slot that failed
/// would then leave nothing to boot. Not booted through a slot: nothing to
/// keep.
fn check_fallback(bootloader: &dyn Bootloader, booted: &Booted) -> Result<(), InstallError> {
    let Booted::Slot { slot, bootname } = booted else {
        return Ok(());
    };
    let bad = bootloader.get_state(bootname)? == BootState::Bad;
    if bad || bootloader.attempts_left(bootname)? == Some(0) {
        return Err(InstallError::BootedUnconfirmed { slot: slot.clone() });
    }
    Ok(())
}

/// Refuses, before anything is written, an install that would run out of
/// space or inodes: in the store (objects, the image, the largest raw image
/// passing through `tmp/`) and where the boot files go (their own
/// filesystem, or the store's when they share it; each file is written next
/// to the one it replaces, so its whole size must be free).
fn check_space(
    config: &SystemConfig,
    store: &Store,
    to_write: &[crate::bundle::IndexEntry],
    image: u64,
    raw_plan: &[super::raw::RawWrite],
    boot_plan: &super::boot_files::BootFiles,
) -> Result<(), InstallError> {
    let store_fs = crate::store::filesystem_free(&config.store.path)?;
    let mut bytes =
        estimated_space(to_write, image) + raw_plan.iter().map(|w| w.image.size).max().unwrap_or(0);
    // Objects, the image, a raw image's temporary file, new objects/xx
    // directories, and the slot record's three files.
    let new_dirs: std::collections::BTreeSet<u8> = to_write
        .iter()
        .map(|e| e.digest.0[0])
        .filter(|b| !store.objects_dir().join(format!("{b:02x}")).exists())
        .collect();
    let mut inodes = to_write.len() as u64 + 1 + 1 + new_dirs.len() as u64 + 3;
    let boot_dir = boot_plan.directory.as_deref();
    let boot_bytes = boot_plan.bytes();
    let boot_inodes = boot_plan.files.len() as u64;
    if let Some(dir) = boot_dir {
        let boot_fs = crate::store::filesystem_free(dir)?;
        if boot_fs.id == store_fs.id {
            bytes += boot_bytes;
            inodes += boot_inodes;
        } else {
            boot_fs.require(boot_bytes, boot_inodes, dir)?;
        }
    }
    store_fs.require(bytes, inodes, &config.store.path)
}

/// Bytes the install will take: objects rounded up to filesystem blocks, plus
/// fs-verity's Merkle tree (1/128 of the data, rounded), plus the image.
fn estimated_space(entries: &[crate::bundle::IndexEntry], image: u64) -> u64 {
    let block = |n: u64| n.div_ceil(4096) * 4096;
    let files = entries.iter().map(|e| e.size).chain(std::iter::once(image));
    files.map(|n| block(n) + block(n.div_ceil(128))).sum()
}

fn handler_env(
    config: &SystemConfig,
    target: &SlotConfig,
    bundle: &VerifiedBundle,
) -> Vec<(String, String)> {
    let m = bundle.manifest();
    let mut env = vec![
        (
            "DIDYMOS_SYSTEM_COMPATIBLE",
            config.system.compatible.clone(),
        ),
        (
            "DIDYMOS_SYSTEM_VARIANT",
            config.system.variant.clone().unwrap_or_default(),
        ),
        ("DIDYMOS_SLOT_NAME", target.name.to_string()),
        ("DIDYMOS_SLOT_CLASS", target.name.class().to_owned()),
        (
            "DIDYMOS_SLOT_BOOTNAME",
            target
                .bootname
                .as_ref()
                .map(|b| b.to_string())
                .unwrap_or_default(),
        ),
        ("DIDYMOS_BUNDLE_COMPATIBLE", m.compatible.clone()),
        ("DIDYMOS_BUNDLE_VERSION", m.version.clone()),
        ("DIDYMOS_BUNDLE_BUILD", m.build.clone()),
        ("DIDYMOS_BUNDLE_DESCRIPTION", m.description.clone()),
        ("DIDYMOS_BUNDLE_HASH", bundle.manifest_hash()),
        ("DIDYMOS_IMAGE_DIGEST", m.image.digest.to_hex()),
        ("DIDYMOS_STORE", config.store.path.display().to_string()),
    ];
    if let Some(dir) = &target.boot_directory {
        env.push(("DIDYMOS_SLOT_BOOT_DIRECTORY", dir.display().to_string()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A byte count for people: `12.3 MiB`.
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// RFC 3339 in UTC with microseconds: activations in the same second still
/// order correctly (the rollback check compares them).
pub(crate) fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
