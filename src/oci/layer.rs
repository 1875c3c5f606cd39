//! Reading one layer: the blob is hashed as it is read (against the
//! manifest's digest) and so is the tar stream it decompresses to (against
//! the config's `diff_id`).

use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::{Compression, ContentDigest, Layer};

/// SHA-256 of everything read through it, kept where the owner can take it.
struct Hashing<R> {
    inner: R,
    hash: Arc<Mutex<Sha256>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.lock().unwrap().update(&buf[..n]);
        Ok(n)
    }
}

/// A layer's tar stream. Read it, then call [`LayerReader::finish`]: only
/// then are both digests known and compared.
pub struct LayerReader {
    layer: Layer,
    stream: Hashing<Box<dyn Read + Send>>,
    blob_hash: Arc<Mutex<Sha256>>,
}

impl LayerReader {
    pub(super) fn open(layer: &Layer) -> Result<Self, String> {
        let label = layer.label();
        let raw = layer
            .blob
            .open()
            .map_err(|e| format!("{label}: cannot read the blob: {e}"))?;
        let blob_hash = Arc::new(Mutex::new(Sha256::new()));
        let hashed = BufReader::with_capacity(
            1 << 20,
            Hashing {
                inner: raw,
                hash: blob_hash.clone(),
            },
        );
        let decoded: Box<dyn Read + Send> = match layer.compression {
            Compression::None => Box::new(hashed),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(hashed)),
            Compression::Zstd => Box::new(
                zstd::Decoder::with_buffer(hashed)
                    .map_err(|e| format!("{label}: cannot start zstd: {e}"))?,
            ),
        };
        Ok(Self {
            layer: layer.clone(),
            stream: Hashing {
                inner: decoded,
                hash: Arc::new(Mutex::new(Sha256::new())),
            },
            blob_hash,
        })
    }

    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    /// Reads what is left (the tar reader stops at the end-of-archive
    /// blocks) and compares the blob's and the tar stream's digests.
    pub fn finish(mut self) -> Result<(), String> {
        let label = self.layer.label();
        io::copy(&mut self.stream, &mut io::sink())
            .map_err(|e| format!("{label}: cannot read the blob to its end: {e}"))?;
        // Both decoders read to the end of the blob; had one stopped early,
        // the blob digest below would be of a prefix and not match.
        let blob = ContentDigest(self.blob_hash.lock().unwrap().clone().finalize().into());
        if blob != self.layer.digest {
            return Err(self.mismatch(blob));
        }
        let diff = ContentDigest(self.stream.hash.lock().unwrap().clone().finalize().into());
        if diff != self.layer.diff_id {
            return Err(format!(
                "{label}: the uncompressed layer does not match the config's diff_id: \
                 expected {}, found {diff}",
                self.layer.diff_id
            ));
        }
        Ok(())
    }

    /// After a failure while reading: whether the blob itself is not the one
    /// the manifest names (the more useful message then).
    pub fn check_blob(&self) -> Option<String> {
        let mut h = Sha256::new();
        let mut r = self.layer.blob.open().ok()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => return None,
            }
        }
        let actual = ContentDigest(h.finalize().into());
        (actual != self.layer.digest).then(|| self.mismatch(actual))
    }

    fn mismatch(&self, actual: ContentDigest) -> String {
        format!(
            "{}: the blob does not match the digest its descriptor names: expected {}, found {actual}",
            self.layer.label(),
            self.layer.digest
        )
    }
}

impl Read for LayerReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}
