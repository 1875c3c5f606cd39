//! Scanning a root filesystem given as a tar archive (plain, gzip or zstd).
//!
//! Tar carries ownership, modes, mtimes, device numbers and extended
//! attributes, so a builder needs no root privileges. Extended attributes
//! come as PAX records: `SCHILY.xattr.<name>=<raw value>` (GNU tar
//! `--xattrs`, with `%` and `=` in names written as `%25` and `%3D`) or
//! `LIBARCHIVE.xattr.<%-encoded name>=<base64 value>` (bsdtar, which writes
//! both kinds and %-encodes more characters in its SCHILY names, so its own
//! records win when present).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use composefs::generic_tree::{Inode, LeafContent, Stat};
use tar::EntryType;

use super::tree::{Sink, SourceTree, clean_components, ensure_dir, stat};
use super::{FileData, ImageError};

/// Members up to this size are held in memory; larger ones are spooled.
const IN_MEMORY_MAX: u64 = 8 * 1024 * 1024;

/// How a tar archive is compressed, recognized by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Gzip,
    Zstd,
}

impl TarCompression {
    pub fn detect(magic: &[u8]) -> Self {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Scans the tar archive at `path`; large members go to `sink` as they are read.
pub fn scan_tar(path: &Path, sink: &mut Sink<'_>) -> Result<SourceTree, ImageError> {
    let mut file = File::open(path).map_err(ImageError::io(path))?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(ImageError::io(path))?;
    let file = BufReader::with_capacity(1 << 20, File::open(path).map_err(ImageError::io(path))?);
    let reader: Box<dyn Read> = match TarCompression::detect(&magic[..n]) {
        TarCompression::None => Box::new(file),
        TarCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        TarCompression::Zstd => {
            Box::new(zstd::Decoder::with_buffer(file).map_err(ImageError::io(path))?)
        }
    };
    scan_tar_reader(reader, path, sink)
}

fn tar_err(archive: &Path, member: &str, detail: impl std::fmt::Display) -> ImageError {
    ImageError::Tar {
        archive: archive.to_owned(),
        detail: if member.is_empty() {
            detail.to_string()
        } else {
            format!("member {member}: {detail}")
        },
    }
}

fn scan_tar_reader(
    reader: Box<dyn Read>,
    archive: &Path,
    sink: &mut Sink<'_>,
) -> Result<SourceTree, ImageError> {
    // Directories the archive never lists get this metadata.
    let implicit = stat(0o755, 0, 0, 0, 0);
    let mut tree = SourceTree::new(implicit.clone());
    let mut ar = tar::Archive::new(reader);
    let entries = ar.entries().map_err(|e| tar_err(archive, "", e))?;
    for (members, entry) in entries.enumerate() {
        let mut entry =
            entry.map_err(|e| tar_err(archive, "", format!("after {members} members: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| tar_err(archive, "", e))?
            .into_owned();
        let name = raw_path.display().to_string();
        let err = |d: &dyn std::fmt::Display| tar_err(archive, &name, d);
        let parts = clean_components(&raw_path).map_err(|e| err(&e))?;
        let header = entry.header().clone();
        let kind = header.entry_type();
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
        if kind.is_dir() {
            tree.stats.directories += 1;
            if parts.is_empty() {
                tree.fs.root.stat = st;
            } else {
                let dir = ensure_dir(
                    &mut tree.fs.root,
                    &parts,
                    &implicit,
                    &mut tree.stats.directories,
                )
                .map_err(|e| err(&e))?;
                dir.stat = st;
            }
            continue;
        }
        let Some((leaf_name, parent)) = parts.split_last() else {
            return Err(err(&"a non-directory member names the root directory"));
        };
        let leaf_name: &OsStr = leaf_name;
        let id = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let rel: std::path::PathBuf = parts.iter().collect();
                let size = entry.size();
                let data = read_member(&mut entry, size).map_err(|e| err(&e))?;
                let actual = match &data {
                    FileData::Bytes(b) => b.len() as u64,
                    FileData::Temp(f) => f.metadata().map_err(|e| err(&e))?.len(),
                    FileData::Path(_) => unreachable!("tar members are never paths"),
                };
                match data {
                    FileData::Bytes(b) if actual <= super::INLINE_MAX => {
                        tree.regular(&rel, st, actual, || Ok(b), || unreachable!(), sink)?
                    }
                    data => tree.regular(&rel, st, actual, || unreachable!(), || Ok(data), sink)?,
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| err(&e))?
                    .ok_or_else(|| err(&"hard link without a target"))?
                    .into_owned();
                let tparts = clean_components(&target).map_err(|e| err(&e))?;
                let (tname, tparent) = tparts
                    .split_last()
                    .ok_or_else(|| err(&"hard link to the root directory"))?;
                let mut none = 0;
                let tdir = ensure_dir(&mut tree.fs.root, tparent, &implicit, &mut none)
                    .ok()
                    .filter(|_| none == 0)
                    .ok_or_else(|| {
                        err(&format!(
                            "hard link target {} is not in the archive before it",
                            target.display()
                        ))
                    })?;
                let id = tdir.leaf_id(tname).map_err(|_| {
                    err(&format!(
                        "hard link target {} is not an earlier file of the archive",
                        target.display()
                    ))
                })?;
                tree.stats.hardlinks += 1;
                let dir = ensure_dir(
                    &mut tree.fs.root,
                    parent,
                    &implicit,
                    &mut tree.stats.directories,
                )
                .map_err(|e| err(&e))?;
                dir.insert(leaf_name, Inode::leaf(id));
                continue;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| err(&"symbolic link without a target"))?
                    .into_owned();
                tree.leaf(
                    st,
                    LeafContent::Symlink(Box::from(OsStr::from_bytes(&target))),
                )
            }
            EntryType::Char | EntryType::Block => {
                let major = header.device_major().map_err(|e| err(&e))?.unwrap_or(0);
                let minor = header.device_minor().map_err(|e| err(&e))?.unwrap_or(0);
                let dev = rustix::fs::makedev(major, minor);
                let content = if kind == EntryType::Char {
                    LeafContent::CharacterDevice(dev)
                } else {
                    LeafContent::BlockDevice(dev)
                };
                tree.leaf(st, content)
            }
            EntryType::Fifo => tree.leaf(st, LeafContent::Fifo),
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            other => {
                return Err(err(&format!("unsupported member type {other:?}")));
            }
        };
        let dir = ensure_dir(
            &mut tree.fs.root,
            parent,
            &implicit,
            &mut tree.stats.directories,
        )
        .map_err(|e| err(&e))?;
        if matches!(dir.lookup(leaf_name), Some(Inode::Directory(_))) {
            return Err(err(&"replaces a directory with a file"));
        }
        dir.insert(leaf_name, Inode::leaf(id));
    }
    // Leaves replaced by later members of the same name are dropped.
    tree.fs.compact();
    tree.stats.directories += 1;
    Ok(tree)
}

pub(crate) fn id32(v: u64, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} {v} does not fit in 32 bits"))
}

fn apply_pax(st: &mut Stat, pax: tar::PaxExtensions<'_>) -> Result<(), String> {
    let mut libarchive_xattrs = Vec::new();
    for ext in pax {
        let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
        let key = ext.key().map_err(|e| format!("bad PAX key: {e}"))?;
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            // GNU tar writes '%' and '=' in names as %25 and %3D.
            let name = name.replace("%3D", "=").replace("%25", "%");
            st.xattrs
                .insert(Box::from(OsStr::new(&name)), Box::from(ext.value_bytes()));
            continue;
        }
        if let Some(encoded) = key.strip_prefix("LIBARCHIVE.xattr.") {
            let name = percent_decode(encoded)
                .ok_or_else(|| format!("PAX {key}: bad %-encoding in the name"))?;
            let value = base64_decode(ext.value_bytes())
                .ok_or_else(|| format!("PAX {key}: the value is not base64"))?;
            libarchive_xattrs.push((name, value));
            continue;
        }
        let value = || ext.value().map_err(|e| format!("PAX {key}: {e}"));
        match key {
            "uid" => st.st_uid = value()?.parse().map_err(|e| format!("PAX uid: {e}"))?,
            "gid" => st.st_gid = value()?.parse().map_err(|e| format!("PAX gid: {e}"))?,
            "mtime" => {
                let (sec, nsec) = parse_pax_time(value()?)
                    .ok_or_else(|| format!("PAX mtime {:?} is not a time", ext.value()))?;
                st.st_mtim_sec = sec;
                st.st_mtim_nsec = nsec;
            }
            _ => {}
        }
    }
    if !libarchive_xattrs.is_empty() {
        st.xattrs.clear();
        for (name, value) in libarchive_xattrs {
            st.xattrs.insert(
                Box::from(OsStr::from_bytes(&name)),
                value.into_boxed_slice(),
            );
        }
    }
    Ok(())
}

/// `user.odd%25name` → `user.odd%name`.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// Standard base64, with or without `=` padding (libarchive writes none).
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let body = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= digit(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// `123`, `123.5`, `-5.25` → (seconds, nanoseconds).
fn parse_pax_time(s: &str) -> Option<(i64, u32)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if sec < 0 && nsec > 0 {
        Some((sec.checked_sub(1)?, 1_000_000_000 - nsec))
    } else {
        Some((sec, nsec))
    }
}

/// Reads a member of `size` bytes, in memory or spooled to a temporary file.
/// The tar reader stops at the end of the archive without an error; a
/// member cut short is one here.
pub(crate) fn read_member(entry: &mut dyn Read, size: u64) -> io::Result<FileData> {
    let data = read_member_data(entry, size)?;
    let actual = match &data {
        FileData::Bytes(b) => b.len() as u64,
        FileData::Temp(f) => f.metadata()?.len(),
        FileData::Path(_) => unreachable!("tar members are never paths"),
    };
    if actual != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the archive ends {actual} bytes into this {size}-byte member (truncated?)"),
        ));
    }
    Ok(data)
}

fn read_member_data(entry: &mut dyn Read, size: u64) -> io::Result<FileData> {
    if size <= IN_MEMORY_MAX {
        let mut buf = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut buf)?;
        if buf.len() as u64 <= IN_MEMORY_MAX {
            return Ok(FileData::Bytes(buf));
        }
        let mut f = tempfile::tempfile()?;
        f.write_all(&buf)?;
        io::copy(entry, &mut f)?;
        return Ok(FileData::Temp(f));
    }
    let mut f = tempfile::tempfile()?;
    io::copy(entry, &mut f)?;
    Ok(FileData::Temp(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let table = [
            ("12", Some((12, 0))),
            ("12.5", Some((12, 500_000_000))),
            ("12.000000001", Some((12, 1))),
            ("-1.5", Some((-2, 500_000_000))),
            ("x", None),
            ("1.x", None),
            // Below the smallest time there is (it overflowed).
            ("-9223372036854775808.5", None),
            ("-9223372036854775808", Some((i64::MIN, 0))),
        ];
        for (s, want) in table {
            assert_eq!(parse_pax_time(s), want, "{s}");
        }
    }

    #[test]
    fn a_member_cut_short_is_an_error() {
        // Members larger than IN_MEMORY_MAX are spooled; one that claims to
        // be and is cut short within the inline size used to hit an
        // `unreachable!`. Every truncated member is refused.
        for (claimed, present) in [(IN_MEMORY_MAX + 1, 10), (IN_MEMORY_MAX + 1, 100), (500, 10)] {
            let mut header = tar::Header::new_ustar();
            header.set_path("etc/big").unwrap();
            header.set_size(claimed);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            let mut archive = header.as_bytes().to_vec();
            archive.extend(std::iter::repeat_n(b'x', present));
            let err = scan_tar_reader(
                Box::new(io::Cursor::new(archive)),
                Path::new("cut.tar"),
                &mut |_, _, _, _| Ok(()),
            )
            .err()
            .expect("a truncated archive is refused");
            assert!(
                err.to_string().contains(&format!(
                    "member etc/big: the archive ends {present} bytes into this {claimed}-byte member"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn libarchive_xattr_encodings() {
        // What bsdtar 3.6 writes for "hé=llo", [0, 0xff, 0x10] and "".
        assert_eq!(base64_decode(b"aMOpPWxsbw").unwrap(), "hé=llo".as_bytes());
        assert_eq!(base64_decode(b"AP8Q").unwrap(), [0, 0xff, 0x10]);
        assert_eq!(base64_decode(b"aMOpPWxsbw==").unwrap(), "hé=llo".as_bytes());
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert_eq!(base64_decode(b"AP8Q?"), None);
        assert_eq!(base64_decode(b"A"), None);
        assert_eq!(percent_decode("user.odd%25name").unwrap(), b"user.odd%name");
        assert_eq!(percent_decode("a%3Db%0a").unwrap(), b"a=b\n");
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }

    #[test]
    fn compression_detection() {
        assert_eq!(
            TarCompression::detect(&[0x1f, 0x8b, 8, 0]),
            TarCompression::Gzip
        );
        assert_eq!(
            TarCompression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            TarCompression::Zstd
        );
        assert_eq!(TarCompression::detect(b"ustar"), TarCompression::None);
        assert_eq!(TarCompression::detect(&[]), TarCompression::None);
    }
}
