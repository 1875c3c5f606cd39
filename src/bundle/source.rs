//! Random access to a bundle's bytes.
//!
//! The reader only ever asks for byte ranges, so a bundle can come from a
//! local file, an already-open file descriptor or an HTTP(S) server that
//! answers range requests ([`crate::net::HttpSource`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A source of bundle bytes with random access.
pub trait ReadAt: Send + Sync {
    /// The total size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; fails if the source ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The `(offset, len)` ranges about to be read, in order: a remote
    /// source fetches them ahead (merged, in parallel). A hint only: reads
    /// outside it work as ever.
    fn prefetch(&self, _ranges: &[(u64, u64)]) {}
    /// Bytes transferred from a remote source so far.
    fn transferred(&self) -> Option<u64> {
        None
    }
    /// Where the bytes come from, for messages (a URL), if not a local file.
    fn origin(&self) -> Option<String> {
        None
    }
}

/// A local file (or file descriptor), read with `pread` so that several
/// threads can read at once. The size is taken once, at open.
pub struct FileSource {
    file: File,
    size: u64,
}

impl FileSource {
    pub fn new(file: File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(Self { file, size })
    }
}

impl ReadAt for FileSource {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} is beyond the end of the {}-byte bundle",
                    buf.len(),
                    self.size
                ),
            ));
        }
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// Bundle bytes held in memory (tests, small bundles).
impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// `Read` over a byte range of a [`ReadAt`], for streaming decoders.
pub struct RangeReader<'a> {
    source: &'a dyn ReadAt,
    pos: u64,
    end: u64,
}

impl<'a> RangeReader<'a> {
    pub fn new(source: &'a dyn ReadAt, offset: u64, len: u64) -> Self {
        Self {
            source,
            pos: offset,
            end: offset.saturating_add(len),
        }
    }
}

impl io::Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.source.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
