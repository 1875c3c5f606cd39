//! Container images as bundle input: finding an image's manifest, config and
//! layers in an OCI layout directory, an OCI or docker archive, or podman's
//! local store, and reading each layer with its digests checked.
//!
//! Nothing here knows composefs: the layers go to
//! [`crate::image::scan_oci_layers`], which applies them to a tree.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

mod archive;
mod json;
mod layer;
mod storage;

pub use layer::LayerReader;

/// Largest index, manifest or `manifest.json` read (the registries' own limit is 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
/// Largest image config read.
pub const MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;
/// Most layers an image may have (containers/storage allows 127 in overlay).
pub const MAX_LAYERS: usize = 500;

/// The label whose value becomes the bundle version when `--version` is not given.
pub const LABEL_VERSION: &str = "org.opencontainers.image.version";
/// The label whose value becomes the bundle description when `--description` is not given.
pub const LABEL_DESCRIPTION: &str = "org.opencontainers.image.description";
/// The label whose value becomes the bundle build identifier when `--build` is not given.
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";

/// Where a container image comes from (the transports of containers/image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `oci:<dir>[:<tag>]`, an OCI image layout directory.
    Layout { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:<file>[:<tag>]`, an OCI image layout in a tar archive.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// `docker-archive:<file>[:<name:tag>]`, what `podman save` and `docker save` write.
    DockerArchive { file: PathBuf, name: Option<String> },
    /// `containers-storage:[<driver>@<root>+<runroot>]<image>`, podman's local store.
    Storage(String),
}

impl ImageRef {
    /// Parses a reference in containers/image's syntax.
    pub fn parse(s: &str) -> Result<Self, OciError> {
        let bad = |detail: &str| OciError::Reference {
            reference: s.to_owned(),
            detail: detail.to_owned(),
        };
        let (transport, rest) = s.split_once(':').ok_or_else(|| {
            bad("expected TRANSPORT:NAME with oci:, oci-archive:, docker-archive: or containers-storage:")
        })?;
        if rest.is_empty() {
            return Err(bad("the name after the transport is empty"));
        }
        // A path may not contain ':' in these transports (containers/image
        // splits at the first ':' after the path as well).
        let path_tag = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.split_once(':') {
                Some((p, t)) if !t.is_empty() => (PathBuf::from(p), Some(t.to_owned())),
                Some((p, _)) => (PathBuf::from(p), None),
                None => (PathBuf::from(rest), None),
            }
        };
        Ok(match transport {
            "oci" => {
                let (dir, tag) = path_tag(rest);
                ImageRef::Layout { dir, tag }
            }
            "oci-archive" => {
                let (file, tag) = path_tag(rest);
                ImageRef::OciArchive { file, tag }
            }
            "docker-archive" => {
                // The name part is itself NAME:TAG, so split only at the first ':'.
                let (file, name) = match rest.split_once(':') {
                    Some((p, n)) if !n.is_empty() => (PathBuf::from(p), Some(n.to_owned())),
                    Some((p, _)) => (PathBuf::from(p), None),
                    None => (PathBuf::from(rest), None),
                };
                ImageRef::DockerArchive { file, name }
            }
            "containers-storage" => ImageRef::Storage(rest.to_owned()),
            "docker" | "docker-daemon" | "dir" => {
                return Err(bad(&format!(
                    "transport {transport}: is not read by didymos (it works offline from local images); \
                     copy the image first, e.g. `skopeo copy {s} oci-archive:image.tar`"
                )));
            }
            other => {
                return Err(bad(&format!(
                    "unknown transport {other}:; use oci:, oci-archive:, docker-archive: or containers-storage:"
                )));
            }
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            ImageRef::Layout { dir, tag: t } => write!(f, "oci:{}{}", dir.display(), tag(t)),
            ImageRef::OciArchive { file, tag: t } => {
                write!(f, "oci-archive:{}{}", file.display(), tag(t))
            }
            ImageRef::DockerArchive { file, name } => {
                write!(f, "docker-archive:{}{}", file.display(), tag(name))
            }
            ImageRef::Storage(s) => write!(f, "containers-storage:{s}"),
        }
    }
}

/// Errors finding or reading an image. Each names the reference and the
/// blob or member concerned.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("image reference {reference:?}: {detail}")]
    Reference { reference: String, detail: String },
    #[error("{image}: {detail}")]
    Image { image: String, detail: String },
    #[error("{image}: cannot read {what}: {source}")]
    Io {
        image: String,
        what: String,
        source: io::Error,
    },
}

/// A SHA-256 content digest as OCI writes it (`sha256:<64 hex>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentDigest(pub [u8; 32]);

impl ContentDigest {
    /// Parses `sha256:<64 lower-case hex>`; other algorithms are refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            format!("digest {s:?} is not sha256:<hex> (only SHA-256 digests are supported)")
        })?;
        let mut out = [0u8; 32];
        if hex.len() != 64
            || hex.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(hex, &mut out).is_err()
        {
            return Err(format!(
                "digest {s:?} is not sha256:<64 lower-case hex digits>"
            ));
        }
        Ok(Self(out))
    }

    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `sha256:` and the first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex()[..12])
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The layer media types didymos reads; anything else is refused by name.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// Where a blob's bytes are: a file, or a range of an archive.
#[derive(Debug, Clone)]
pub(crate) struct BlobLocation {
    pub file: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl BlobLocation {
    pub(crate) fn whole(file: PathBuf, len: u64) -> Self {
        Self {
            file,
            offset: 0,
            len,
        }
    }

    /// A reader of exactly this blob's bytes.
    pub(crate) fn open(&self) -> io::Result<io::Take<File>> {
        let mut f = File::open(&self.file)?;
        f.seek(SeekFrom::Start(self.offset))?;
        Ok(f.take(self.len))
    }

    /// Reads a small blob (JSON) whole, after checking its length.
    pub(crate) fn read_small(&self, limit: u64) -> io::Result<Vec<u8>> {
        if self.len > limit {
            return Err(io::Error::other(format!(
                "{} bytes, more than the limit of {limit}",
                self.len
            )));
        }
        let mut buf = Vec::with_capacity(self.len as usize);
        self.open()?.read_to_end(&mut buf)?;
        if buf.len() as u64 != self.len {
            return Err(io::Error::other(format!(
                "{} bytes where {} were expected",
                buf.len(),
                self.len
            )));
        }
        Ok(buf)
    }
}

/// One layer of an image, in application order.
#[derive(Debug, Clone)]
pub struct Layer {
    /// 1-based position.
    pub index: usize,
    pub count: usize,
    /// The blob's digest as the manifest names it.
    pub digest: ContentDigest,
    /// The digest of the uncompressed tar stream (the config's `diff_ids`).
    pub diff_id: ContentDigest,
    pub media_type: String,
    pub compression: Compression,
    pub size: u64,
    pub(crate) blob: BlobLocation,
}

impl Layer {
    /// `layer 2/4 (sha256:0123456789ab)`, how messages name a layer.
    pub fn label(&self) -> String {
        format!(
            "layer {}/{} ({})",
            self.index,
            self.count,
            self.digest.short()
        )
    }

    /// Opens the layer as a tar stream whose digests are checked at the end.
    pub fn open(&self) -> Result<LayerReader, String> {
        LayerReader::open(self)
    }
}

/// An image found and checked as far as its manifest and config: its
/// layers are ready to be read.
#[derive(Debug)]
pub struct OciImage {
    pub reference: String,
    pub manifest_digest: Option<ContentDigest>,
    pub config_digest: ContentDigest,
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub layers: Vec<Layer>,
    /// A copy of the image made for reading (containers-storage:); removed on drop.
    _scratch: Option<tempfile::TempDir>,
}

impl OciImage {
    /// Finds the image `r` names. `scratch` is where a copy goes when the
    /// source cannot be read in place (containers-storage:).
    pub fn open(r: &ImageRef, scratch: &Path) -> Result<OciImage, OciError> {
        let reference = r.to_string();
        match r {
            ImageRef::Layout { dir, tag } => {
                let blobs = archive::LayoutDir::open(dir).map_err(|e| OciError::Image {
                    image: reference.clone(),
                    detail: e,
                })?;
                json::from_layout(&reference, &blobs, tag.as_deref(), None)
            }
            ImageRef::OciArchive { file, tag } => {
                let ar = archive::TarIndex::open(file).map_err(|e| OciError::Image {
                    image: reference.clone(),
                    detail: e,
                })?;
                json::from_layout(&reference, &ar, tag.as_deref(), None)
            }
            ImageRef::DockerArchive { file, name } => {
                let ar = archive::TarIndex::open(file).map_err(|e| OciError::Image {
                    image: reference.clone(),
                    detail: e,
                })?;
                json::from_docker_archive(&reference, &ar, name.as_deref())
            }
            ImageRef::Storage(name) => {
                let copy = storage::copy_out(name, scratch).map_err(|e| OciError::Image {
                    image: reference.clone(),
                    detail: e,
                })?;
                let dir = copy.path().join("layout");
                let blobs = archive::LayoutDir::open(&dir).map_err(|e| OciError::Image {
                    image: reference.clone(),
                    detail: e,
                })?;
                json::from_layout(&reference, &blobs, None, Some(copy))
            }
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Where blobs are found by name: a layout directory or an archive.
pub(crate) trait BlobStore {
    /// The blob at `path` relative to the layout or archive root.
    fn locate(&self, path: &str) -> Option<BlobLocation>;
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let p = |s: &str| ImageRef::parse(s);
        assert_eq!(
            p("oci:/srv/layout:v2").unwrap(),
            ImageRef::Layout {
                dir: "/srv/layout".into(),
                tag: Some("v2".into())
            }
        );
        assert_eq!(
            p("oci:layout").unwrap(),
            ImageRef::Layout {
                dir: "layout".into(),
                tag: None
            }
        );
        assert_eq!(
            p("oci-archive:img.tar").unwrap(),
            ImageRef::OciArchive {
                file: "img.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            p("docker-archive:img.tar:localhost/os:1.2").unwrap(),
            ImageRef::DockerArchive {
                file: "img.tar".into(),
                name: Some("localhost/os:1.2".into())
            }
        );
        assert_eq!(
            p("containers-storage:[overlay@/r+/rr]localhost/os:1").unwrap(),
            ImageRef::Storage("[overlay@/r+/rr]localhost/os:1".into())
        );
        for bad in ["", "oci:", "layout", "docker://quay.io/x", "ftp:x"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let e = p("docker://quay.io/x").unwrap_err().to_string();
        assert!(e.contains("offline") && e.contains("skopeo copy"), "{e}");
        for s in [
            "oci:/srv/layout:v2",
            "docker-archive:img.tar:localhost/os:1.2",
            "containers-storage:localhost/os:1",
        ] {
            assert_eq!(p(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn content_digests() {
        let hex = "a".repeat(64);
        assert!(ContentDigest::parse(&format!("sha256:{hex}")).is_ok());
        assert!(ContentDigest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(ContentDigest::parse(&format!("sha512:{hex}")).is_err());
        assert!(ContentDigest::parse("sha256:abc").is_err());
        assert_eq!(
            ContentDigest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn media_types() {
        use Compression::*;
        let table = [
            ("application/vnd.oci.image.layer.v1.tar", Some(None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Gzip),
            ),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", Option::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                Option::None,
            ),
        ];
        for (mt, want) in table {
            assert_eq!(Compression::from_media_type(mt), want, "{mt}");
        }
    }
}
