//! Training the bundle's compression dictionary for small objects.
//!
//! Each small object compressed alone starts with an empty history, which
//! is what makes a bundle of many small files larger than one compressed
//! stream of the same files (a tarball). A zstd dictionary trained on the
//! bundle's own small files gives each of them that history back while each
//! stays decodable alone. The dictionary is carried in the index region, so
//! the signed manifest covers it.
//!
//! The scan hands over large files in a fixed order. They are held back —
//! for a directory the whole scan (a path each), for an archive up to 128 MiB
//! of members in memory — and samples are taken evenly across them; then the
//! dictionary is trained and the held files go to the workers in order. So
//! the dictionary, like the rest of the bundle, depends only on the input, and
//! represents all of it (a root filesystem's first files are /bin and /etc,
//! its kernel modules come late).

use std::io::Read;

use super::Job;
use super::encode::{DICTIONARY_MAX_OBJECT, Dictionary};
use crate::image::{FileData, ImageError};

/// Dictionary size (zstd's own default, 110 KiB).
pub const DICTIONARY_SIZE: usize = 112_640;
/// Samples to train on (zstd advises about 100 times the dictionary size).
pub const SAMPLE_BYTES: u64 = 100 * DICTIONARY_SIZE as u64;
/// At most this much of one file is a sample.
const SAMPLE_PER_FILE: u64 = 64 * 1024;
/// Fewer samples than this train no dictionary (it would cost more than it saves).
pub const MIN_SAMPLES: usize = 64;
/// Held-back jobs at most: the whole scan of a directory (a path each), and
/// for archive members held in memory at most [`MAX_HELD_BYTES`].
const MAX_HELD: usize = 1 << 20;
const MAX_HELD_BYTES: u64 = 128 << 20;

/// Holds the scan's jobs back until the dictionary is trained.
pub struct Sampler {
    held: Vec<Job>,
    held_bytes: u64,
    /// Bytes of the files a dictionary would compress.
    candidates: u64,
}

impl Sampler {
    pub fn new() -> Self {
        Sampler {
            held: Vec::new(),
            held_bytes: 0,
            candidates: 0,
        }
    }

    /// Takes a job; false once no more can be held (train now).
    pub fn offer(&mut self, job: Job) -> Result<bool, ImageError> {
        let (_, _, size, data) = &job;
        if *size <= DICTIONARY_MAX_OBJECT && !matches!(data, FileData::Temp(_)) {
            self.candidates += (*size).min(SAMPLE_PER_FILE);
        }
        if let FileData::Bytes(b) = data {
            self.held_bytes += b.len() as u64;
        }
        self.held.push(job);
        Ok(self.held.len() < MAX_HELD && self.held_bytes < MAX_HELD_BYTES)
    }

    /// Trains the dictionary on samples taken evenly across the held files
    /// (every n-th file the dictionary would compress, its first 64 KiB, up
    /// to [`SAMPLE_BYTES`]); none with too few samples, or if training fails.
    /// Gives the held jobs back in order.
    pub fn train(self, level: i32) -> Result<(Option<Dictionary>, Vec<Job>), ImageError> {
        let stride = self.candidates.div_ceil(SAMPLE_BYTES).max(1) as usize;
        let mut data = Vec::new();
        let mut sizes = Vec::new();
        let eligible = self.held.iter().filter(|(_, _, size, d)| {
            *size <= DICTIONARY_MAX_OBJECT && !matches!(d, FileData::Temp(_))
        });
        for (_, _, size, d) in eligible.step_by(stride) {
            let take = (*size).min(SAMPLE_PER_FILE);
            let before = data.len();
            match d {
                FileData::Path(p) => {
                    std::fs::File::open(p)
                        .and_then(|f| f.take(take).read_to_end(&mut data))
                        .map_err(ImageError::io(p))?;
                }
                FileData::Bytes(b) => data.extend_from_slice(&b[..take as usize]),
                FileData::Temp(_) => {}
            }
            if data.len() > before {
                sizes.push(data.len() - before);
            }
        }
        let dict = (sizes.len() >= MIN_SAMPLES)
            .then(|| zstd::dict::from_continuous(&data, &sizes, DICTIONARY_SIZE))
            .and_then(|r| {
                r.map_err(|e| log::warn!("no compression dictionary: training failed: {e}"))
                    .ok()
            })
            .map(|bytes| Dictionary {
                cdict: zstd::dict::EncoderDictionary::copy(&bytes, level),
                bytes,
            });
        Ok((dict, self.held))
    }
}
