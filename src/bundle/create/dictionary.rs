//! Training the bundle's compression dictionary for small objects.
//!
//! Each small object compressed alone starts with an empty history, which
//! is what makes a bundle of many small files larger than one compressed
//! stream of the same files (a tarball). A zstd dictionary trained on the
//! bundle's own small files gives each of them that history back while each
//! stays decodable alone. The dictionary is carried in the index region, so
//! the signed manifest covers it.
//!
//! The scan hands over large files in a fixed order. The first ones, until
//! [`SAMPLE_BYTES`] of small files were read, are held back while their
//! contents are collected as samples; then the dictionary is trained and the
//! held files go to the workers in order. So the dictionary, like the rest of
//! the bundle, depends only on the input.

use std::io::Read;

use super::Job;
use super::encode::{DICTIONARY_MAX_OBJECT, Dictionary};
use crate::image::{FileData, ImageError};

/// Dictionary size (zstd's own default, 110 KiB, measured about as good).
pub const DICTIONARY_SIZE: usize = 112_640;
/// Samples to train on (zstd advises about 100 times the dictionary size).
pub const SAMPLE_BYTES: usize = 100 * DICTIONARY_SIZE;
/// Fewer samples than this train no dictionary (it would cost more than it saves).
pub const MIN_SAMPLES: usize = 64;
/// Held-back jobs at most (bounds the memory of held tar members too).
const MAX_HELD: usize = 50_000;
const MAX_HELD_BYTES: u64 = 256 << 20;

pub struct Sampler {
    held: Vec<Job>,
    held_bytes: u64,
    data: Vec<u8>,
    sizes: Vec<usize>,
}

impl Sampler {
    pub fn new() -> Self {
        Sampler {
            held: Vec::new(),
            held_bytes: 0,
            data: Vec::new(),
            sizes: Vec::new(),
        }
    }

    /// Takes a job; false once enough was sampled (train now).
    pub fn offer(&mut self, job: Job) -> Result<bool, ImageError> {
        let (_, _, size, data) = &job;
        if *size <= DICTIONARY_MAX_OBJECT {
            let before = self.data.len();
            match data {
                FileData::Path(p) => {
                    std::fs::File::open(p)
                        .and_then(|f| f.take(*size).read_to_end(&mut self.data))
                        .map_err(ImageError::io(p))?;
                }
                FileData::Bytes(b) => self.data.extend_from_slice(b),
                FileData::Temp(_) => {}
            }
            if self.data.len() > before {
                self.sizes.push(self.data.len() - before);
            }
        }
        if let FileData::Bytes(b) = data {
            self.held_bytes += b.len() as u64;
        }
        self.held.push(job);
        Ok(self.data.len() < SAMPLE_BYTES
            && self.held.len() < MAX_HELD
            && self.held_bytes < MAX_HELD_BYTES)
    }

    /// Trains the dictionary (none with too few samples, or if training
    /// fails) and gives the held jobs back in order.
    pub fn train(self, level: i32) -> (Option<Dictionary>, Vec<Job>) {
        let dict = (self.sizes.len() >= MIN_SAMPLES)
            .then(|| zstd::dict::from_continuous(&self.data, &self.sizes, DICTIONARY_SIZE))
            .and_then(|r| {
                r.map_err(|e| log::warn!("no compression dictionary: training failed: {e}"))
                    .ok()
            })
            .map(|bytes| Dictionary {
                cdict: zstd::dict::EncoderDictionary::copy(&bytes, level),
                bytes,
            });
        (dict, self.held)
    }
}
