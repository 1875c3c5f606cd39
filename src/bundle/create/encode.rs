//! Choosing and making one object's encoding: a delta against its source
//! when that is smaller than the object's usual encoding by a margin, else
//! zstd (with the bundle's dictionary for small objects) when that is
//! smaller than the object, else its bytes as they are. What is read is
//! hashed again, so a file that changes while the bundle is made is caught.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::base::Checked;
use super::writer::{Out, Stored};
use crate::Digest;
use crate::bundle::Encoding;
use crate::bundle::delta::{self, EncodeOptions, SourceObject};
use crate::image::{ImageError, VerityHasher};

/// Objects up to this size are compressed with the bundle's dictionary (in
/// memory, one call).
pub const DICTIONARY_MAX_OBJECT: u64 = 1024 * 1024;

/// A delta is kept when it saves at least an eighth of the usual encoding
/// and at least this many bytes (reading a source costs the device a read).
pub const DELTA_MIN_SAVING: u64 = 256;

/// The level of the quick first try at a delta.
const PROBE_LEVEL: i32 = 3;

/// The trained dictionary, ready for compressing.
pub struct Dictionary {
    pub bytes: Vec<u8>,
    pub cdict: zstd::dict::EncoderDictionary<'static>,
}

/// How every object of a bundle is encoded.
pub struct Settings {
    pub level: i32,
    pub dictionary: Option<Dictionary>,
    pub delta: EncodeOptions,
}

pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

fn io_err(label: &Path) -> impl Fn(io::Error) -> ImageError + '_ {
    move |e| ImageError::Io {
        path: label.to_owned(),
        source: e,
    }
}

/// Writes `size` bytes from `reader` (at its start) to `out` in the usual
/// encoding; returns it.
pub fn usual_to(
    reader: &mut dyn ReadSeek,
    label: &Path,
    size: u64,
    digest: &Digest,
    settings: &Settings,
    out: &mut dyn Sink,
) -> Result<Encoding, ImageError> {
    usual(reader, label, size, digest, settings, out)
}

fn usual(
    reader: &mut dyn ReadSeek,
    label: &Path,
    size: u64,
    digest: &Digest,
    settings: &Settings,
    out: &mut dyn Sink,
) -> Result<Encoding, ImageError> {
    let err = io_err(label);
    reader.seek(SeekFrom::Start(0)).map_err(&err)?;
    let mut check = Checked {
        inner: &mut *reader,
        hasher: VerityHasher::new(),
    };
    let mut encoding;
    match &settings.dictionary {
        Some(dict) if size <= DICTIONARY_MAX_OBJECT => {
            let mut data = Vec::with_capacity(size as usize);
            (&mut check)
                .take(size)
                .read_to_end(&mut data)
                .map_err(&err)?;
            let mut c = zstd::bulk::Compressor::with_prepared_dictionary(&dict.cdict)
                .map_err(ImageError::io("(zstd)"))?;
            c.include_checksum(false)
                .map_err(ImageError::io("(zstd)"))?;
            c.include_dictid(false).map_err(ImageError::io("(zstd)"))?;
            let z = c.compress(&data).map_err(ImageError::io("(zstd)"))?;
            if (z.len() as u64) < size {
                out.write_all(&z).map_err(ImageError::io("(bundle)"))?;
                encoding = Encoding::ZstdDict;
            } else {
                out.write_all(&data).map_err(ImageError::io("(bundle)"))?;
                encoding = Encoding::Raw;
            }
        }
        _ => {
            let mut enc = zstd::stream::write::Encoder::new(&mut *out, settings.level)
                .map_err(ImageError::io("(zstd)"))?;
            enc.set_pledged_src_size(Some(size))
                .map_err(ImageError::io("(zstd)"))?;
            enc.include_checksum(false)
                .map_err(ImageError::io("(zstd)"))?;
            let n = io::copy(&mut (&mut check).take(size), &mut enc).map_err(&err)?;
            enc.finish().map_err(ImageError::io("(bundle)"))?;
            if n != size {
                return Err(changed(label, size, n));
            }
            encoding = Encoding::Zstd;
            if out.written() >= size {
                // Compression did not help: store the bytes as they are.
                out.reset();
                check.inner.seek(SeekFrom::Start(0)).map_err(&err)?;
                check.hasher = VerityHasher::new();
                let n = io::copy(&mut (&mut check).take(size), out).map_err(&err)?;
                if n != size {
                    return Err(changed(label, size, n));
                }
                encoding = Encoding::Raw;
            }
        }
    }
    if check.hasher.len() != size {
        return Err(changed(label, size, check.hasher.len()));
    }
    if check.hasher.finish() != *digest {
        return Err(ImageError::Unsupported {
            path: label.to_owned(),
            detail: "changed while being read".into(),
        });
    }
    Ok(encoding)
}

fn changed(label: &Path, size: u64, n: u64) -> ImageError {
    ImageError::Unsupported {
        path: label.to_owned(),
        detail: format!("changed size while being read ({size} then {n} bytes)"),
    }
}

/// Where an encoding is written: it can tell how much was written and
/// start over.
pub trait Sink: Write {
    fn written(&self) -> u64;
    fn reset(&mut self);
}

impl Sink for Out<'_, '_> {
    fn written(&self) -> u64 {
        self.len()
    }
    fn reset(&mut self) {
        Out::reset(self)
    }
}

impl Sink for Count {
    fn written(&self) -> u64 {
        self.0
    }
    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// Counts what is written.
struct Count(u64);
impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encodes one object into `out`; `source` is its delta source, if a base
/// has one.
pub fn encode(
    reader: &mut dyn ReadSeek,
    label: &Path,
    size: u64,
    digest: &Digest,
    source: Option<(Digest, Box<dyn SourceObject>)>,
    settings: &Settings,
    out: &mut Out<'_, '_>,
) -> Result<Stored, ImageError> {
    if let Some((source_digest, source)) = source {
        // The usual encoding's size, to beat.
        let mut count = Count(0);
        usual(reader, label, size, digest, settings, &mut count)?;
        let usual_len = count.0;
        let limit = usual_len
            .saturating_sub((usual_len / 8).max(DELTA_MIN_SAVING))
            .min(size);
        // A fast probe first: most changed files that a delta does not help
        // (compressed data) are told apart at zstd level 3 for little CPU.
        let probe = if limit > 0 && settings.delta.level > PROBE_LEVEL {
            reader.seek(SeekFrom::Start(0)).map_err(io_err(label))?;
            let probe_options = EncodeOptions {
                level: PROBE_LEVEL,
                executables: false,
                ..settings.delta
            };
            delta::encode(reader, size, &*source, probe_options, limit, &mut Count(0))
                .map_err(io_err(label))?
        } else {
            Some(limit)
        };
        if let Some(probe) = probe.filter(|_| limit > 0) {
            reader.seek(SeekFrom::Start(0)).map_err(io_err(label))?;
            let mut check = Checked {
                inner: &mut *reader,
                hasher: VerityHasher::new(),
            };
            let made = delta::encode(
                &mut check,
                size,
                &*source,
                settings.delta,
                limit.max(probe),
                out,
            )
            .map_err(io_err(label))?;
            if made.is_some() {
                if check.hasher.finish() != *digest {
                    return Err(ImageError::Unsupported {
                        path: label.to_owned(),
                        detail: "changed while being read".into(),
                    });
                }
                return Ok(Stored {
                    size,
                    encoding: Encoding::Delta,
                    source: Some(source_digest),
                });
            }
            out.reset();
        }
    }
    let encoding = usual(reader, label, size, digest, settings, out)?;
    Ok(Stored {
        size,
        encoding,
        source: None,
    })
}
