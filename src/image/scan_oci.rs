//! Building a tree from the layers of a container image.
//!
//! Layers are applied in order the way composefs-rs's `composefs-oci`
//! applies them (`process_entry`, then `transform_for_oci` of the composefs
//! crate), so the same image gives the same composefs image digest:
//!
//! - a directory over a directory takes the newer metadata and keeps the
//!   entries; anything else replaces what was there;
//! - `.wh.<name>` deletes `<name>` of a lower layer, `.wh..wh..opq` empties
//!   its directory of what lower layers put there;
//! - hardlinks name a file already in the tree;
//! - extended attributes come from `SCHILY.xattr.*` records; owners, modes,
//!   mtimes (with PAX nanoseconds) from the tar headers;
//! - at the end the root directory takes `/usr`'s metadata, `/run` is
//!   emptied, and only `security.capability` (and with
//!   [`OciXattrs::KeepUser`] also `user.*`) extended attributes are kept.
//!
//! Where composefs-rs is lenient, this is strict, and says which layer and
//! which entry: a whiteout of something no lower layer has, a parent
//! directory that is missing, a path through a symbolic link or with `..`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use composefs::generic_tree::{
    self, Inode, LeafContent, OciTransformOptions, Stat, XattrFiltering,
};
use tar::EntryType;

use super::scan_tar::{id32, read_member};
use super::tree::{Pending, Sink, SourceTree, clean_components, stat};
use super::{FileData, ImageError};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Which extended attributes an image from layers keeps (composefs-rs's
/// `XattrFiltering`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OciXattrs {
    /// `security.capability` only: composefs-rs's default, what
    /// `cfsctl oci compute-id` computes.
    #[default]
    CapabilitiesOnly,
    /// `security.capability` and `user.*` (`--xattrs keep-user-xattrs`).
    KeepUser,
}

/// A tree being built from layers, one layer at a time.
pub struct OciTreeBuilder {
    tree: SourceTree,
}

impl Default for OciTreeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn join(parts: &[&OsStr]) -> PathBuf {
    parts.iter().collect()
}

fn show(parts: &[&OsStr]) -> String {
    if parts.is_empty() {
        "/".into()
    } else {
        join(parts).display().to_string()
    }
}

impl OciTreeBuilder {
    pub fn new() -> Self {
        // The root's metadata is taken from /usr at the end.
        Self {
            tree: SourceTree::new(Stat::uninitialized()),
        }
    }

    /// Applies one layer's tar stream. `layer` names it in messages.
    pub fn apply_layer(
        &mut self,
        layer: &str,
        reader: &mut dyn Read,
        sink: &mut Sink<'_>,
    ) -> Result<(), ImageError> {
        let lerr = |entry: &str, detail: &dyn std::fmt::Display| ImageError::Layer {
            layer: layer.to_owned(),
            entry: entry.to_owned(),
            detail: detail.to_string(),
        };
        // What this layer added: a whiteout hides only lower layers' entries.
        let mut added: HashSet<PathBuf> = HashSet::new();
        let mut ar = tar::Archive::new(reader);
        let entries = ar.entries().map_err(|e| lerr("", &e))?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| {
                lerr(
                    "",
                    &format!("not a valid tar stream after {n} entries: {e}"),
                )
            })?;
            let raw = entry.path().map_err(|e| lerr("", &e))?.into_owned();
            let name = raw.display().to_string();
            let err = |d: &dyn std::fmt::Display| lerr(&name, d);
            let parts = clean_components(&raw).map_err(|e| err(&e))?;
            let header = entry.header().clone();
            let kind = header.entry_type();
            if matches!(
                kind,
                EntryType::XGlobalHeader
                    | EntryType::XHeader
                    | EntryType::GNULongName
                    | EntryType::GNULongLink
            ) {
                continue;
            }
            let mut st = stat(
                header.mode().map_err(|e| err(&e))?,
                id32(header.uid().map_err(|e| err(&e))?, "uid").map_err(|e| err(&e))?,
                id32(header.gid().map_err(|e| err(&e))?, "gid").map_err(|e| err(&e))?,
                i64::try_from(header.mtime().map_err(|e| err(&e))?).unwrap_or(i64::MAX),
                0,
            );
            if let Some(pax) = entry.pax_extensions().map_err(|e| err(&e))? {
                apply_pax(&mut st, pax).map_err(|e| err(&e))?;
            }
            let Some((leaf_name, parent)) = parts.split_last() else {
                if !kind.is_dir() {
                    return Err(err(&"names the root directory but is not a directory"));
                }
                self.tree.fs.root.stat = st;
                continue;
            };
            let leaf_name: &OsStr = leaf_name;
            let dir = dir_mut(&mut self.tree.fs.root, &self.tree.fs.leaves, parent)
                .map_err(|e| err(&e))?;

            if let Some(target) = leaf_name.as_bytes().strip_prefix(WHITEOUT) {
                if leaf_name.as_bytes() == OPAQUE {
                    retain_entries(dir, |n| added.contains(&join(parent).join(n)));
                    continue;
                }
                if target.starts_with(WHITEOUT) {
                    return Err(err(
                        &"is an AUFS metadata entry (.wh..wh.*), not an OCI whiteout",
                    ));
                }
                let target = OsStr::from_bytes(target);
                let path = join(parent).join(target);
                if added.contains(&path) {
                    return Err(err(&format!(
                        "whiteout of {}, which this same layer adds (a whiteout hides only lower layers' entries)",
                        path.display()
                    )));
                }
                if dir.lookup(target).is_none() {
                    return Err(err(&format!(
                        "whiteout of {}, which no lower layer has",
                        path.display()
                    )));
                }
                dir.remove(target);
                continue;
            }

            let path = join(&parts);
            let inode = match kind {
                EntryType::Directory => {
                    if let Some(Inode::Directory(_)) = dir.lookup(leaf_name) {
                        dir.get_directory_mut(leaf_name).map_err(|e| err(&e))?.stat = st;
                        added.insert(path);
                        continue;
                    }
                    self.tree.stats.directories += 1;
                    Inode::Directory(Box::new(generic_tree::Directory::new(st)))
                }
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    let size = entry.size();
                    let data = read_member(&mut entry, size).map_err(|e| err(&e))?;
                    let actual = match &data {
                        FileData::Bytes(b) => b.len() as u64,
                        FileData::Temp(f) => f.metadata().map_err(|e| err(&e))?.len(),
                        FileData::Path(_) => unreachable!("layer entries are never paths"),
                    };
                    let id =
                        match data {
                            FileData::Bytes(b) if actual <= super::INLINE_MAX => self
                                .tree
                                .regular(&path, st, actual, || Ok(b), || unreachable!(), sink)?,
                            data => self.tree.regular(
                                &path,
                                st,
                                actual,
                                || unreachable!(),
                                || Ok(data),
                                sink,
                            )?,
                        };
                    Inode::leaf(id)
                }
                EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| err(&e))?
                        .ok_or_else(|| err(&"hard link without a target"))?
                        .into_owned();
                    let tparts = clean_components(&target).map_err(|e| err(&e))?;
                    let id = leaf_at(&self.tree.fs.root, &self.tree.fs.leaves, &tparts)
                        .map_err(|e| err(&format!("hard link to {}: {e}", target.display())))?;
                    Inode::leaf(id)
                }
                EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| err(&"symbolic link without a target"))?
                        .into_owned();
                    Inode::leaf(self.tree.leaf(
                        st,
                        LeafContent::Symlink(Box::from(OsStr::from_bytes(&target))),
                    ))
                }
                EntryType::Char | EntryType::Block => {
                    let major = header.device_major().map_err(|e| err(&e))?.unwrap_or(0);
                    let minor = header.device_minor().map_err(|e| err(&e))?.unwrap_or(0);
                    let dev = rustix::fs::makedev(major, minor);
                    Inode::leaf(self.tree.leaf(
                        st,
                        if kind == EntryType::Char {
                            LeafContent::CharacterDevice(dev)
                        } else {
                            LeafContent::BlockDevice(dev)
                        },
                    ))
                }
                EntryType::Fifo => Inode::leaf(self.tree.leaf(st, LeafContent::Fifo)),
                other => return Err(err(&format!("unsupported entry type {other:?}"))),
            };
            // The hard link's target lookup borrowed the tree; find the parent again.
            let dir = dir_mut(&mut self.tree.fs.root, &self.tree.fs.leaves, parent)
                .map_err(|e| err(&e))?;
            dir.insert(leaf_name, inode);
            added.insert(path);
        }
        Ok(())
    }

    /// Applies composefs's OCI transformation and returns the finished tree.
    pub fn finish(mut self, xattrs: OciXattrs) -> Result<SourceTree, ImageError> {
        match self.tree.fs.root.lookup(OsStr::new("usr")) {
            Some(Inode::Directory(_)) => {}
            _ => {
                return Err(ImageError::Oci(
                    "the image has no /usr directory; composefs gives an image's root \
                     directory the metadata of /usr, so a root filesystem image needs one"
                        .into(),
                ));
            }
        }
        let options = OciTransformOptions {
            xattrs: match xattrs {
                OciXattrs::CapabilitiesOnly => XattrFiltering::AllowlistOnly,
                OciXattrs::KeepUser => XattrFiltering::KeepUserXattrs,
            },
        };
        self.tree
            .fs
            .transform_for_oci(&options)
            .map_err(|e| ImageError::Oci(e.to_string()))?;
        self.tree.recount();
        Ok(self.tree)
    }
}

/// The directory at `parts`, which must exist; a symbolic link on the way is
/// refused (an extractor would follow it, possibly out of the tree).
fn dir_mut<'a>(
    root: &'a mut generic_tree::Directory<Pending>,
    leaves: &[generic_tree::Leaf<Pending>],
    parts: &[&OsStr],
) -> Result<&'a mut generic_tree::Directory<Pending>, String> {
    let mut dir = root;
    for (i, name) in parts.iter().enumerate() {
        let here = || show(&parts[..=i]);
        match dir.lookup(name) {
            Some(Inode::Directory(_)) => {}
            Some(Inode::Leaf(id, _)) => {
                return Err(match &leaves[id.0].content {
                    LeafContent::Symlink(t) => format!(
                        "{} is a symbolic link (to {}), not a directory: an entry below it \
                         would be written through the link, possibly outside the image",
                        here(),
                        PathBuf::from(&**t).display()
                    ),
                    _ => format!("{} is not a directory", here()),
                });
            }
            None => {
                return Err(format!(
                    "the parent directory {} is not in this layer or a lower one (a layer \
                     must list every directory, as composefs-rs requires too; pack a tree \
                     from its root, e.g. `tar -C DIR -cf layer.tar .`)",
                    here()
                ));
            }
        }
        dir = dir.get_directory_mut(name).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// The non-directory at `parts` (a hard link's target).
fn leaf_at(
    root: &generic_tree::Directory<Pending>,
    leaves: &[generic_tree::Leaf<Pending>],
    parts: &[&OsStr],
) -> Result<generic_tree::LeafId, String> {
    let Some((name, parent)) = parts.split_last() else {
        return Err("the target is the root directory".into());
    };
    let mut dir = root;
    for (i, p) in parent.iter().enumerate() {
        dir = match dir.lookup(p) {
            Some(Inode::Directory(d)) => d,
            Some(Inode::Leaf(id, _)) => {
                return Err(match &leaves[id.0].content {
                    LeafContent::Symlink(_) => {
                        format!(
                            "{} is a symbolic link, not a directory",
                            show(&parent[..=i])
                        )
                    }
                    _ => format!("{} is not a directory", show(&parent[..=i])),
                });
            }
            None => return Err("the target is not in this layer or a lower one".into()),
        };
    }
    match dir.lookup(name) {
        Some(Inode::Leaf(id, _)) => Ok(*id),
        Some(Inode::Directory(_)) => Err("the target is a directory".into()),
        None => Err("the target is not in this layer or a lower one".into()),
    }
}

/// PAX records as composefs-rs reads them: `SCHILY.xattr.<name>` with the
/// name as written, `uid`, `gid`, and `mtime` with its fraction cut (not
/// rounded) to nanoseconds.
fn apply_pax(st: &mut Stat, pax: tar::PaxExtensions<'_>) -> Result<(), String> {
    for ext in pax {
        let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
        let key = ext.key_bytes();
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            st.xattrs.insert(
                Box::from(OsStr::from_bytes(name)),
                Box::from(ext.value_bytes()),
            );
            continue;
        }
        let value = || {
            ext.value()
                .map_err(|e| format!("PAX {}: {e}", String::from_utf8_lossy(key)))
        };
        match key {
            b"uid" => st.st_uid = parse_id(value()?, "uid")?,
            b"gid" => st.st_gid = parse_id(value()?, "gid")?,
            b"mtime" => {
                let (sec, nsec) = pax_mtime(value()?)
                    .ok_or_else(|| format!("PAX mtime {:?} is not a time", ext.value()))?;
                st.st_mtim_sec = sec;
                st.st_mtim_nsec = nsec;
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_id(s: &str, what: &str) -> Result<u32, String> {
    let v: u64 = s.parse().map_err(|e| format!("PAX {what} {s:?}: {e}"))?;
    id32(v, what)
}

/// `123.4` → (123, 400000000): seconds as written, the fraction's first nine
/// digits.
fn pax_mtime(s: &str) -> Option<(i64, u32)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = &frac[..frac.len().min(9)];
    let nsec = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some((sec, nsec))
}

/// Keeps only the entries of `dir` that `keep` says yes to.
fn retain_entries(
    dir: &mut generic_tree::Directory<Pending>,
    mut keep: impl FnMut(&OsStr) -> bool,
) {
    let drop: Vec<OsString> = dir
        .entries()
        .map(|(n, _)| n.to_owned())
        .filter(|n| !keep(n))
        .collect();
    for n in drop {
        dir.remove(&n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_mtimes_as_composefs_rs_reads_them() {
        let table = [
            ("12", Some((12, 0))),
            ("12.5", Some((12, 500_000_000))),
            ("12.1234567891", Some((12, 123_456_789))),
            ("12.", Some((12, 0))),
            ("x", None),
            ("1.x", None),
        ];
        for (s, want) in table {
            assert_eq!(pax_mtime(s), want, "{s}");
        }
    }
}
