//! The manifest: what the signature covers. TOML text.

use crate::Digest;

/// The manifest format this build writes for a bundle without raw images
/// (readable by every didymos).
pub const MANIFEST_FORMAT: u32 = 1;
/// The manifest format of a bundle that carries raw images (`[[raw]]`): a
/// reader that predates them refuses it rather than install half of it.
pub const MANIFEST_FORMAT_RAW: u32 = 2;
/// The manifest format of a bundle with a `security-version` above 0: a
/// reader that predates the anti-rollback floor refuses it rather than
/// install it without enforcing the floor.
pub const MANIFEST_FORMAT_SECURITY: u32 = 3;
/// The newest manifest format this build reads.
pub const MAX_MANIFEST_FORMAT: u32 = MANIFEST_FORMAT_SECURITY;
/// Most raw images one bundle may carry.
pub const MAX_RAW_IMAGES: usize = 64;

/// The manifest: what the signature covers. Serialized as TOML.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Bundle format version.
    pub format: u32,
    pub compatible: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub build: String,
    /// RFC 3339 creation time (UTC).
    pub created: String,
    /// Anti-rollback: a device refuses bundles below the highest security
    /// version it has booted and marked good. 0 (absent) for bundles that
    /// raise nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub security_version: u64,
    pub image: ManifestImage,
    pub objects: ManifestObjects,
    /// For delta bundles: the images whose objects this bundle leaves out.
    #[serde(default, rename = "base", skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<ManifestBase>,
    /// Raw images (firmware, bootloader) for `raw` slots, one per slot class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw: Vec<ManifestRaw>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestImage {
    /// fs-verity digest of the composefs image.
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestObjects {
    /// Objects carried in this bundle.
    pub count: u64,
    /// Their total size once decoded.
    pub size: u64,
    /// Their total size as stored in the bundle.
    pub stored_size: u64,
    /// Objects the image references (carried or not).
    pub referenced: u64,
    /// SHA-256 of the object index region.
    pub index_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestBase {
    pub image: Digest,
    #[serde(default)]
    pub version: String,
}

impl std::fmt::Display for ManifestBase {
    /// "version V (image D)", or "image D" for a base without a version.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.version.is_empty() {
            write!(f, "image {}", self.image)
        } else {
            write!(f, "version {} (image {})", self.version, self.image)
        }
    }
}

/// A raw image: an object of the bundle written whole to a `raw` slot's device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestRaw {
    /// The slot class it is for (`bootloader` for `[slot.bootloader.N]`).
    pub class: String,
    /// fs-verity digest: the object index entry holding the image.
    pub digest: Digest,
    pub size: u64,
    /// Plain SHA-256 of the image, for comparing with other tools.
    pub sha256: String,
}

/// Why manifest bytes are not a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not UTF-8 text: {0}")]
    NotUtf8(String),
    #[error("manifest: {0}")]
    Syntax(String),
    #[error(
        "manifest format {found} is not supported (this build reads formats 1 to {MAX_MANIFEST_FORMAT}); use a newer didymos"
    )]
    UnsupportedFormat { found: u32 },
    #[error("manifest: {0}")]
    Invalid(String),
}

impl Manifest {
    /// Parses and checks manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8(e.to_string()))?;
        let m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        if !(MANIFEST_FORMAT..=MAX_MANIFEST_FORMAT).contains(&m.format) {
            return Err(ManifestError::UnsupportedFormat { found: m.format });
        }
        m.check_raw()?;
        if m.security_version > 0 && m.format < MANIFEST_FORMAT_SECURITY {
            return Err(ManifestError::Invalid(format!(
                "security-version needs format = {MANIFEST_FORMAT_SECURITY}, but the manifest says format = {}",
                m.format
            )));
        }
        if m.compatible.is_empty() {
            return Err(ManifestError::Invalid("compatible is empty".into()));
        }
        if m.version.is_empty() {
            return Err(ManifestError::Invalid("version is empty".into()));
        }
        let sha = &m.objects.index_sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ManifestError::Invalid(format!(
                "objects.index-sha256 {sha:?} is not 64 hexadecimal digits"
            )));
        }
        // Every carried object is referenced by the image or is a raw image.
        let carriable = m.objects.referenced + m.raw.len() as u64;
        if m.objects.count > carriable {
            return Err(ManifestError::Invalid(format!(
                "objects.count {} is larger than objects.referenced {} plus {} raw image(s)",
                m.objects.count,
                m.objects.referenced,
                m.raw.len()
            )));
        }
        Ok(m)
    }

    fn check_raw(&self) -> Result<(), ManifestError> {
        if self.raw.is_empty() {
            return Ok(());
        }
        if self.format < MANIFEST_FORMAT_RAW {
            return Err(ManifestError::Invalid(format!(
                "[[raw]] images need format = {MANIFEST_FORMAT_RAW}, but the manifest says format = {}",
                self.format
            )));
        }
        if self.raw.len() > MAX_RAW_IMAGES {
            return Err(ManifestError::Invalid(format!(
                "{} raw images; at most {MAX_RAW_IMAGES} are allowed",
                self.raw.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.raw {
            if crate::slot::SlotName::new(&r.class, 0).is_err() {
                return Err(ManifestError::Invalid(format!(
                    "raw image class {:?} is not a slot class (letters, digits, '-' or '_')",
                    r.class
                )));
            }
            if !seen.insert(r.class.as_str()) {
                return Err(ManifestError::Invalid(format!(
                    "two raw images for class {:?}",
                    r.class
                )));
            }
            if r.sha256.len() != 64 || !r.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ManifestError::Invalid(format!(
                    "raw image {:?}: sha256 {:?} is not 64 hexadecimal digits",
                    r.class, r.sha256
                )));
            }
        }
        Ok(())
    }

    /// The lowest manifest format that can express this manifest's content.
    pub fn needed_format(&self) -> u32 {
        if self.security_version > 0 {
            MANIFEST_FORMAT_SECURITY
        } else if !self.raw.is_empty() {
            MANIFEST_FORMAT_RAW
        } else {
            MANIFEST_FORMAT
        }
    }

    /// The raw image for slot class `class`, if the bundle carries one.
    pub fn raw_image(&self, class: &str) -> Option<&ManifestRaw> {
        self.raw.iter().find(|r| r.class == class)
    }

    /// The canonical TOML text (what gets signed).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a manifest always serializes")
    }

    /// True if this bundle leaves out objects a base image provides.
    pub fn is_delta(&self) -> bool {
        !self.bases.is_empty()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            compatible: "acme-gw".into(),
            version: "1.0".into(),
            description: String::new(),
            build: "b1".into(),
            created: "2024-01-01T00:00:00Z".into(),
            security_version: 0,
            image: ManifestImage {
                digest: Digest([1; 32]),
                size: 4096,
            },
            objects: ManifestObjects {
                count: 1,
                size: 100,
                stored_size: 50,
                referenced: 2,
                index_sha256: "ab".repeat(32),
            },
            bases: vec![ManifestBase {
                image: Digest([2; 32]),
                version: "0.9".into(),
            }],
            raw: Vec::new(),
        }
    }

    fn with_raw() -> Manifest {
        let mut m = sample();
        m.format = MANIFEST_FORMAT_RAW;
        m.raw = vec![ManifestRaw {
            class: "bootloader".into(),
            digest: Digest([3; 32]),
            size: 1000,
            sha256: "cd".repeat(32),
        }];
        m
    }

    #[test]
    fn raw_round_trip_and_checks() {
        let m = with_raw();
        assert_eq!(Manifest::parse(m.to_toml().as_bytes()).unwrap(), m);
        assert_eq!(m.raw_image("bootloader").unwrap().size, 1000);
        assert!(m.raw_image("rootfs").is_none());
        let good = m.to_toml();
        let mut two = with_raw();
        two.raw.push(two.raw[0].clone());
        let table: Vec<(String, &str)> = vec![
            (good.replace("format = 2", "format = 1"), "need format = 2"),
            (good.replace("format = 2", "format = 4"), "format 4"),
            (
                good.replace("\"bootloader\"", "\"boot loader\""),
                "not a slot class",
            ),
            (good.replace(&"cd".repeat(32), "cd"), "sha256"),
            (two.to_toml(), "two raw images"),
            (good.replace("count = 1", "count = 4"), "plus 1 raw image"),
        ];
        for (text, want) in table {
            let err = Manifest::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        // One raw image may be carried beyond the referenced objects.
        let three = good.replace("count = 1", "count = 3");
        assert!(Manifest::parse(three.as_bytes()).is_ok());
    }

    #[test]
    fn security_version_needs_format_3() {
        let mut m = sample();
        assert!(!m.to_toml().contains("security-version"));
        m.security_version = 4;
        m.format = m.needed_format();
        assert_eq!(m.format, MANIFEST_FORMAT_SECURITY);
        let text = m.to_toml();
        assert!(text.contains("security-version = 4"), "{text}");
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
        let old = text.replace("format = 3", "format = 2");
        let err = Manifest::parse(old.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("security-version needs format = 3"), "{err}");
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::parse(m.to_toml().as_bytes()).unwrap(), m);
    }

    #[test]
    fn rejects_bad_manifests() {
        let good = sample().to_toml();
        let table: Vec<(String, &str)> = vec![
            (good.replace("format = 1", "format = 7"), "format 7"),
            (
                good.replace("compatible = \"acme-gw\"", "compatible = \"\""),
                "compatible is empty",
            ),
            (format!("{good}\nextra = 1\n"), "unknown field"),
            (good.replace(&"ab".repeat(32), "xyz"), "index-sha256"),
            (good.replace("count = 1", "count = 3"), "larger than"),
            ("not toml [".into(), "manifest"),
        ];
        for (text, want) in table {
            let err = Manifest::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        assert!(matches!(
            Manifest::parse(&[0xff, 0xfe]),
            Err(ManifestError::NotUtf8(_))
        ));
    }
}
