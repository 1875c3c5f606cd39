//! Re-signing a bundle (key rotation): a new signature over the same
//! manifest bytes; the index, image and objects are copied unchanged.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::create::Signer;
use super::format::Header;
use super::{BundleError, VerifiedBundle};

#[derive(Debug, thiserror::Error)]
pub enum ResignError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Signer(#[from] super::create::CreateError),
    #[error("output directory {0} does not exist; create it first")]
    MissingOutputDir(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Writes `output`: `input`'s manifest with a signature by `signer`.
pub fn resign(input: &VerifiedBundle, signer: &Signer, output: &Path) -> Result<u64, ResignError> {
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(ResignError::MissingOutputDir(out_dir));
    }
    let signature = signer.sign(input.manifest_bytes())?;
    let old = *input.header();
    let new = Header::laid_out(
        old.version,
        old.manifest.len,
        signature.len() as u64,
        old.index.len,
        old.image.len,
        old.objects.len,
    );
    let werr = |source| ResignError::Write {
        path: output.to_owned(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".didymos-bundle.")
        .tempfile_in(&out_dir)
        .map_err(werr)?;
    let f = tmp.as_file_mut();
    f.write_all(&new.to_bytes()).map_err(werr)?;
    // The regions in the file's order; all but the signature copied as they are.
    let mut regions = [
        (new.manifest, old.manifest),
        (new.signature, old.signature),
        (new.index, old.index),
        (new.image, old.image),
        (new.objects, old.objects),
    ];
    regions.sort_by_key(|(n, _)| n.offset);
    let source = input.source();
    let mut buf = vec![0u8; 1 << 20];
    for (region, from) in regions {
        if region == new.signature {
            f.write_all(&signature).map_err(werr)?;
            continue;
        }
        let mut at = 0u64;
        while at < region.len {
            let n = (region.len - at).min(buf.len() as u64) as usize;
            source
                .read_exact_at(&mut buf[..n], from.offset + at)
                .map_err(werr)?;
            f.write_all(&buf[..n]).map_err(werr)?;
            at += n as u64;
        }
    }
    f.sync_all().map_err(werr)?;
    tmp.persist(output).map_err(|e| werr(e.error))?;
    crate::util::fsync_dir(&out_dir).map_err(werr)?;
    Ok(new.file_size())
}
