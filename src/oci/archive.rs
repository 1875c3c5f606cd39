//! Blobs by path: in an OCI layout directory, or in a tar archive (an
//! `oci-archive:` or a `docker-archive:`), read in place by offset.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::{BlobLocation, BlobStore};

/// Most members an archive may have.
const MAX_MEMBERS: usize = 1_000_000;

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
pub(crate) struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    pub(crate) fn open(root: &Path) -> Result<Self, String> {
        let meta = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "{} is not a directory (an oci: layout is a directory; use oci-archive: for a file)",
                root.display()
            ));
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }
}

impl BlobStore for LayoutDir {
    fn locate(&self, path: &str) -> Option<BlobLocation> {
        let rel = clean(path)?;
        let full = self.root.join(rel);
        // Only regular files inside the layout (no symlink out of it).
        let meta = std::fs::symlink_metadata(&full).ok()?;
        meta.is_file()
            .then(|| BlobLocation::whole(full, meta.len()))
    }
    fn describe(&self) -> String {
        format!("layout directory {}", self.root.display())
    }
}

/// The members of an uncompressed tar archive: name → where its bytes are.
pub(crate) struct TarIndex {
    file: PathBuf,
    members: HashMap<PathBuf, Member>,
}

enum Member {
    File { offset: u64, len: u64 },
    Symlink(PathBuf),
}

impl TarIndex {
    pub(crate) fn open(file: &Path) -> Result<Self, String> {
        let f = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut magic = [0u8; 4];
        let n = (&f)
            .read(&mut magic)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if magic[..n].starts_with(&[0x1f, 0x8b])
            || magic[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        {
            return Err(format!(
                "{} is a compressed archive; decompress it first (gunzip/unzstd), \
                 image archives are read in place",
                file.display()
            ));
        }
        let f = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut ar = tar::Archive::new(BufReader::with_capacity(1 << 16, f));
        let mut members = HashMap::new();
        let entries = ar
            .entries()
            .map_err(|e| format!("{}: not a tar archive: {e}", file.display()))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("{}: not a valid tar archive: {e}", file.display()))?;
            if members.len() >= MAX_MEMBERS {
                return Err(format!(
                    "{} has more than {MAX_MEMBERS} members",
                    file.display()
                ));
            }
            let raw = entry
                .path()
                .map_err(|e| format!("{}: bad member name: {e}", file.display()))?;
            let Some(name) = clean(&raw.to_string_lossy()) else {
                continue; // a member outside the archive root names no blob
            };
            let kind = entry.header().entry_type();
            let member = if kind.is_file() {
                Member::File {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().ok().flatten() else {
                    continue;
                };
                let target = if kind.is_hard_link() {
                    target.into_owned()
                } else {
                    name.parent().unwrap_or(Path::new("")).join(target)
                };
                Member::Symlink(target)
            } else {
                continue;
            };
            members.insert(name, member);
        }
        Ok(Self {
            file: file.to_owned(),
            members,
        })
    }
}

impl BlobStore for TarIndex {
    fn locate(&self, path: &str) -> Option<BlobLocation> {
        let mut name = clean(path)?;
        for _ in 0..16 {
            match self.members.get(&name)? {
                Member::File { offset, len } => {
                    return Some(BlobLocation {
                        file: self.file.clone(),
                        offset: *offset,
                        len: *len,
                    });
                }
                Member::Symlink(target) => name = clean(&target.to_string_lossy())?,
            }
        }
        None
    }
    fn describe(&self) -> String {
        format!("archive {}", self.file.display())
    }
}

/// `./a/../b` → `b`; None for a path that leaves the root.
fn clean(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./blobs/sha256/ab"), Some("blobs/sha256/ab".into()));
        assert_eq!(clean("a/../b.tar"), Some("b.tar".into()));
        assert_eq!(clean("../x"), None);
        assert_eq!(clean("."), None);
    }
}
