//! The manifest: what the signature covers. TOML text.

use crate::Digest;

/// The manifest format (and bundle format) version this build writes.
pub const MANIFEST_FORMAT: u32 = 1;

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
    pub image: ManifestImage,
    pub objects: ManifestObjects,
    /// For delta bundles: the images whose objects this bundle leaves out.
    #[serde(default, rename = "base", skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<ManifestBase>,
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

/// Why manifest bytes are not a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not UTF-8 text: {0}")]
    NotUtf8(String),
    #[error("manifest: {0}")]
    Syntax(String),
    #[error(
        "manifest format {found} is not supported (this build reads format {MANIFEST_FORMAT}); use a newer didymos"
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
        if m.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat { found: m.format });
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
        if m.objects.count > m.objects.referenced {
            return Err(ManifestError::Invalid(format!(
                "objects.count {} is larger than objects.referenced {}",
                m.objects.count, m.objects.referenced
            )));
        }
        Ok(m)
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
        }
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
