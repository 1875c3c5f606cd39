//! The order of the steps: command line, configuration, store, checks, mounts.

use std::path::PathBuf;

use crate::config::{SystemConfig, VerityPolicy};
use crate::slot::{Bootname, SlotName};
use crate::sys::composefs::OverlayVerity;
use crate::sys::{MountGuard, mount};

use super::{
    BootArgs, ImageCheck, Mounted, SetupError, SetupFailure, SetupOptions, device, parse_flags,
    tree,
};

/// Checks and mounts the slot; on success everything stays mounted.
pub fn run(options: &SetupOptions) -> Result<Mounted, SetupFailure> {
    let fail = |slot: Option<String>| move |error: SetupError| SetupFailure { slot, error };
    let args = BootArgs::parse(&options.cmdline).map_err(|e| fail(None)(e.into()))?;
    let bootname = args
        .require_slot()
        .map_err(|e| fail(None)(e.into()))?
        .clone();
    let config = SystemConfig::load(&options.config)
        .map_err(|e| fail(Some(bootname.to_string()))(e.into()))?;
    let slot = config.slot_by_bootname(&bootname).ok_or_else(|| {
        fail(Some(bootname.to_string()))(SetupError::UnknownBootname {
            bootname: bootname.clone(),
            conf: options.config.clone(),
            known: config
                .bootnames()
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    })?;
    let label = format!("{bootname} ({})", slot.name);
    let fail = fail(Some(label));
    if slot.kind != crate::config::SlotKind::Composefs {
        return Err(fail(SetupError::NotComposefs {
            kind: slot.kind.as_str(),
        }));
    }
    let slot_name = slot.name.clone();
    setup(options, &args, &config, &bootname, &slot_name).map_err(fail)
}

fn setup(
    options: &SetupOptions,
    args: &BootArgs,
    config: &SystemConfig,
    bootname: &Bootname,
    slot: &SlotName,
) -> Result<Mounted, SetupError> {
    // The store: given, or mounted from the partition.
    let (store, store_guard): (PathBuf, Option<MountGuard>) = match &options.store_root {
        Some(p) => (p.clone(), None),
        None => {
            let (path, guard) = mount_store(options, args)?;
            (path, Some(guard))
        }
    };

    let verified =
        crate::slot::check::verify_slot(config, &store, slot, args.sealed_digest.as_ref())?;
    let verity = match (config.store.verity, verified.check) {
        (VerityPolicy::Off, _) => OverlayVerity::Off,
        (_, ImageCheck::Verity) => OverlayVerity::Require,
        (_, ImageCheck::Userspace) => OverlayVerity::Off,
    };
    let image_name = verified.image_path.display().to_string();
    let spec = tree::TreeSpec {
        store: &store,
        target: &options.target,
        staging: &options.run_dir.join("erofs"),
        bootname,
        image: &verified.image,
        image_name: &image_name,
        verity,
        options: options.composefs,
        store_mountpoint: Some(&config.store.path),
    };
    let tree = tree::mount_tree(&spec)?;
    let mounted = Mounted {
        bootname: bootname.clone(),
        slot: slot.clone(),
        image: verified.record.image,
        version: verified.record.bundle_version.clone(),
        check: verified.check,
        verity,
        backing: tree.backing.clone(),
        layers: tree.layers,
        init: args.init.clone(),
    };
    tree.keep();
    // The tree holds its own reference to the store (bound into it);
    // the scratch mount point is no longer needed.
    if let Some(g) = store_guard
        && let Err(e) = g.unmount()
    {
        log::warn!("{e}");
    }
    Ok(mounted)
}

fn mount_store(
    options: &SetupOptions,
    args: &BootArgs,
) -> Result<(PathBuf, MountGuard), SetupError> {
    let spec_text = args.require_store()?;
    let spec = device::DeviceSpec::parse(spec_text)
        .ok_or_else(|| SetupError::BadDevice(spec_text.to_owned()))?;
    let dev = spec
        .wait(options.device_timeout)
        .ok_or(SetupError::NoDevice {
            spec: spec_text.to_owned(),
            waited: options.device_timeout,
            hint: "is the disk driver in the initramfs? check rootwait and the device name",
        })?;
    let fstype = args.store_fstype.as_deref().unwrap_or("ext4");
    let flags = parse_flags(args.store_flags.as_deref().unwrap_or(""));
    let flag_refs: Vec<(&str, Option<&str>)> = flags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    let m = mount::mount_device(
        fstype,
        &dev.to_string_lossy(),
        &flag_refs,
        rustix::mount::MountAttrFlags::empty(),
    )
    .map_err(|e| SetupError::Mount(e.to_string()))?;
    let at = options.run_dir.join("store");
    std::fs::create_dir_all(&at).map_err(|source| SetupError::State {
        path: at.clone(),
        source,
    })?;
    let guard = m
        .attach(&at)
        .map_err(|e| SetupError::Mount(e.to_string()))?;
    Ok((at, guard))
}
