//! Binary deltas of objects: an object stored as a patch against a source
//! object named by its fs-verity digest (container version 2, encoding 3).
//!
//! The object is cut into segments of [`SEGMENT`] bytes. Each segment is one
//! zstd frame made with zstd's "patch from" mode: the frame references a
//! window of the source object as a raw-content prefix (`ZSTD_CCtx_refPrefix`),
//! so every run of bytes the source shares with the segment is a match. The
//! window for segment `k` is the source's bytes
//! `[k·SEGMENT − MARGIN, (k+1)·SEGMENT + MARGIN)`, clipped to the source: a
//! segment finds what moved by up to [`MARGIN`] bytes. The stored bytes are,
//! for each segment in order, its frame's length (u32, little-endian) and the
//! frame.
//!
//! Container version 3 adds a second form of segment, for executables: the
//! length word's top bit set ([`BSDIFF_FLAG`]), the frame is a plain zstd
//! frame of a bsdiff-style patch against the same window (see [`patch`]):
//! copies of approximately matching source runs with their byte-wise
//! differences, which turn an address that moved by a constant into a run
//! of equal small bytes, and literal bytes. The encoder makes both forms of
//! an executable's segment and keeps the smaller.
//!
//! Both sides therefore hold at most one window, one frame and one segment at
//! a time, whatever the object's size: decoding needs at most
//! [`DECODE_MEMORY_BOUND`] bytes of buffers. Every length read from the
//! bundle is checked before anything is allocated for it, and each frame must
//! decode to exactly its segment's length. The result is checked against
//! the object's digest by the caller, like every object: a delta applied to
//! the wrong bytes (a damaged source on a store without fs-verity) gives an
//! object that fails that check and is never stored.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

use super::BundleError;
use crate::Digest;

pub mod patch;

/// Bytes of the object per zstd frame.
pub const SEGMENT: u64 = 4 << 20;
/// How far before and after its segment a frame's source window reaches.
pub const MARGIN: u64 = 4 << 20;
/// Largest source window: a segment plus a margin on either side.
pub const MAX_WINDOW: u64 = SEGMENT + 2 * MARGIN;
/// Largest frame accepted: zstd's bound for a [`SEGMENT`] of incompressible
/// bytes (`ZSTD_compressBound`), rounded up.
pub const MAX_FRAME: u64 = SEGMENT + SEGMENT / 128 + 4096;
/// The top bit of a segment's length word: the frame is a bsdiff-style
/// patch ([`patch`]) rather than a zstd patch-from frame.
pub const BSDIFF_FLAG: u32 = 1 << 31;
/// Largest decoded bsdiff-style patch: its control count, at most
/// [`patch::MAX_CONTROLS`] controls and exactly a segment of difference and
/// literal bytes.
pub const MAX_PATCH: u64 = 4 + patch::MAX_CONTROLS * patch::CONTROL_SIZE + SEGMENT;
/// Largest frame of a bsdiff-style segment: zstd's bound for a
/// [`MAX_PATCH`] of incompressible bytes, rounded up.
pub const MAX_PATCH_FRAME: u64 = MAX_PATCH + MAX_PATCH / 128 + 4096;
/// Buffers a decode holds at once: a window, a frame, a decoded patch and a
/// segment (plus zstd's decoding context, about 160 KiB, which needs no
/// window buffer since every frame is decoded in one call into a buffer of
/// the size its header states, checked first).
pub const DECODE_MEMORY_BOUND: u64 = MAX_WINDOW + MAX_PATCH_FRAME + MAX_PATCH + SEGMENT;

/// A source object's bytes, read at any offset.
pub trait SourceObject: Send + Sync {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl SourceObject for File {
    fn len(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl SourceObject for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
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

/// Where the sources of deltas are found: the device's store, an extracted
/// bundle, a build host's base. Passed explicitly to whoever decodes.
pub trait Sources: Sync {
    /// The object named `digest`, or `None` when it is not held here.
    fn open(&self, digest: &Digest) -> io::Result<Option<Box<dyn SourceObject>>>;
}

/// No sources at all: decoding a delta fails, naming the source it needs.
pub struct NoSources;

impl Sources for NoSources {
    fn open(&self, _: &Digest) -> io::Result<Option<Box<dyn SourceObject>>> {
        Ok(None)
    }
}

/// An `objects/xx/<62 hex>` directory (`bundle extract`'s layout) as
/// sources. The files are not checked here: a delta decoded against the
/// wrong bytes fails its own digest check.
pub struct ObjectDir(pub std::path::PathBuf);

impl Sources for ObjectDir {
    fn open(&self, digest: &Digest) -> io::Result<Option<Box<dyn SourceObject>>> {
        let hex = digest.to_hex();
        match File::open(self.0.join(&hex[..2]).join(&hex[2..])) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Several places to find sources in, tried in order.
pub struct Chain<'a>(pub Vec<&'a dyn Sources>);

impl Sources for Chain<'_> {
    fn open(&self, digest: &Digest) -> io::Result<Option<Box<dyn SourceObject>>> {
        for s in &self.0 {
            if let Some(o) = s.open(digest)? {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }
}

/// The source window of segment `k` for a source of `source_len` bytes.
pub fn window(k: u64, source_len: u64) -> (u64, u64) {
    let start = (k * SEGMENT).saturating_sub(MARGIN).min(source_len);
    let end = ((k + 1) * SEGMENT + MARGIN).min(source_len);
    (start, end)
}

/// How many segments an object of `size` bytes has.
pub fn segments(size: u64) -> u64 {
    size.div_ceil(SEGMENT)
}

/// Makes `buf` `n` bytes long. A buffer too small is freed before the new
/// one is allocated, and exactly `n` bytes are reserved: growing in place
/// (or amortized) would hold more than the bound for a moment.
fn sized(buf: &mut Vec<u8>, n: usize) {
    if buf.capacity() < n {
        *buf = Vec::new();
        buf.reserve_exact(n);
    }
    buf.resize(n, 0);
}

/// Reads a source window into `buf` (resized, never beyond [`MAX_WINDOW`]).
fn read_window(
    source: &dyn SourceObject,
    k: u64,
    source_len: u64,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let (start, end) = window(k, source_len);
    sized(buf, (end - start) as usize);
    source.read_exact_at(buf, start)
}

/// Decodes a delta of `stored_len` bytes (read from `stored`) into an object
/// of `size` bytes, handing the output to `emit` segment by segment.
pub fn decode(
    digest: &Digest,
    source_digest: &Digest,
    stored: &mut dyn Read,
    stored_len: u64,
    size: u64,
    source: &dyn SourceObject,
    emit: &mut dyn FnMut(&[u8]) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    let corrupt = |detail: String| BundleError::ObjectDecode {
        digest: *digest,
        detail,
    };
    let read_err = |source| BundleError::Read {
        region: super::Region::Object(*digest),
        source,
    };
    let source_err = |e: io::Error| BundleError::DeltaSourceUnreadable {
        digest: *digest,
        source_digest: *source_digest,
        detail: e.to_string(),
    };
    let source_len = source.len();
    let mut left = stored_len;
    let mut frame = Vec::new();
    let mut window_buf = Vec::new();
    let mut patch_buf = Vec::new();
    let mut out = Vec::new();
    for k in 0..segments(size) {
        let seg_len = (size - k * SEGMENT).min(SEGMENT) as usize;
        let mut len = [0u8; 4];
        if left < 4 {
            return Err(corrupt(format!(
                "the delta ends before segment {k} of {}",
                segments(size)
            )));
        }
        stored.read_exact(&mut len).map_err(read_err)?;
        left -= 4;
        let word = u32::from_le_bytes(len);
        let bsdiff = word & BSDIFF_FLAG != 0;
        let frame_len = u64::from(word & !BSDIFF_FLAG);
        let (max, form) = if bsdiff {
            (MAX_PATCH_FRAME, "bsdiff-form ")
        } else {
            (MAX_FRAME, "")
        };
        if frame_len == 0 || frame_len > max || frame_len > left {
            return Err(corrupt(format!(
                "segment {k} claims a {frame_len}-byte {form}frame ({left} bytes left, at most {max})"
            )));
        }
        sized(&mut frame, frame_len as usize);
        stored.read_exact(&mut frame).map_err(read_err)?;
        left -= frame_len;
        read_window(source, k, source_len, &mut window_buf).map_err(source_err)?;
        sized(&mut out, seg_len);
        out.clear();
        if bsdiff {
            let claimed = zstd_safe::get_frame_content_size(&frame)
                .ok()
                .flatten()
                .filter(|&n| n <= MAX_PATCH)
                .ok_or_else(|| {
                    corrupt(format!(
                        "segment {k}: the patch's frame states no size of at most {MAX_PATCH} bytes"
                    ))
                })?;
            sized(&mut patch_buf, claimed as usize);
            patch_buf.clear();
            let n = DCtx::create()
                .decompress(&mut patch_buf, &frame)
                .map_err(|c| corrupt(format!("segment {k}: {}", zstd_safe::get_error_name(c))))?;
            if n as u64 != claimed {
                return Err(corrupt(format!(
                    "segment {k}: the patch decodes to {n} bytes, its frame says {claimed}"
                )));
            }
            patch::apply(&patch_buf, &window_buf, seg_len, &mut out)
                .map_err(|e| corrupt(format!("segment {k}: {e}")))?;
            emit(&out)?;
            continue;
        }
        let mut dctx = DCtx::create();
        dctx.ref_prefix(&window_buf[..])
            .map_err(|c| corrupt(zstd_safe::get_error_name(c).to_owned()))?;
        let n = dctx
            .decompress(&mut out, &frame)
            .map_err(|c| corrupt(format!("segment {k}: {}", zstd_safe::get_error_name(c))))?;
        if n != seg_len {
            return Err(corrupt(format!(
                "segment {k} decodes to {n} bytes, expected {seg_len}"
            )));
        }
        emit(&out)?;
    }
    if left != 0 {
        return Err(corrupt(format!(
            "{left} bytes follow the last segment of the delta"
        )));
    }
    Ok(())
}

/// Windows (plus segment) above this size get long-distance matching.
const LONG_DISTANCE_FROM: u64 = 2 << 20;

/// Settings for making deltas on the build host.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    pub level: i32,
    /// Long-distance matching (finds matches far back in a large window).
    pub long_distance: bool,
    /// Also make the bsdiff-style form of each segment of an executable
    /// (an ELF object) and keep the smaller (container version 3).
    pub executables: bool,
}

/// Makes the delta of `target` (`size` bytes, read in order) against
/// `source`, writing it to `out`. Gives up, returning `Ok(None)`, as soon as
/// the delta would exceed `limit` bytes (the caller then stores the object
/// its usual way, discarding what was written); else returns its length.
pub fn encode(
    target: &mut dyn Read,
    size: u64,
    source: &dyn SourceObject,
    options: EncodeOptions,
    limit: u64,
    out: &mut dyn io::Write,
) -> io::Result<Option<u64>> {
    let source_len = source.len();
    let mut window_buf = Vec::new();
    let mut seg = Vec::new();
    let mut frame = Vec::new();
    let mut scratch = patch::Scratch::default();
    let mut executable = false;
    let mut written = 0u64;
    for k in 0..segments(size) {
        let seg_len = (size - k * SEGMENT).min(SEGMENT) as usize;
        seg.resize(seg_len, 0);
        target.read_exact(&mut seg)?;
        if k == 0 {
            executable = options.executables && seg.starts_with(b"\x7fELF");
        }
        read_window(source, k, source_len, &mut window_buf)?;
        patch_from_frame(&window_buf, &seg, options, &mut frame)?;
        debug_assert!(frame.len() as u64 <= MAX_FRAME);
        let mut word = frame.len() as u32;
        if executable
            && let Some(p) = patch::make(&window_buf, &seg, options.level, &mut scratch)?
            && p.len() < frame.len()
        {
            frame = p;
            word = BSDIFF_FLAG | frame.len() as u32;
        }
        written += 4 + frame.len() as u64;
        if written > limit {
            return Ok(None);
        }
        out.write_all(&word.to_le_bytes())?;
        out.write_all(&frame)?;
    }
    Ok(Some(written))
}

/// The zstd patch-from frame of `seg` against `window`, into `frame`.
pub(crate) fn patch_from_frame(
    window: &[u8],
    seg: &[u8],
    options: EncodeOptions,
    frame: &mut Vec<u8>,
) -> io::Result<()> {
    let zerr = |c| io::Error::other(zstd_safe::get_error_name(c));
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(options.level))
        .map_err(zerr)?;
    let needed = (window.len() + seg.len()).max(1 << 10) as u64;
    let wlog = (64 - (needed - 1).leading_zeros()).clamp(10, 27);
    cctx.set_parameter(CParameter::WindowLog(wlog))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::DictIdFlag(false))
        .map_err(zerr)?;
    // Beyond a few MiB the match finder's tables cover little of the
    // window; long-distance matching finds the rest (as `zstd
    // --patch-from` does for large inputs).
    if options.long_distance || needed > LONG_DISTANCE_FROM {
        cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
            .map_err(zerr)?;
    }
    cctx.set_pledged_src_size(Some(seg.len() as u64))
        .map_err(zerr)?;
    cctx.ref_prefix(window).map_err(zerr)?;
    frame.clear();
    frame.reserve_exact(zstd_safe::compress_bound(seg.len()));
    cctx.compress2(frame, seg).map_err(zerr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<u8> {
        crate::demo::noise(seed, n)
    }

    #[test]
    fn a_patch_from_frame_may_be_larger_than_a_segment() {
        // The image delta is one frame of a whole image (more than a
        // segment); only delta segments are bounded by MAX_FRAME.
        let base = pseudo(1 << 20, 7);
        let image = pseudo((SEGMENT + (1 << 20)) as usize, 8);
        let mut frame = Vec::new();
        patch_from_frame(&base, &image, opts(), &mut frame).unwrap();
        assert!(frame.len() as u64 > MAX_FRAME);
    }

    fn opts() -> EncodeOptions {
        EncodeOptions {
            level: 3,
            long_distance: false,
            executables: true,
        }
    }

    fn round_trip(source: &Vec<u8>, target: &[u8]) -> Vec<u8> {
        let mut delta = Vec::new();
        let n = encode(
            &mut &target[..],
            target.len() as u64,
            source,
            opts(),
            u64::MAX,
            &mut delta,
        )
        .unwrap();
        assert_eq!(n, Some(delta.len() as u64));
        let mut got = Vec::new();
        decode(
            &Digest([1; 32]),
            &Digest([2; 32]),
            &mut &delta[..],
            delta.len() as u64,
            target.len() as u64,
            source,
            &mut |b| {
                got.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, target);
        delta
    }

    #[test]
    fn similar_objects_give_small_deltas_across_segments() {
        // Three segments; the change shifts everything after it by 1000 bytes.
        let source = pseudo(10 << 20, 1);
        let mut target = source.clone();
        target.splice(5 << 20..5 << 20, pseudo(1000, 2));
        target.truncate(11 << 20);
        let delta = round_trip(&source, &target);
        assert!(delta.len() < 20_000, "{} bytes", delta.len());
        // Unrelated bytes still round-trip.
        round_trip(&pseudo(100, 3), &pseudo(70_000, 4));
        round_trip(&Vec::new(), &pseudo(5000, 5));
    }

    #[test]
    fn encode_gives_up_past_the_limit() {
        let mut out = Vec::new();
        let t = pseudo(100_000, 9);
        let n = encode(
            &mut &t[..],
            100_000,
            &pseudo(1000, 8),
            opts(),
            50_000,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, None);
    }

    #[test]
    fn damaged_deltas_and_sources_fail_without_panicking() {
        let source = pseudo(300_000, 1);
        let mut target = source.clone();
        target[1000] ^= 1;
        let delta = round_trip(&source, &target);
        let decode_with = |d: &[u8], src: &Vec<u8>, size: u64| {
            let mut n = 0u64;
            decode(
                &Digest([1; 32]),
                &Digest([2; 32]),
                &mut &d[..],
                d.len() as u64,
                size,
                src,
                &mut |b| {
                    n += b.len() as u64;
                    Ok(())
                },
            )
            .map(|()| n)
        };
        // Every truncation and every single-byte change: an error or output
        // of exactly the size (the digest check catches the rest).
        for cut in 0..delta.len() {
            assert!(decode_with(&delta[..cut], &source, target.len() as u64).is_err());
        }
        for i in 0..delta.len() {
            let mut d = delta.clone();
            d[i] ^= 0x5a;
            if let Ok(n) = decode_with(&d, &source, target.len() as u64) {
                assert_eq!(n, target.len() as u64);
            }
        }
        // A frame length beyond the bound is refused before allocating.
        for (word, says) in [
            (
                MAX_FRAME as u32 + 1,
                format!("claims a {}-byte frame", MAX_FRAME + 1),
            ),
            (
                u32::MAX,
                "claims a 2147483647-byte bsdiff-form frame".into(),
            ),
            (
                BSDIFF_FLAG | (MAX_PATCH_FRAME as u32 + 1),
                format!("at most {MAX_PATCH_FRAME}"),
            ),
        ] {
            let mut huge = word.to_le_bytes().to_vec();
            huge.extend_from_slice(&[0; 16]);
            let err = decode_with(&huge, &source, 1 << 40)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&says), "{err}");
        }
        // A source shorter than the one the delta was made against.
        let short = source[..1000].to_vec();
        assert!(decode_with(&delta, &short, target.len() as u64).is_err());
        // A claimed size larger than the delta holds.
        assert!(decode_with(&delta, &source, 100 << 20).is_err());
    }
}
