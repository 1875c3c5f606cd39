//! `containers-storage:` — podman's local image store.
//!
//! The store's on-disk layout (layer directories per storage driver, the
//! tar-split metadata that reproduces each layer's tar stream bit for bit,
//! locking against a running podman) belongs to containers/storage. didymos
//! does not reimplement it: `skopeo copy` (containers/image's own reader of
//! the store; podman need not run) writes the image as an OCI layout with
//! uncompressed layers into a scratch directory, which is then read like
//! any `oci:` layout, every digest checked.

use std::path::Path;
use std::process::{Command, Stdio};

/// Most bytes of skopeo's error output kept for the message.
const MAX_STDERR: usize = 4096;

/// Copies `name` out of containers-storage into `<scratch>/.didymos-oci.*/layout`.
pub(super) fn copy_out(name: &str, scratch: &Path) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix(".didymos-oci.")
        .tempdir_in(scratch)
        .map_err(|e| {
            format!(
                "cannot make a scratch directory in {}: {e}",
                scratch.display()
            )
        })?;
    let dest = dir.path().join("layout");
    let output = Command::new("skopeo")
        .arg("copy")
        .arg("--quiet")
        .arg("--dest-decompress")
        .arg(format!("containers-storage:{name}"))
        .arg(format!("oci:{}", dest.display()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run skopeo ({e}); containers-storage: images are read with skopeo \
                 (Debian: apt-get install skopeo), or save the image first with \
                 `podman save --format oci-archive -o image.tar {name}`"
            )
        })?;
    if !output.status.success() {
        let mut err = String::from_utf8_lossy(&output.stderr).into_owned();
        let cut = (0..=MAX_STDERR.min(err.len()))
            .rev()
            .find(|&i| err.is_char_boundary(i))
            .unwrap_or(0);
        err.truncate(cut);
        return Err(format!(
            "skopeo could not read the image from containers-storage ({}): {}",
            output.status,
            err.trim()
        ));
    }
    Ok(dir)
}
