//! Mounting the slot's tree: the read-only composefs root, a writable `/etc`
//! overlay persisted per slot, `/var` from the store's state area, and the
//! store itself where the running system expects it.
//!
//! ```text
//! <store>/state/<bootname>/etc/{upper,work}   /etc changes of that slot
//! <store>/state/var                           /var, shared by all slots
//! ```

use std::path::{Path, PathBuf};

use crate::slot::Bootname;
use crate::sys::composefs::{self, ComposefsOptions, ErofsBacking, OverlayLayers, OverlayVerity};
use crate::sys::{DetachedMount, MountGuard};

use super::SetupError;

/// Every mount setup-root made, unmounted in reverse order if dropped.
#[derive(Debug)]
pub struct MountedTree {
    guards: Vec<MountGuard>,
    pub backing: ErofsBacking,
    pub layers: OverlayLayers,
}

impl MountedTree {
    /// Leaves everything mounted.
    pub fn keep(mut self) {
        for g in std::mem::take(&mut self.guards) {
            g.keep();
        }
    }
}

impl Drop for MountedTree {
    fn drop(&mut self) {
        while let Some(g) = self.guards.pop() {
            drop(g);
        }
    }
}

/// The per-slot `/etc` layers in the store.
pub fn etc_state(store: &Path, bootname: &Bootname) -> (PathBuf, PathBuf) {
    let base = store.join("state").join(bootname.as_str()).join("etc");
    (base.join("upper"), base.join("work"))
}

/// `/var`'s persistent directory in the store.
pub fn var_state(store: &Path) -> PathBuf {
    store.join("state").join("var")
}

fn mkdirs(path: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(path).map_err(|source| SetupError::State {
        path: path.to_owned(),
        source,
    })
}

fn require_dir(target: &Path, inside: &str) -> Result<PathBuf, SetupError> {
    let p = target.join(inside.trim_start_matches('/'));
    if p.is_dir() {
        Ok(p)
    } else {
        Err(SetupError::MissingDir { path: p })
    }
}

/// Parameters of [`mount_tree`].
pub struct TreeSpec<'a> {
    pub store: &'a Path,
    pub target: &'a Path,
    /// An empty directory for the EROFS mount while the overlay is made.
    pub staging: &'a Path,
    pub bootname: &'a Bootname,
    pub image: &'a std::fs::File,
    pub image_name: &'a str,
    pub verity: OverlayVerity,
    pub options: ComposefsOptions,
    /// Where the running system finds the store (`[store] path`), if it
    /// should be bound there.
    pub store_mountpoint: Option<&'a Path>,
}

pub fn mount_tree(spec: &TreeSpec<'_>) -> Result<MountedTree, SetupError> {
    mkdirs(spec.target)?;
    mkdirs(spec.staging)?;
    let cfs = composefs::mount_composefs(
        spec.image,
        spec.image_name,
        &spec.store.join("objects"),
        spec.staging,
        spec.verity,
        spec.options,
    )
    .map_err(|e| SetupError::Mount(e.to_string()))?;
    let mut tree = MountedTree {
        guards: Vec::new(),
        backing: cfs.backing,
        layers: cfs.layers,
    };
    tree.guards
        .push(cfs.root.attach(spec.target).map_err(mount_err)?);

    // /etc: writable, changes kept per slot.
    let etc = require_dir(spec.target, "etc")?;
    let (upper, work) = etc_state(spec.store, spec.bootname);
    mkdirs(&upper)?;
    mkdirs(&work)?;
    let overlay =
        composefs::mount_writable_overlay("/etc", &etc, &upper, &work).map_err(mount_err)?;
    tree.guards.push(overlay.attach(&etc).map_err(mount_err)?);

    // /var: one persistent directory.
    let var = require_dir(spec.target, "var")?;
    let var_dir = var_state(spec.store);
    mkdirs(&var_dir)?;
    let bind = DetachedMount::bind_of(&var_dir).map_err(mount_err)?;
    tree.guards.push(bind.attach(&var).map_err(mount_err)?);

    // The store, where the running system's didymos expects it.
    if let Some(mountpoint) = spec.store_mountpoint {
        let inside = spec
            .target
            .join(mountpoint.strip_prefix("/").unwrap_or(mountpoint));
        if !inside.is_dir() {
            // Possible below /var or /etc, which are writable now.
            let _ = std::fs::create_dir_all(&inside);
        }
        let inside = require_dir(spec.target, &mountpoint.to_string_lossy())?;
        let bind = DetachedMount::bind_of(spec.store).map_err(mount_err)?;
        tree.guards.push(bind.attach(&inside).map_err(mount_err)?);
    }
    Ok(tree)
}

fn mount_err(e: crate::sys::MountError) -> SetupError {
    SetupError::Mount(e.to_string())
}
