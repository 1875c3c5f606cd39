//! The JSON documents of an image — OCI index, manifest and config, and
//! docker-archive's `manifest.json` — each read with a size limit and
//! checked against the digest it is named by.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    BlobLocation, BlobStore, Compression, ContentDigest, Layer, MAX_CONFIG_SIZE, MAX_LAYERS,
    MAX_MANIFEST_SIZE, OciError, OciImage,
};

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<ContainerConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn image_err(reference: &str, detail: impl Into<String>) -> OciError {
    OciError::Image {
        image: reference.to_owned(),
        detail: detail.into(),
    }
}

/// Reads the blob `d` names from `store`, checking its size and digest.
fn read_blob(
    reference: &str,
    store: &dyn BlobStore,
    what: &str,
    digest: &ContentDigest,
    size: Option<u64>,
    limit: u64,
) -> Result<Vec<u8>, OciError> {
    let loc = locate(reference, store, what, digest)?;
    if let Some(size) = size
        && size != loc.len
    {
        return Err(image_err(
            reference,
            format!(
                "{what} {digest}: the descriptor says {size} bytes, the blob has {}",
                loc.len
            ),
        ));
    }
    let data = loc.read_small(limit).map_err(|e| OciError::Io {
        image: reference.to_owned(),
        what: format!("{what} {digest}"),
        source: e,
    })?;
    let actual = ContentDigest::of(&data);
    if actual != *digest {
        return Err(image_err(
            reference,
            format!("{what} blob does not match its digest: expected {digest}, found {actual}"),
        ));
    }
    Ok(data)
}

fn locate(
    reference: &str,
    store: &dyn BlobStore,
    what: &str,
    digest: &ContentDigest,
) -> Result<BlobLocation, OciError> {
    store
        .locate(&format!("blobs/sha256/{}", digest.hex()))
        .ok_or_else(|| {
            image_err(
                reference,
                format!(
                    "{what} {digest} is missing: no blobs/sha256/{} in the {}",
                    digest.hex(),
                    store.describe()
                ),
            )
        })
}

fn parse<'a, T: Deserialize<'a>>(
    reference: &str,
    what: &str,
    data: &'a [u8],
) -> Result<T, OciError> {
    serde_json::from_slice(data)
        .map_err(|e| image_err(reference, format!("{what} is not valid: {e}")))
}

fn digest_of(reference: &str, what: &str, s: &str) -> Result<ContentDigest, OciError> {
    ContentDigest::parse(s).map_err(|e| image_err(reference, format!("{what}: {e}")))
}

/// An OCI layout (directory or archive): `index.json` → manifest → config.
pub(super) fn from_layout(
    reference: &str,
    store: &dyn BlobStore,
    tag: Option<&str>,
    scratch: Option<tempfile::TempDir>,
) -> Result<OciImage, OciError> {
    let index_loc = store.locate("index.json").ok_or_else(|| {
        image_err(
            reference,
            format!(
                "no index.json in the {}; is it an OCI image layout?",
                store.describe()
            ),
        )
    })?;
    let index_bytes = index_loc
        .read_small(MAX_MANIFEST_SIZE)
        .map_err(|e| OciError::Io {
            image: reference.to_owned(),
            what: "index.json".into(),
            source: e,
        })?;
    let index: Index = parse(reference, "index.json", &index_bytes)?;
    let chosen = choose_manifest(reference, &index.manifests, tag)?;
    let mdigest = digest_of(reference, "manifest", &chosen.digest)?;
    if chosen.media_type == INDEX_TYPE || chosen.media_type == DOCKER_LIST_TYPE {
        return Err(image_err(
            reference,
            format!(
                "{} is an index of several images (multi-platform); copy the one platform to \
                 install, e.g. `skopeo copy --override-arch arm64 … oci-archive:image.tar`",
                mdigest
            ),
        ));
    }
    let mbytes = read_blob(
        reference,
        store,
        "manifest",
        &mdigest,
        Some(chosen.size),
        MAX_MANIFEST_SIZE,
    )?;
    let manifest: Manifest = parse(reference, &format!("manifest {mdigest}"), &mbytes)?;
    if !manifest.media_type.is_empty()
        && manifest.media_type != MANIFEST_TYPE
        && manifest.media_type != DOCKER_MANIFEST_TYPE
    {
        return Err(image_err(
            reference,
            format!(
                "manifest {mdigest} has media type {:?}; an image manifest is {MANIFEST_TYPE}",
                manifest.media_type
            ),
        ));
    }
    if !CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err(image_err(
            reference,
            format!(
                "the config has media type {:?}: this is not a container image (an artifact?)",
                manifest.config.media_type
            ),
        ));
    }
    let cdigest = digest_of(reference, "config", &manifest.config.digest)?;
    let cbytes = read_blob(
        reference,
        store,
        "config",
        &cdigest,
        Some(manifest.config.size),
        MAX_CONFIG_SIZE,
    )?;
    let config: Config = parse(reference, &format!("config {cdigest}"), &cbytes)?;
    let diff_ids = check_rootfs(reference, &config, manifest.layers.len())?;
    let count = manifest.layers.len();
    let mut layers = Vec::with_capacity(count);
    for (i, (d, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
        let digest = digest_of(reference, &format!("layer {}/{count}", i + 1), &d.digest)?;
        let label = format!("layer {}/{count} ({})", i + 1, digest.short());
        let compression = Compression::from_media_type(&d.media_type).ok_or_else(|| {
            image_err(
                reference,
                format!(
                    "{label}: unsupported media type {:?}; didymos reads tar layers, plain, \
                     gzip or zstd (application/vnd.oci.image.layer.v1.tar[+gzip|+zstd])",
                    d.media_type
                ),
            )
        })?;
        let blob = locate(reference, store, &label, &digest)?;
        if blob.len != d.size {
            return Err(image_err(
                reference,
                format!(
                    "{label}: the manifest says {} bytes, the blob has {}",
                    d.size, blob.len
                ),
            ));
        }
        layers.push(Layer {
            index: i + 1,
            count,
            digest,
            diff_id,
            media_type: d.media_type.clone(),
            compression,
            size: d.size,
            blob,
        });
    }
    Ok(OciImage {
        reference: reference.to_owned(),
        manifest_digest: Some(mdigest),
        config_digest: cdigest,
        labels: labels(&config),
        architecture: config.architecture,
        layers,
        _scratch: scratch,
    })
}

fn labels(config: &Config) -> BTreeMap<String, String> {
    config
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

fn check_rootfs(
    reference: &str,
    config: &Config,
    layers: usize,
) -> Result<Vec<ContentDigest>, OciError> {
    if config.rootfs.kind != "layers" {
        return Err(image_err(
            reference,
            format!(
                "config rootfs type is {:?}, not \"layers\"",
                config.rootfs.kind
            ),
        ));
    }
    if layers == 0 {
        return Err(image_err(reference, "the image has no layers"));
    }
    if layers > MAX_LAYERS {
        return Err(image_err(
            reference,
            format!("the image has {layers} layers; at most {MAX_LAYERS} are read"),
        ));
    }
    if config.rootfs.diff_ids.len() != layers {
        return Err(image_err(
            reference,
            format!(
                "the manifest lists {layers} layers but the config has {} diff_ids",
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    config
        .rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| digest_of(reference, &format!("diff_id of layer {}", i + 1), d))
        .collect()
}

fn choose_manifest<'a>(
    reference: &str,
    manifests: &'a [Descriptor],
    tag: Option<&str>,
) -> Result<&'a Descriptor, OciError> {
    let names: Vec<&str> = manifests
        .iter()
        .filter_map(|m| m.annotations.get(REF_NAME).map(String::as_str))
        .collect();
    match tag {
        Some(tag) => manifests
            .iter()
            .find(|m| {
                m.annotations
                    .get(REF_NAME)
                    .is_some_and(|n| n == tag || n.rsplit_once(':').is_some_and(|(_, t)| t == tag))
            })
            .ok_or_else(|| {
                image_err(
                    reference,
                    format!("no image tagged {tag:?} in index.json (tags: {names:?})"),
                )
            }),
        None => match manifests {
            [one] => Ok(one),
            [] => Err(image_err(reference, "index.json lists no image")),
            _ => Err(image_err(
                reference,
                format!(
                    "index.json lists {} images; name one with :<tag> (tags: {names:?})",
                    manifests.len()
                ),
            )),
        },
    }
}

/// A docker archive: `manifest.json` → config file and layer tars.
pub(super) fn from_docker_archive(
    reference: &str,
    store: &dyn BlobStore,
    name: Option<&str>,
) -> Result<OciImage, OciError> {
    let loc = store.locate("manifest.json").ok_or_else(|| {
        image_err(
            reference,
            format!(
                "no manifest.json in the {}; is it a docker archive?",
                store.describe()
            ),
        )
    })?;
    let bytes = loc
        .read_small(MAX_MANIFEST_SIZE)
        .map_err(|e| OciError::Io {
            image: reference.to_owned(),
            what: "manifest.json".into(),
            source: e,
        })?;
    let entries: Vec<DockerEntry> = parse(reference, "manifest.json", &bytes)?;
    let tags = |e: &DockerEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match name {
        Some(n) => entries
            .iter()
            .find(|e| tags(e).iter().any(|t| t == n))
            .ok_or_else(|| {
                let all: Vec<String> = entries.iter().flat_map(tags).collect();
                image_err(reference, format!("no image named {n:?} (images: {all:?})"))
            })?,
        None => match entries.as_slice() {
            [one] => one,
            [] => return Err(image_err(reference, "manifest.json lists no image")),
            _ => {
                return Err(image_err(
                    reference,
                    format!(
                        "the archive holds {} images; name one with :<name:tag>",
                        entries.len()
                    ),
                ));
            }
        },
    };
    let cloc = store.locate(&entry.config).ok_or_else(|| {
        image_err(
            reference,
            format!("config {} is missing from the archive", entry.config),
        )
    })?;
    let cbytes = cloc.read_small(MAX_CONFIG_SIZE).map_err(|e| OciError::Io {
        image: reference.to_owned(),
        what: format!("config {}", entry.config),
        source: e,
    })?;
    let cdigest = ContentDigest::of(&cbytes);
    // The config's file name is its digest in every docker archive writer.
    if let Some(stem) = entry.config.strip_suffix(".json")
        && let Ok(named) = ContentDigest::parse(&format!("sha256:{stem}"))
        && named != cdigest
    {
        return Err(image_err(
            reference,
            format!(
                "config {} does not match its digest: expected {named}, found {cdigest}",
                entry.config
            ),
        ));
    }
    let config: Config = parse(reference, &format!("config {}", entry.config), &cbytes)?;
    let diff_ids = check_rootfs(reference, &config, entry.layers.len())?;
    let count = entry.layers.len();
    let mut layers = Vec::with_capacity(count);
    for (i, (path, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
        let label = format!("layer {}/{count} ({})", i + 1, diff_id.short());
        let blob = store.locate(path).ok_or_else(|| {
            image_err(
                reference,
                format!("{label}: {path} is missing from the archive"),
            )
        })?;
        // Docker archives hold uncompressed layers: the blob digest is the diff_id.
        layers.push(Layer {
            index: i + 1,
            count,
            digest: diff_id,
            diff_id,
            media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
            compression: Compression::None,
            size: blob.len,
            blob,
        });
    }
    Ok(OciImage {
        reference: reference.to_owned(),
        manifest_digest: None,
        config_digest: cdigest,
        labels: labels(&config),
        architecture: config.architecture,
        layers,
        _scratch: None,
    })
}
