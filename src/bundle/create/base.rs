//! The bases of a delta bundle on the build host: which objects the device
//! already holds (left out of the bundle), and where the changed files' delta
//! sources come from.
//!
//! A base is an earlier bundle, a composefs image with its objects beside it
//! (`bundle extract`'s `DIR/image.cfs` + `DIR/objects/`, or a store's
//! `images/<digest>` + `objects/`), or such a directory itself. A bare image
//! without objects still names what the device holds; it only gives no
//! delta sources.
//!
//! A changed file's source is the base's object at the same path, else at a
//! path that differs only in its numbers (`modules/6.1.0-47-amd64/…` for
//! `modules/6.1.0-50-amd64/…`, `libfoo.so.1.2.3` for `libfoo.so.1.2.4`; of
//! several, the one closest in size). Every source is read back and checked
//! against its digest before a delta is made from it: a delta made against
//! other bytes would be refused by every device.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::super::delta::{NoSources, SourceObject, Sources};
use super::super::format::{self, MAX_IMAGE_SIZE};
use super::super::{BaseBundle, BaseImages, Bundle, BundleError, ManifestBase};
use super::CreateError;
use crate::Digest;
use crate::image::{self, ImageTree, VerityHasher};

/// Sources up to this size are decoded into memory; larger ones into an
/// unnamed temporary file.
const IN_MEMORY_SOURCE: u64 = 32 << 20;

enum Holder {
    Bundle(Box<BaseBundle>),
    /// A `objects/xx/<62 hex>` directory.
    Objects(PathBuf),
    /// An image without objects: names what the device holds, gives no sources.
    None,
}

pub struct Bases {
    pub manifest: Vec<ManifestBase>,
    /// Every object a base image references.
    pub objects: HashSet<Digest>,
    by_path: HashMap<PathBuf, (Digest, u64)>,
    by_pattern: HashMap<String, Vec<(PathBuf, Digest, u64)>>,
    holders: Vec<Holder>,
    /// Each base's image, by digest: the base of the new image's delta,
    /// and of a base bundle's own image when that is a delta.
    pub images: Vec<(Digest, Vec<u8>)>,
    tmp_dir: PathBuf,
}

/// A path with each run of digits replaced by `#`.
pub fn version_pattern(path: &Path) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in path.to_string_lossy().chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

impl Bases {
    pub fn load(paths: &[PathBuf], tmp_dir: &Path) -> Result<Bases, CreateError> {
        let mut bases = Bases {
            manifest: Vec::new(),
            objects: HashSet::new(),
            by_path: HashMap::new(),
            by_pattern: HashMap::new(),
            holders: Vec::new(),
            images: Vec::new(),
            tmp_dir: tmp_dir.to_owned(),
        };
        // A base bundle whose image is itself a delta (a bundle built
        // against an older one) is read once the base it names is loaded:
        // in any order the bases are given.
        let mut pending: Vec<&PathBuf> = paths.iter().collect();
        while !pending.is_empty() {
            let mut waiting = Vec::new();
            let mut first_wait = None;
            for path in pending.iter().copied() {
                let err = |detail: String| CreateError::Base {
                    path: path.clone(),
                    detail,
                };
                let (image, version, holder) = match open_base(path, &bases.images) {
                    Ok(opened) => opened,
                    Err(OpenError::NeedsBase(e)) => {
                        first_wait.get_or_insert((path, e));
                        waiting.push(path);
                        continue;
                    }
                    Err(OpenError::Other(e)) => return Err(err(e)),
                };
                bases.add(image, version, holder).map_err(err)?;
            }
            if waiting.len() == pending.len() {
                let (path, e) = first_wait.expect("something is waiting");
                return Err(CreateError::Base {
                    path: path.clone(),
                    detail: format!("{e}: give that base too (another --base)"),
                });
            }
            pending = waiting;
        }
        Ok(bases)
    }

    fn add(&mut self, image: Vec<u8>, version: String, holder: Holder) -> Result<(), String> {
        let digest = image::digest_bytes(&image);
        let tree = ImageTree::parse(&image)
            .map_err(|e| format!("neither a bundle nor a composefs image: {e}"))?;
        for (p, d, size) in tree.objects() {
            self.objects.insert(d);
            self.by_pattern
                .entry(version_pattern(&p))
                .or_default()
                .push((p.clone(), d, size));
            self.by_path.entry(p).or_insert((d, size));
        }
        self.holders.push(holder);
        self.manifest.push(ManifestBase {
            image: digest,
            version,
        });
        self.images.push((digest, image));
        Ok(())
    }

    /// Whether any base can give delta sources.
    pub fn has_sources(&self) -> bool {
        self.holders.iter().any(|h| !matches!(h, Holder::None))
    }

    /// The source for a changed file at `path` of `size` bytes, if a base
    /// has one.
    pub fn candidate(&self, path: &Path, size: u64) -> Option<Digest> {
        if let Some((d, _)) = self.by_path.get(path) {
            return Some(*d);
        }
        let same = self.by_pattern.get(&version_pattern(path))?;
        same.iter()
            .min_by_key(|(p, _, s)| (s.abs_diff(size), p.clone()))
            .map(|(_, d, _)| *d)
    }

    /// Reads a source object, checked against its digest.
    fn read_source(&self, digest: &Digest) -> io::Result<Option<Box<dyn SourceObject>>> {
        for holder in &self.holders {
            match holder {
                Holder::None => {}
                Holder::Objects(dir) => {
                    let p = dir.join(digest.to_object_path().strip_prefix("objects").unwrap());
                    let mut f = match File::open(&p) {
                        Ok(f) => f,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    let actual = image::digest_reader(&mut f)?;
                    if actual != *digest {
                        return Err(io::Error::other(format!(
                            "base object {} has digest {actual}: the base is damaged",
                            p.display()
                        )));
                    }
                    return Ok(Some(Box::new(f)));
                }
                Holder::Bundle(b) => {
                    let Some(entry) = b.entry(digest) else {
                        continue;
                    };
                    if entry.source.is_some() {
                        // A delta of the base bundle itself: its source is
                        // in the base's own base, which is not at hand.
                        continue;
                    }
                    let entry = entry.clone();
                    if entry.size <= IN_MEMORY_SOURCE {
                        let mut v = Vec::with_capacity(entry.size as usize);
                        b.copy_object(&entry, &NoSources, &mut v)
                            .map_err(io::Error::other)?;
                        return Ok(Some(Box::new(v)));
                    }
                    let mut f = tempfile::tempfile_in(&self.tmp_dir)?;
                    {
                        let mut w = io::BufWriter::new(&mut f);
                        b.copy_object(&entry, &NoSources, &mut w)
                            .map_err(io::Error::other)?;
                        w.flush()?;
                    }
                    return Ok(Some(Box::new(f)));
                }
            }
        }
        Ok(None)
    }
}

impl Sources for Bases {
    fn open(&self, digest: &Digest) -> io::Result<Option<Box<dyn SourceObject>>> {
        self.read_source(digest)
    }
}

impl BaseImages for Bases {
    fn base_image(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.images.base_image(digest)
    }
}

enum OpenError {
    /// A base bundle's image is a delta against an image not loaded yet.
    NeedsBase(String),
    Other(String),
}

impl From<String> for OpenError {
    fn from(e: String) -> Self {
        OpenError::Other(e)
    }
}

/// Opens one `--base`: its image, version and where its objects are (a
/// base bundle's image decoded against `images` if it is a delta).
fn open_base(path: &Path, images: &dyn BaseImages) -> Result<(Vec<u8>, String, Holder), OpenError> {
    let image_path = if path.is_dir() {
        path.join("image.cfs")
    } else {
        path.to_owned()
    };
    let mut magic = [0u8; 8];
    let mut f = File::open(&image_path).map_err(|e| format!("{}: {e}", image_path.display()))?;
    let n = f.read(&mut magic).map_err(|e| e.to_string())?;
    if magic[..n] == format::MAGIC {
        let b = Bundle::open(path).map_err(|e| e.to_string())?;
        let base = b.into_base().map_err(|e| e.to_string())?;
        let image = base.read_image(images).map_err(|e| match e {
            BundleError::ImageBaseMissing { base } => {
                OpenError::NeedsBase(format!("its image is a delta against image {base}"))
            }
            other => OpenError::Other(other.to_string()),
        })?;
        let version = base.manifest().version.clone();
        return Ok((image, version, Holder::Bundle(Box::new(base))));
    }
    let image =
        crate::util::read_bounded(&image_path, MAX_IMAGE_SIZE).map_err(|e| e.to_string())?;
    // `bundle extract`'s layout (objects beside the image), or a store's
    // (images/ and objects/ side by side).
    let dir = image_path.parent().unwrap_or(Path::new("."));
    let holder = [dir.join("objects"), dir.join("../objects")]
        .into_iter()
        .find(|p| p.is_dir())
        .map_or(Holder::None, Holder::Objects);
    Ok((image, String::new(), holder))
}

/// Digest-checked reading, for the target file as a delta is made from it.
pub struct Checked<R> {
    pub inner: R,
    pub hasher: VerityHasher,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_patterns() {
        let p = |s: &str| version_pattern(Path::new(s));
        assert_eq!(
            p("usr/lib/modules/6.1.0-47-amd64/kernel/fs/ext4.ko"),
            p("usr/lib/modules/6.1.0-50-amd64/kernel/fs/ext4.ko")
        );
        assert_eq!(p("usr/lib/libfoo.so.1.2.3"), "usr/lib/libfoo.so.#.#.#");
        assert_ne!(p("usr/lib/libfoo.so.1"), p("usr/lib/libbar.so.1"));
    }
}
