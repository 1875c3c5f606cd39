//! Writing a verified bundle out as `image.cfs` plus an
//! `mkcomposefs --digest-store`-style `objects/xx/<62 hex>` tree.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::delta::{Chain, ObjectDir, Sources};
use super::{BaseImages, BundleError, ImageChain, VerifiedBundle};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{count} object(s) are deltas against objects that are neither in {dir}/objects nor in a \
         --base (first: {first}, a delta against {source_digest}); the bundle is a delta against {bases}: \
         extract that first into the same directory, or give it with --base"
    )]
    MissingSources {
        count: usize,
        dir: PathBuf,
        first: crate::Digest,
        source_digest: crate::Digest,
        bases: String,
    },
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractSummary {
    pub image: PathBuf,
    pub objects_written: u64,
    /// Objects already present in the destination (same name), left alone.
    pub objects_present: u64,
    pub bytes: u64,
}

/// Extracts `bundle` into `dir` (created if missing). Every object is
/// written to a temporary file, checked, and only then renamed into place.
/// Deltas are decoded against objects already in `dir/objects` (an earlier
/// extract of the base) or in `bases`; when a source is in neither, nothing
/// is written. An image stored as a delta is decoded against `dir/image.cfs`
/// (that earlier extract's image) or an image from `images`.
pub fn extract(
    bundle: &VerifiedBundle,
    dir: &Path,
    bases: Option<&dyn Sources>,
    images: &dyn BaseImages,
) -> Result<ExtractSummary, ExtractError> {
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| ExtractError::Write { path, source }
    };
    let here = ObjectDir(dir.join("objects"));
    let mut chain: Vec<&dyn Sources> = vec![&here];
    chain.extend(bases);
    let sources = Chain(chain);
    let to_write: Vec<_> = bundle
        .index()
        .iter()
        .filter(|e| !dir.join(e.digest.to_object_path()).exists())
        .cloned()
        .collect();
    let missing = bundle.missing_sources(&to_write, &sources)?;
    if let Some((first, source)) = missing.first() {
        let bases = bundle
            .manifest()
            .bases
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ExtractError::MissingSources {
            count: missing.len(),
            dir: dir.to_owned(),
            first: *first,
            source_digest: *source,
            bases,
        });
    }
    // The image first, before anything is written: a delta against a base
    // image that is not at hand stops here.
    let earlier: Vec<(crate::Digest, Vec<u8>)> =
        crate::util::read_bounded(&dir.join("image.cfs"), super::format::MAX_IMAGE_SIZE)
            .ok()
            .map(|b| (crate::image::digest_bytes(&b), b))
            .into_iter()
            .collect();
    let image = bundle.read_image_with(&ImageChain(vec![&earlier, images]))?;
    fs::create_dir_all(dir).map_err(werr(dir))?;
    let objects = dir.join("objects");
    fs::create_dir_all(&objects).map_err(werr(&objects))?;
    let mut summary = ExtractSummary {
        image: dir.join("image.cfs"),
        objects_written: 0,
        objects_present: 0,
        bytes: 0,
    };
    // In the order of the stored bytes (each pack decoded once).
    let mut order: Vec<_> = bundle.index().iter().collect();
    order.sort_by_key(|e| e.stored_order());
    for entry in order {
        let target = dir.join(entry.digest.to_object_path());
        if target.exists() {
            summary.objects_present += 1;
            continue;
        }
        let sub = target.parent().expect("object paths have a parent");
        fs::create_dir_all(sub).map_err(werr(sub))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp.")
            .tempfile_in(sub)
            .map_err(werr(sub))?;
        {
            let mut w = io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            bundle.copy_object_with(entry, &sources, &mut w)?;
            w.flush().map_err(werr(&target))?;
        }
        tmp.persist(&target).map_err(|e| ExtractError::Write {
            path: target.clone(),
            source: e.error,
        })?;
        summary.objects_written += 1;
        summary.bytes += entry.size;
    }
    crate::util::write_atomic(&summary.image, &image).map_err(werr(&summary.image))?;
    Ok(summary)
}
