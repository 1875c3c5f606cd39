//! Replacing the initramfs with the new root, as busybox' and systemd's
//! `switch_root` do: free the initramfs' files, move the new root over `/`,
//! chroot into it and exec its init.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, move_mount};

#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    #[error("{path} has no executable init at {init}; is the image a bootable root filesystem?")]
    NoInit { path: String, init: String },
    #[error("switching root to {path}: {step} failed: {source}")]
    Step {
        path: String,
        step: &'static str,
        source: std::io::Error,
    },
}

fn step(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> SwitchRootError {
    let path = path.display().to_string();
    move |source| SwitchRootError::Step { path, step, source }
}

/// Deletes everything on the initramfs (the filesystem of `/`), staying on
/// that one filesystem, so its memory is given back.
fn free_initramfs(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue; // a mount point: not ours to delete
        }
        if meta.is_dir() {
            free_initramfs(&path, dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Makes `new_root` the root filesystem and executes `init` in it with
/// `args`. Only returns on failure. Must run as PID 1 of an initramfs.
pub fn switch_root(new_root: &Path, init: &str, args: &[OsString]) -> SwitchRootError {
    let init_in_root = new_root.join(init.trim_start_matches('/'));
    // `init` may be a symlink into the new root; resolve it relative to that root by checking
    // the link itself exists.
    if std::fs::symlink_metadata(&init_in_root).is_err() {
        return SwitchRootError::NoInit {
            path: new_root.display().to_string(),
            init: init.to_owned(),
        };
    }
    if let Err(e) = std::env::set_current_dir(new_root) {
        return step(new_root, "chdir")(e);
    }
    // Keep the kernel's file systems: move them into the new root.
    for api in ["/dev", "/proc", "/sys", "/run"] {
        let target = new_root.join(&api[1..]);
        let mounted = std::fs::metadata(api)
            .ok()
            .zip(std::fs::metadata("/").ok())
            .is_some_and(|(m, root)| m.dev() != root.dev());
        if mounted
            && target.is_dir()
            && let Err(e) = move_mount(CWD, api, CWD, &target, MoveMountFlags::empty())
        {
            log::warn!("cannot move {api} into the new root: {e}");
        }
    }
    if let Ok(root_meta) = std::fs::metadata("/")
        && let Ok(new_meta) = std::fs::metadata(".")
        && root_meta.dev() != new_meta.dev()
    {
        free_initramfs(Path::new("/"), root_meta.dev());
    }
    if let Err(e) = move_mount(CWD, ".", CWD, "/", MoveMountFlags::empty()) {
        return step(new_root, "move_mount to /")(e.into());
    }
    if let Err(e) = rustix::process::chroot(".") {
        return step(new_root, "chroot")(e.into());
    }
    if let Err(e) = std::env::set_current_dir("/") {
        return step(new_root, "chdir /")(e);
    }
    let err = std::process::Command::new(init).args(args).exec();
    step(new_root, "exec init")(err)
}
