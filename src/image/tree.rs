//! A scanned root filesystem whose large files still wait for their digests.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use composefs::generic_tree::{self, Inode, LeafContent, LeafId, Stat};
use composefs::tree::RegularFile;

use super::{ImageError, ObjectId, to_id, write_image};
use crate::Digest;

/// The contents of one large file, handed to whoever computes digests and
/// stores objects while the scan goes on.
pub enum FileData {
    /// A file on disk, read later (directory input).
    Path(PathBuf),
    /// Contents held in memory (small tar members).
    Bytes(Vec<u8>),
    /// Contents spooled to an unnamed temporary file (large tar members).
    Temp(File),
}

/// A regular file during scanning.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Inline(Box<[u8]>),
    /// Waiting for the digest of job `job`.
    External {
        job: usize,
        size: u64,
    },
}

/// Counts of what a scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub directories: u64,
    pub regular_files: u64,
    pub inline_files: u64,
    pub external_files: u64,
    pub external_bytes: u64,
    pub symlinks: u64,
    pub devices: u64,
    pub fifos_sockets: u64,
    pub hardlinks: u64,
}

/// A scanned tree. Large files are numbered jobs; [`SourceTree::into_image`]
/// takes each job's digest and writes the composefs image.
pub struct SourceTree {
    pub(crate) fs: generic_tree::FileSystem<Pending>,
    pub(crate) jobs: usize,
    pub stats: TreeStats,
}

/// Called for every large file found: job number, its path in the tree
/// (relative, without a leading `/`), size, contents.
pub type Sink<'a> = dyn FnMut(usize, &Path, u64, FileData) -> Result<(), ImageError> + 'a;

impl SourceTree {
    pub(crate) fn new(root: Stat) -> Self {
        Self {
            fs: generic_tree::FileSystem::new(root),
            jobs: 0,
            stats: TreeStats::default(),
        }
    }

    /// How many large files (jobs) the scan found.
    pub fn job_count(&self) -> usize {
        self.jobs
    }

    /// Adds a regular file; large ones become a job handed to `sink`.
    pub(crate) fn regular(
        &mut self,
        path: &Path,
        stat: Stat,
        size: u64,
        small: impl FnOnce() -> Result<Vec<u8>, ImageError>,
        large: impl FnOnce() -> Result<FileData, ImageError>,
        sink: &mut Sink<'_>,
    ) -> Result<LeafId, ImageError> {
        self.stats.regular_files += 1;
        let content = if size <= super::INLINE_MAX {
            self.stats.inline_files += 1;
            let data = small()?;
            Pending::Inline(data.into_boxed_slice())
        } else {
            self.stats.external_files += 1;
            self.stats.external_bytes += size;
            let job = self.jobs;
            self.jobs += 1;
            sink(job, path, size, large()?)?;
            Pending::External { job, size }
        };
        Ok(self.fs.push_leaf(stat, LeafContent::Regular(content)))
    }

    pub(crate) fn leaf(&mut self, stat: Stat, content: LeafContent<Pending>) -> LeafId {
        match &content {
            LeafContent::Symlink(_) => self.stats.symlinks += 1,
            LeafContent::BlockDevice(_) | LeafContent::CharacterDevice(_) => {
                self.stats.devices += 1
            }
            LeafContent::Fifo | LeafContent::Socket => self.stats.fifos_sockets += 1,
            LeafContent::Regular(_) => self.stats.regular_files += 1,
        }
        self.fs.push_leaf(stat, content)
    }

    /// Counts the tree again from scratch (after whiteouts removed entries).
    pub(crate) fn recount(&mut self) {
        let mut stats = TreeStats::default();
        let mut seen = vec![false; self.fs.leaves.len()];
        let mut stack = vec![&self.fs.root];
        while let Some(dir) = stack.pop() {
            stats.directories += 1;
            for (_, inode) in dir.entries() {
                match inode {
                    Inode::Directory(d) => stack.push(d),
                    Inode::Leaf(id, _) => {
                        if std::mem::replace(&mut seen[id.0], true) {
                            stats.hardlinks += 1;
                            continue;
                        }
                        match &self.fs.leaves[id.0].content {
                            LeafContent::Regular(Pending::Inline(_)) => {
                                stats.regular_files += 1;
                                stats.inline_files += 1;
                            }
                            LeafContent::Regular(Pending::External { size, .. }) => {
                                stats.regular_files += 1;
                                stats.external_files += 1;
                                stats.external_bytes += size;
                            }
                            LeafContent::Symlink(_) => stats.symlinks += 1,
                            LeafContent::BlockDevice(_) | LeafContent::CharacterDevice(_) => {
                                stats.devices += 1
                            }
                            LeafContent::Fifo | LeafContent::Socket => stats.fifos_sockets += 1,
                        }
                    }
                }
            }
        }
        self.stats = stats;
    }

    /// Writes the image once every job has its digest (`digests[job]`).
    pub fn into_image(self, digests: &[Digest]) -> Result<Vec<u8>, ImageError> {
        if digests.len() != self.jobs {
            return Err(ImageError::Build(format!(
                "{} digests for {} large files",
                digests.len(),
                self.jobs
            )));
        }
        let fs = self
            .fs
            .try_map_regular(|p| -> Result<RegularFile<ObjectId>, ImageError> {
                Ok(match p {
                    Pending::Inline(data) => RegularFile::Inline(data.clone()),
                    Pending::External { job, size } => {
                        RegularFile::External(to_id(&digests[*job]), *size)
                    }
                })
            })?;
        write_image(fs)
    }
}

/// Splits an archive member path into normal components; refuses `..` and
/// anything else that could escape the root. An empty result is the root.
pub(crate) fn clean_components(path: &Path) -> Result<Vec<&OsStr>, String> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("path {} leaves the root directory", path.display()));
            }
        }
    }
    Ok(out)
}

/// The directory at `parts`, creating missing ones with `default` metadata
/// (archives may omit directory members).
pub(crate) fn ensure_dir<'a>(
    root: &'a mut generic_tree::Directory<Pending>,
    parts: &[&OsStr],
    default: &Stat,
    created: &mut u64,
) -> Result<&'a mut generic_tree::Directory<Pending>, String> {
    let mut dir = root;
    for (i, name) in parts.iter().enumerate() {
        let exists = match dir.lookup(name) {
            Some(Inode::Directory(_)) => true,
            Some(Inode::Leaf(..)) => {
                return Err(format!(
                    "{} is used as a directory but is not one",
                    parts[..=i]
                        .iter()
                        .map(|p| p.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/")
                ));
            }
            None => false,
        };
        if !exists {
            *created += 1;
            dir.insert(
                name,
                Inode::Directory(Box::new(generic_tree::Directory::new(default.clone()))),
            );
        }
        dir = dir.get_directory_mut(name).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// A `Stat` with no extended attributes.
pub(crate) fn stat(mode: u32, uid: u32, gid: u32, mtime: i64, nsec: u32) -> Stat {
    Stat {
        st_mode: mode & 0o7777,
        st_uid: uid,
        st_gid: gid,
        st_mtim_sec: mtime,
        st_mtim_nsec: nsec,
        xattrs: BTreeMap::new(),
    }
}
