//! Scanning a root filesystem given as a directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use composefs::generic_tree::{self, Inode, LeafContent, LeafId, Stat};

use super::tree::{Pending, Sink, SourceTree, stat};
use super::{FileData, ImageError};

/// Largest extended attribute value read (the kernel's own limit).
const MAX_XATTR_VALUE: usize = 64 * 1024;

/// Scans `root` (not following symlinks); large files go to `sink` as they are found.
pub fn scan_directory(root: &Path, sink: &mut Sink<'_>) -> Result<SourceTree, ImageError> {
    let meta = fs::symlink_metadata(root).map_err(ImageError::io(root))?;
    if !meta.is_dir() {
        return Err(ImageError::Unsupported {
            path: root.to_owned(),
            detail: "is not a directory".into(),
        });
    }
    let mut tree = SourceTree::new(read_stat(root, &meta)?);
    let mut scanner = Scanner {
        root: root.to_owned(),
        links: HashMap::new(),
    };
    let mut top = generic_tree::Directory::new(read_stat(root, &meta)?);
    scanner.directory(root, &mut top, &mut tree, sink)?;
    tree.stats.directories += 1;
    tree.fs.root = top;
    Ok(tree)
}

struct Scanner {
    /// The directory scanned (paths handed to the sink are relative to it).
    root: PathBuf,
    /// (device, inode) of files seen with more than one link.
    links: HashMap<(u64, u64), LeafId>,
}

impl Scanner {
    fn directory(
        &mut self,
        path: &Path,
        dir: &mut generic_tree::Directory<Pending>,
        tree: &mut SourceTree,
        sink: &mut Sink<'_>,
    ) -> Result<(), ImageError> {
        let mut names: Vec<_> = fs::read_dir(path)
            .map_err(ImageError::io(path))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(ImageError::io(path))?;
        // A fixed order keeps job numbers, and so the bundle, reproducible.
        names.sort();
        for name in names {
            let child = path.join(&name);
            let meta = fs::symlink_metadata(&child).map_err(ImageError::io(&child))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                let mut sub = generic_tree::Directory::new(read_stat(&child, &meta)?);
                self.directory(&child, &mut sub, tree, sink)?;
                tree.stats.directories += 1;
                dir.insert(&name, Inode::Directory(Box::new(sub)));
                continue;
            }
            let key = (meta.dev(), meta.ino());
            if let Some(id) = self.links.get(&key).filter(|_| meta.nlink() > 1) {
                tree.stats.hardlinks += 1;
                dir.insert(&name, Inode::leaf(*id));
                continue;
            }
            let st = read_stat(&child, &meta)?;
            let id = if ft.is_file() {
                let size = meta.len();
                tree.regular(
                    child.strip_prefix(&self.root).unwrap_or(&child),
                    st,
                    size,
                    || read_small(&child, size),
                    || Ok(FileData::Path(child.clone())),
                    sink,
                )?
            } else {
                let content = if ft.is_symlink() {
                    let target = fs::read_link(&child).map_err(ImageError::io(&child))?;
                    LeafContent::Symlink(Box::from(target.as_os_str()))
                } else if ft.is_block_device() {
                    LeafContent::BlockDevice(meta.rdev())
                } else if ft.is_char_device() {
                    LeafContent::CharacterDevice(meta.rdev())
                } else if ft.is_fifo() {
                    LeafContent::Fifo
                } else if ft.is_socket() {
                    LeafContent::Socket
                } else {
                    return Err(ImageError::Unsupported {
                        path: child,
                        detail: "has an unknown file type".into(),
                    });
                };
                tree.leaf(st, content)
            };
            if meta.nlink() > 1 {
                self.links.insert(key, id);
            }
            dir.insert(&name, Inode::leaf(id));
        }
        Ok(())
    }
}

fn read_small(path: &Path, size: u64) -> Result<Vec<u8>, ImageError> {
    let mut buf = Vec::with_capacity(size as usize);
    fs::File::open(path)
        .and_then(|f| f.take(size + 1).read_to_end(&mut buf))
        .map_err(ImageError::io(path))?;
    if buf.len() as u64 != size {
        return Err(ImageError::Unsupported {
            path: path.to_owned(),
            detail: format!(
                "changed size while being read ({size} then {} bytes)",
                buf.len()
            ),
        });
    }
    Ok(buf)
}

fn read_stat(path: &Path, meta: &fs::Metadata) -> Result<Stat, ImageError> {
    let mut st = stat(
        meta.mode(),
        meta.uid(),
        meta.gid(),
        meta.mtime(),
        meta.mtime_nsec().clamp(0, 999_999_999) as u32,
    );
    let names = xattr::list(path).map_err(ImageError::io(path))?;
    for name in names {
        if let Some(value) = xattr::get(path, &name).map_err(ImageError::io(path))? {
            if value.len() > MAX_XATTR_VALUE {
                return Err(ImageError::Unsupported {
                    path: path.to_owned(),
                    detail: format!(
                        "extended attribute {name:?} is larger than {MAX_XATTR_VALUE} bytes"
                    ),
                });
            }
            st.xattrs
                .insert(Box::from(OsStr::new(&name)), value.into_boxed_slice());
        }
    }
    Ok(st)
}
