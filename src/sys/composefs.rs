//! Mounting a composefs image: the EROFS metadata image, then an overlay
//! whose data-only lower layer is the object store.
//!
//! Both steps fall back at run time, never by kernel-version guesswork:
//!
//! - EROFS mounts the image file directly (Linux 6.12+ with
//!   `CONFIG_EROFS_FS_BACKED_BY_FILE`); when the kernel answers `ENOTBLK`
//!   the image goes through a read-only loop device;
//! - the overlay takes its layers as `lowerdir+`/`datadir+` (Linux 6.8+); when
//!   the kernel does not know those keys, it gets the legacy
//!   `lowerdir=IMAGE::OBJECTS` string (data-only layers, Linux 6.5+).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::MountAttrFlags;

use super::loopdev::{self, LoopError};
use super::mount::{DetachedMount, FsHandle, MountError};

#[derive(Debug, thiserror::Error)]
pub enum ComposefsError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("mounting the EROFS image through a loop device: {0}")]
    Loop(#[from] LoopError),
}

/// How the EROFS image ended up mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErofsBacking {
    /// Straight from the image file.
    File,
    /// Through this loop device (the kernel refused the file with `ENOTBLK`,
    /// or the caller asked for a loop device).
    Loop(PathBuf),
}

/// How the overlay was told about its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayLayers {
    /// `lowerdir+` and `datadir+`.
    Appended,
    /// `lowerdir=IMAGE::OBJECTS`.
    Legacy,
}

/// The overlay's `verity=` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayVerity {
    /// Every data file must have fs-verity and match the digest in the image.
    Require,
    /// Check the digest where the object has fs-verity.
    On,
    /// No check (the option is not passed at all).
    Off,
}

impl OverlayVerity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Require => "require",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// Test and diagnosis knobs; the defaults are what production uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComposefsOptions {
    /// Use a loop device even if the kernel could mount the file.
    pub force_loop: bool,
    /// Use the legacy `lowerdir=` string even if `lowerdir+` works.
    pub force_legacy_layers: bool,
}

/// A mounted composefs tree, not yet attached.
#[derive(Debug)]
pub struct ComposefsMount {
    pub root: DetachedMount,
    pub backing: ErofsBacking,
    pub layers: OverlayLayers,
}

/// Mounts an EROFS image read-only; see the module documentation.
pub fn mount_erofs(
    image: &File,
    what: &str,
    force_loop: bool,
) -> Result<(DetachedMount, ErofsBacking), ComposefsError> {
    if !force_loop {
        let fs = FsHandle::open("erofs", format!("EROFS image {what}"))?;
        fs.set_string("source", &format!("/proc/self/fd/{}", image.as_raw_fd()))?;
        fs.set_flag("ro")?;
        match fs.mount(MountAttrFlags::MOUNT_ATTR_RDONLY) {
            Ok(m) => return Ok((m, ErofsBacking::File)),
            Err(e) if e.errno == Errno::NOTBLK => {
                log::info!("{what}: kernel cannot mount EROFS from a file; using a loop device");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let dev = loopdev::attach_read_only(image)?;
    let fs = FsHandle::open(
        "erofs",
        format!("EROFS image {what} on {}", dev.path.display()),
    )?;
    fs.set_string("source", &dev.path.to_string_lossy())?;
    fs.set_flag("ro")?;
    let m = fs.mount(MountAttrFlags::MOUNT_ATTR_RDONLY)?;
    // The mount holds the device now; autoclear frees it on unmount.
    Ok((m, ErofsBacking::Loop(dev.path)))
}

/// Escapes a path for overlayfs' legacy `lowerdir=` syntax (`:` separates
/// layers, `\` escapes).
pub fn escape_layer_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, ':' | '\\' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Mounts a composefs image: EROFS from `image`, overlay with `objects` as
/// the data-only layer, read-only. `staging` is an empty directory where the
/// EROFS mount is attached while the overlay is made (kernels before 6.15
/// cannot use a detached mount as a layer); it is unmounted before returning.
pub fn mount_composefs(
    image: &File,
    image_name: &str,
    objects: &Path,
    staging: &Path,
    verity: OverlayVerity,
    options: ComposefsOptions,
) -> Result<ComposefsMount, ComposefsError> {
    let (erofs, backing) = mount_erofs(image, image_name, options.force_loop)?;
    let staged = erofs.attach(staging)?;
    let lower = staging.to_string_lossy().into_owned();
    let data = objects.to_string_lossy().into_owned();
    let what = format!("composefs overlay of {image_name}");

    let configure = |fs: &FsHandle| -> Result<(), MountError> {
        fs.set_string("source", "composefs")?;
        fs.set_string("metacopy", "on")?;
        fs.set_string("redirect_dir", "on")?;
        if verity != OverlayVerity::Off {
            fs.set_string("verity", verity.as_str())?;
        }
        Ok(())
    };

    let mut layers = OverlayLayers::Appended;
    let mut appended_error = None;
    if !options.force_legacy_layers {
        let fs = FsHandle::open("overlay", what.clone())?;
        configure(&fs)?;
        match fs.set_string("lowerdir+", &lower) {
            Ok(()) => {
                fs.set_string("datadir+", &data)?;
                let root = fs.mount(MountAttrFlags::MOUNT_ATTR_RDONLY)?;
                staged.unmount()?;
                return Ok(ComposefsMount {
                    root,
                    backing,
                    layers,
                });
            }
            Err(e) if e.errno == Errno::INVAL => {
                log::info!(
                    "overlayfs does not take lowerdir+ ({e}); using lowerdir=IMAGE::OBJECTS"
                );
                appended_error = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    layers = OverlayLayers::Legacy;
    let fs = FsHandle::open("overlay", what)?;
    configure(&fs)?;
    let legacy = format!(
        "{}::{}",
        escape_layer_path(&lower),
        escape_layer_path(&data)
    );
    fs.set_string("lowerdir", &legacy).map_err(|mut e| {
        if let Some(first) = appended_error {
            e.kernel_log
                .insert(0, format!("lowerdir+ also failed: {first}"));
        }
        e
    })?;
    let root = fs.mount(MountAttrFlags::MOUNT_ATTR_RDONLY)?;
    staged.unmount()?;
    Ok(ComposefsMount {
        root,
        backing,
        layers,
    })
}

/// Mounts a writable overlay of `lower` with `upper`/`work` directories (used
/// for `/etc`).
pub fn mount_writable_overlay(
    what: &str,
    lower: &Path,
    upper: &Path,
    work: &Path,
) -> Result<DetachedMount, MountError> {
    let fs = FsHandle::open("overlay", format!("overlay for {what}"))?;
    fs.set_string("source", "overlay")?;
    let lower = lower.to_string_lossy();
    if let Err(e) = fs.set_string("lowerdir+", &lower) {
        if e.errno != Errno::INVAL {
            return Err(e);
        }
        fs.set_string("lowerdir", &escape_layer_path(&lower))?;
    }
    fs.set_string("upperdir", &upper.to_string_lossy())?;
    fs.set_string("workdir", &work.to_string_lossy())?;
    fs.mount(MountAttrFlags::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_layer_separators() {
        for (input, expected) in [
            ("/run/a", "/run/a"),
            ("/a:b", "/a\\:b"),
            ("/a\\b", "/a\\\\b"),
            ("/a,b", "/a\\,b"),
        ] {
            assert_eq!(escape_layer_path(input), expected, "{input:?}");
        }
    }
}
