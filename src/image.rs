//! The one adapter over the `composefs` crate: digests, fs-verity, and what an
//! image references. Nothing else in didymos names `composefs::` directly.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use composefs::fsverity::{FsVerityHasher, Sha256HashValue};

use crate::Digest;

/// An image that cannot be parsed as a composefs EROFS image.
#[derive(Debug, thiserror::Error)]
#[error("not a valid composefs image: {0}")]
pub struct ImageError(pub String);

fn to_digest(h: &Sha256HashValue) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(zerocopy::IntoBytes::as_bytes(h));
    Digest(out)
}

/// Streaming fs-verity digest (SHA-256, 4096-byte blocks, no salt).
#[derive(Default)]
pub struct VerityHasher(FsVerityHasher<Sha256HashValue>);

impl VerityHasher {
    pub fn new() -> Self {
        Self(FsVerityHasher::new())
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0
            .write_all(data)
            .expect("hashing into memory cannot fail");
    }
    pub fn finish(mut self) -> Digest {
        to_digest(&self.0.digest())
    }
}

impl Write for VerityHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The fs-verity digest of a byte slice.
pub fn digest_bytes(data: &[u8]) -> Digest {
    to_digest(&composefs::fsverity::compute_verity::<Sha256HashValue>(
        data,
    ))
}

/// The fs-verity digest of everything `reader` yields, computed in userspace.
pub fn digest_reader(mut reader: impl Read) -> io::Result<Digest> {
    let mut hasher = VerityHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Every object digest a composefs image references.
pub fn referenced_objects(image: &[u8]) -> Result<BTreeSet<Digest>, ImageError> {
    let set = composefs::erofs::reader::collect_objects::<Sha256HashValue>(image)
        .map_err(|e| ImageError(e.to_string()))?;
    Ok(set.iter().map(to_digest).collect())
}

/// Result of trying to enable fs-verity on a file.
#[derive(Debug, PartialEq, Eq)]
pub enum VerityEnable {
    Enabled,
    /// The filesystem does not support fs-verity (or it is not enabled on it).
    Unsupported,
}

/// Enables fs-verity on a file opened read-only with no writers left.
/// A file that already has verity counts as enabled.
pub fn enable_verity(fd: impl AsFd) -> io::Result<VerityEnable> {
    use composefs::fsverity::EnableVerityError as E;
    match composefs::fsverity::enable_verity_with_retry::<Sha256HashValue>(&fd) {
        Ok(()) | Err(E::AlreadyEnabled) => Ok(VerityEnable::Enabled),
        Err(E::FilesystemNotSupported) => Ok(VerityEnable::Unsupported),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// The kernel's fs-verity measurement of a file, or None where the file has
/// no verity (or the filesystem does not support it).
pub fn measure_verity(fd: impl AsFd) -> io::Result<Option<Digest>> {
    composefs::fsverity::measure_verity_opt::<Sha256HashValue>(fd)
        .map(|d| d.as_ref().map(to_digest))
        .map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_digest_equals_one_shot() {
        let data: Vec<u8> = (0..20000u32).map(|i| (i * 7) as u8).collect();
        let mut h = VerityHasher::new();
        for chunk in data.chunks(1000) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), digest_bytes(&data));
        assert_eq!(digest_reader(&data[..]).unwrap(), digest_bytes(&data));
    }

    #[test]
    fn known_digest_of_empty_and_small_input() {
        // Values computed by `fsverity digest` (fsverity-utils 1.5) for the same contents.
        assert_eq!(
            digest_bytes(b"").to_hex(),
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        );
    }
}

/// A regular file's content as the image records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// Small files live inside the image.
    Inline(Vec<u8>),
    /// Larger files are objects in the store.
    Object { digest: Digest, size: u64 },
    /// A file with a size and no data (all zeros).
    Sparse(u64),
}

/// A parsed image, for looking files up by path.
pub struct ImageTree(composefs::tree::FileSystem<Sha256HashValue>);

impl ImageTree {
    pub fn parse(image: &[u8]) -> Result<Self, ImageError> {
        composefs::erofs::reader::erofs_to_filesystem::<Sha256HashValue>(image)
            .map(Self)
            .map_err(|e| ImageError(format!("{e:#}")))
    }

    /// The regular files at `path` (relative to the image root): the file
    /// itself, or every regular file below it if it is a directory, with
    /// their paths relative to `path`'s parent. Symlinks are followed inside
    /// the image (at most 16 levels).
    pub fn files_at(
        &self,
        path: &std::path::Path,
    ) -> Result<Vec<(std::path::PathBuf, FileContent)>, ImageError> {
        use composefs::generic_tree::{Inode, LeafContent};
        use std::path::PathBuf;

        let (dir, name, resolved) = self.resolve(path, 0)?;
        let entry = dir
            .lookup(name.as_os_str())
            .ok_or_else(|| ImageError(format!("{} is not in the image", path.display())))?;
        let mut out = Vec::new();
        let base = PathBuf::from(&name);
        let mut stack = vec![(base, entry)];
        while let Some((rel, inode)) = stack.pop() {
            match inode {
                Inode::Directory(d) => {
                    for (n, child) in d.sorted_entries() {
                        stack.push((rel.join(n), child));
                    }
                }
                Inode::Leaf(id, _) => {
                    let leaf = &self.0.leaves[id.0];
                    if let LeafContent::Regular(f) = &leaf.content {
                        out.push((rel, file_content(f)));
                    } else if rel == PathBuf::from(&name) {
                        return Err(ImageError(format!(
                            "{} (resolved to {}) is not a regular file or directory",
                            path.display(),
                            resolved.display()
                        )));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Finds the directory containing `path` and the final name, following
    /// symlinks in every component.
    fn resolve(
        &self,
        path: &std::path::Path,
        depth: u32,
    ) -> Result<
        (
            &composefs::tree::Directory<Sha256HashValue>,
            std::ffi::OsString,
            std::path::PathBuf,
        ),
        ImageError,
    > {
        use composefs::generic_tree::{Inode, LeafContent};
        use std::path::{Component, PathBuf};

        if depth > 16 {
            return Err(ImageError(format!(
                "too many symlinks resolving {}",
                path.display()
            )));
        }
        let comps: Vec<_> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                _ => None,
            })
            .collect();
        let Some((last, parents)) = comps.split_last() else {
            return Err(ImageError(format!(
                "{} names the image root",
                path.display()
            )));
        };
        let mut dir = &self.0.root;
        let mut walked = PathBuf::new();
        for c in parents {
            match dir.lookup(c) {
                Some(Inode::Directory(d)) => dir = d,
                Some(Inode::Leaf(id, _)) => match &self.0.leaves[id.0].content {
                    LeafContent::Symlink(target) => {
                        let rest: PathBuf =
                            path.strip_prefix(walked.join(c)).unwrap_or(path).to_owned();
                        let t = PathBuf::from(&**target);
                        let next = if t.is_absolute() {
                            t.join(rest)
                        } else {
                            walked.join(t).join(rest)
                        };
                        return self.resolve(&normalize(&next), depth + 1);
                    }
                    _ => {
                        return Err(ImageError(format!(
                            "{} is not a directory",
                            walked.join(c).display()
                        )));
                    }
                },
                None => {
                    return Err(ImageError(format!(
                        "{} is not in the image",
                        walked.join(c).display()
                    )));
                }
            }
            walked.push(c);
        }
        if let Some(Inode::Leaf(id, _)) = dir.lookup(last) {
            if let LeafContent::Symlink(target) = &self.0.leaves[id.0].content {
                let t = PathBuf::from(&**target);
                let next = if t.is_absolute() { t } else { walked.join(t) };
                return self.resolve(&normalize(&next), depth + 1);
            }
        }
        Ok((dir, last.clone(), walked.join(last)))
    }
}

fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn file_content(f: &composefs::tree::RegularFile<Sha256HashValue>) -> FileContent {
    use composefs::tree::RegularFile;
    match f {
        RegularFile::Inline(data) => FileContent::Inline(data.to_vec()),
        RegularFile::External(id, size) | RegularFile::ExternalNoVerity(id, size) => {
            FileContent::Object {
                digest: to_digest(id),
                size: *size,
            }
        }
        RegularFile::Sparse(size) => FileContent::Sparse(*size),
    }
}
