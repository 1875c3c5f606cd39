//! Looking files up inside an image (boot files are taken from the image).

use composefs::fsverity::Sha256HashValue;

use super::{ImageError, from_id};
use crate::Digest;

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
            .map_err(|e| ImageError::Invalid(format!("{e:#}")))
    }

    /// Every regular file of the image that is an object: its path (relative
    /// to the root), digest and size, in path order.
    pub fn objects(&self) -> Vec<(std::path::PathBuf, Digest, u64)> {
        use composefs::generic_tree::{Inode, LeafContent};
        let mut out = Vec::new();
        let mut stack = vec![(std::path::PathBuf::new(), &self.0.root)];
        while let Some((at, dir)) = stack.pop() {
            for (name, inode) in dir.sorted_entries() {
                let path = at.join(name);
                match inode {
                    Inode::Directory(d) => stack.push((path, d)),
                    Inode::Leaf(id, _) => {
                        if let LeafContent::Regular(f) = &self.0.leaves[id.0].content
                            && let FileContent::Object { digest, size } = file_content(f)
                        {
                            out.push((path, digest, size));
                        }
                    }
                }
            }
        }
        out.sort();
        out
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
            .ok_or_else(|| ImageError::Lookup(format!("{} is not in the image", path.display())))?;
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
                    } else if rel.as_os_str() == name.as_os_str() {
                        return Err(ImageError::Lookup(format!(
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
            return Err(ImageError::Lookup(format!(
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
            return Err(ImageError::Lookup(format!(
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
                        return Err(ImageError::Lookup(format!(
                            "{} is not a directory",
                            walked.join(c).display()
                        )));
                    }
                },
                None => {
                    return Err(ImageError::Lookup(format!(
                        "{} is not in the image",
                        walked.join(c).display()
                    )));
                }
            }
            walked.push(c);
        }
        if let Some(Inode::Leaf(id, _)) = dir.lookup(last)
            && let LeafContent::Symlink(target) = &self.0.leaves[id.0].content
        {
            let t = PathBuf::from(&**target);
            let next = if t.is_absolute() { t } else { walked.join(t) };
            return self.resolve(&normalize(&next), depth + 1);
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
                digest: from_id(id),
                size: *size,
            }
        }
        RegularFile::Sparse(size) => FileContent::Sparse(*size),
    }
}
