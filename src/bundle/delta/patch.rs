//! The bsdiff-style form of a delta segment (container version 3).
//!
//! A segment of an executable changes in a way zstd's patch-from matches
//! poorly: code that moved shifts every address that points past it by a
//! constant, so the new bytes are the old bytes *plus a few small
//! differences* every few bytes, and each difference breaks a match.
//! bsdiff (Colin Percival, "Naïve differences of executable code", 2003)
//! stores instead, for approximately matching runs, the byte-wise
//! difference new − old, which is mostly zeros and a few repeated values,
//! and lets a general compressor (here zstd, over the whole patch) shrink it.
//!
//! The decoded patch of one segment is
//!
//! ```text
//! u32 n                      control count, at most MAX_CONTROLS
//! n × (u32 add, u32 copy, i32 seek)
//! the difference bytes       Σ add of them
//! the literal bytes          Σ copy of them; Σ add + Σ copy = the segment
//! ```
//!
//! all little-endian. Applying it starts at the window's first byte; for each
//! control, `add` bytes are source byte + difference byte (wrapping), the
//! source position advancing with them; then `copy` literal bytes; then the
//! source position moves by `seek`. Every count is checked against what the
//! patch, the window and the segment hold before it is used, so a hostile
//! patch yields an error, never a read or write out of bounds, and the
//! output is exactly the segment's length or nothing.

use std::io;

use zstd::zstd_safe::{self, CCtx, CParameter};

use super::SEGMENT;

/// Bytes of one control.
pub const CONTROL_SIZE: u64 = 12;
/// Most controls a segment's patch may hold: one per 16 bytes of segment.
/// The encoder falls back to the patch-from form beyond it.
pub const MAX_CONTROLS: u64 = SEGMENT / 16;

/// Work (bytes compared) the encoder spends on a segment before it gives up
/// on this form, per byte of segment: bsdiff's search is quadratic on some
/// inputs (long runs that match in many places), and a build must not
/// stall on one object.
const WORK_PER_BYTE: u64 = 256;

/// Buffers reused from segment to segment while encoding.
#[derive(Default)]
pub struct Scratch {
    sa: Vec<i32>,
    controls: Vec<(u32, u32, i32)>,
    diff: Vec<u8>,
    extra: Vec<u8>,
    patch: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Applies a decoded `patch` to `window`, appending the segment of
/// `seg_len` bytes to `out` (empty, with room for `seg_len` bytes).
pub fn apply(patch: &[u8], window: &[u8], seg_len: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if patch.len() < 4 {
        return Err(format!("a {}-byte patch has no control count", patch.len()));
    }
    let n = u64::from(u32_at(patch, 0));
    if n > MAX_CONTROLS {
        return Err(format!(
            "the patch claims {n} controls (at most {MAX_CONTROLS})"
        ));
    }
    let data_at = 4 + (n * CONTROL_SIZE) as usize;
    if data_at > patch.len() {
        return Err(format!(
            "the patch's {n} controls need {data_at} bytes, it has {}",
            patch.len()
        ));
    }
    let controls = &patch[4..data_at];
    let data = &patch[data_at..];
    if data.len() != seg_len {
        return Err(format!(
            "the patch carries {} bytes of differences and literals for a {seg_len}-byte segment",
            data.len()
        ));
    }
    let control = |i: usize| {
        let c = &controls[i * CONTROL_SIZE as usize..];
        (
            u32_at(c, 0) as usize,
            u32_at(c, 4) as usize,
            i64::from(u32_at(c, 8) as i32),
        )
    };
    let mut diff_total = 0usize;
    for i in 0..n as usize {
        diff_total = diff_total.saturating_add(control(i).0);
    }
    if diff_total > seg_len {
        return Err(format!(
            "the controls add {diff_total} bytes to a {seg_len}-byte segment"
        ));
    }
    let (diff, extra) = data.split_at(diff_total);
    let (mut pos, mut d, mut e) = (0usize, 0usize, 0usize);
    for i in 0..n as usize {
        let (add, copy, seek) = control(i);
        // Σ add = diff.len(), so `d + add` stays within `diff`.
        let old = pos
            .checked_add(add)
            .and_then(|end| window.get(pos..end))
            .ok_or_else(|| {
                format!(
                    "control {i} adds {add} bytes at {pos} of a {}-byte source window",
                    window.len()
                )
            })?;
        out.extend(
            diff[d..d + add]
                .iter()
                .zip(old)
                .map(|(x, y)| x.wrapping_add(*y)),
        );
        d += add;
        pos += add;
        let lit = e
            .checked_add(copy)
            .and_then(|end| extra.get(e..end))
            .ok_or_else(|| {
                format!(
                    "control {i} copies {copy} literal bytes, {} are left",
                    extra.len() - e
                )
            })?;
        out.extend_from_slice(lit);
        e += copy;
        let to = pos as i64 + seek;
        if to < 0 || to as u64 > window.len() as u64 {
            return Err(format!(
                "control {i} seeks to {to}, outside the {}-byte source window",
                window.len()
            ));
        }
        pos = to as usize;
    }
    if e != extra.len() {
        return Err(format!(
            "{} literal bytes are left after the last control",
            extra.len() - e
        ));
    }
    debug_assert_eq!(out.len(), seg_len);
    Ok(())
}

/// Length of the common prefix of `a` and `b`.
fn common(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap())
            ^ u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// The longest match of a prefix of `new` among the suffixes of `old`
/// (sorted in `sa`, not empty): its position and length.
fn search(sa: &[i32], old: &[u8], new: &[u8], work: &mut u64) -> (usize, usize) {
    let (mut st, mut en) = (0usize, sa.len() - 1);
    while en - st >= 2 {
        let x = st + (en - st) / 2;
        let p = sa[x] as usize;
        let l = common(&old[p..], new);
        *work += l as u64 + 1;
        // old[p..] < new in lexicographic order: a proper prefix of new is
        // less (bsdiff's memcmp calls it equal, and on long runs its search
        // then drifts to the shortest suffixes and finds matches of a few
        // bytes).
        let less = if p + l == old.len() {
            l < new.len()
        } else {
            l < new.len() && old[p + l] < new[l]
        };
        if less {
            st = x;
        } else {
            en = x;
        }
    }
    let (ps, pe) = (sa[st] as usize, sa[en] as usize);
    let x = common(&old[ps..], new);
    let y = common(&old[pe..], new);
    *work += (x + y) as u64 + 2;
    if x > y { (ps, x) } else { (pe, y) }
}

/// Makes the compressed bsdiff-style patch of `new` against `old` at zstd
/// `level`; `None` when this form does not suit the segment (no source,
/// too many controls, too much work).
pub fn make(
    old: &[u8],
    new: &[u8],
    level: i32,
    scratch: &mut Scratch,
) -> io::Result<Option<Vec<u8>>> {
    if old.is_empty() || old.len() >= i32::MAX as usize || new.len() as u64 > SEGMENT {
        return Ok(None);
    }
    if !diff(old, new, scratch) {
        return Ok(None);
    }
    let Scratch {
        controls,
        diff,
        extra,
        patch,
        ..
    } = scratch;
    patch.clear();
    patch.extend((controls.len() as u32).to_le_bytes());
    for &(add, copy, seek) in controls.iter() {
        patch.extend(add.to_le_bytes());
        patch.extend(copy.to_le_bytes());
        patch.extend(seek.to_le_bytes());
    }
    patch.extend_from_slice(diff);
    patch.extend_from_slice(extra);
    debug_assert!(patch.len() as u64 <= super::MAX_PATCH);
    let zerr = |c| io::Error::other(zstd_safe::get_error_name(c));
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(zerr)?;
    cctx.set_pledged_src_size(Some(patch.len() as u64))
        .map_err(zerr)?;
    let mut frame = Vec::with_capacity(zstd_safe::compress_bound(patch.len()));
    cctx.compress2(&mut frame, patch).map_err(zerr)?;
    debug_assert!(frame.len() as u64 <= super::MAX_PATCH_FRAME);
    Ok(Some(frame))
}

/// bsdiff 4's difference algorithm over one segment: fills the scratch's
/// controls, difference and literal bytes. False when it gives up.
fn diff(old: &[u8], new: &[u8], s: &mut Scratch) -> bool {
    s.sa.clear();
    s.sa.resize(old.len(), 0);
    cdivsufsort::sort_in_place(old, &mut s.sa);
    s.controls.clear();
    s.diff.clear();
    s.extra.clear();
    let budget = WORK_PER_BYTE * new.len() as u64 + (1 << 20);
    let mut work = 0u64;
    let (oldsize, newsize) = (old.len() as isize, new.len() as isize);
    let (mut scan, mut len, mut pos) = (0isize, 0isize, 0isize);
    let (mut lastscan, mut lastpos, mut lastoffset) = (0isize, 0isize, 0isize);
    let at_old = |i: isize| old[i as usize];
    let at_new = |i: isize| new[i as usize];
    while scan < newsize {
        let mut oldscore = 0isize;
        scan += len;
        let mut scsc = scan;
        while scan < newsize {
            let (p, l) = search(&s.sa, old, &new[scan as usize..], &mut work);
            (pos, len) = (p as isize, l as isize);
            while scsc < scan + len {
                if scsc + lastoffset < oldsize && at_old(scsc + lastoffset) == at_new(scsc) {
                    oldscore += 1;
                }
                scsc += 1;
            }
            work += len as u64 + 1;
            if work > budget {
                return false;
            }
            if (len == oldscore && len != 0) || len > oldscore + 8 {
                break;
            }
            if scan + lastoffset < oldsize && at_old(scan + lastoffset) == at_new(scan) {
                oldscore -= 1;
            }
            scan += 1;
        }
        if len != oldscore || scan == newsize {
            // How far the previous match extends forward, approximately.
            let (mut sc, mut sf, mut lenf) = (0isize, 0isize, 0isize);
            let mut i = 0isize;
            while lastscan + i < scan && lastpos + i < oldsize {
                if at_old(lastpos + i) == at_new(lastscan + i) {
                    sc += 1;
                }
                i += 1;
                if sc * 2 - i > sf * 2 - lenf {
                    sf = sc;
                    lenf = i;
                }
            }
            // And how far the new one extends backward.
            let mut lenb = 0isize;
            if scan < newsize {
                let (mut sc, mut sb) = (0isize, 0isize);
                let mut i = 1isize;
                while scan >= lastscan + i && pos >= i {
                    if at_old(pos - i) == at_new(scan - i) {
                        sc += 1;
                    }
                    if sc * 2 - i > sb * 2 - lenb {
                        sb = sc;
                        lenb = i;
                    }
                    i += 1;
                }
            }
            // Where the two overlap, the best cut between them.
            if lastscan + lenf > scan - lenb {
                let overlap = (lastscan + lenf) - (scan - lenb);
                let (mut sc, mut ss, mut lens) = (0isize, 0isize, 0isize);
                for i in 0..overlap {
                    if at_new(lastscan + lenf - overlap + i) == at_old(lastpos + lenf - overlap + i)
                    {
                        sc += 1;
                    }
                    if at_new(scan - lenb + i) == at_old(pos - lenb + i) {
                        sc -= 1;
                    }
                    if sc > ss {
                        ss = sc;
                        lens = i + 1;
                    }
                }
                lenf += lens - overlap;
                lenb -= lens;
            }
            work += (scan - lastscan) as u64;
            let (ls, lp) = (lastscan as usize, lastpos as usize);
            let lf = lenf as usize;
            s.diff.extend(
                new[ls..ls + lf]
                    .iter()
                    .zip(&old[lp..lp + lf])
                    .map(|(n, o)| n.wrapping_sub(*o)),
            );
            let extra_end = (scan - lenb) as usize;
            s.extra.extend_from_slice(&new[ls + lf..extra_end]);
            let seek = (pos - lenb) - (lastpos + lenf);
            s.controls
                .push((lf as u32, (extra_end - ls - lf) as u32, seek as i32));
            if s.controls.len() as u64 > MAX_CONTROLS {
                return false;
            }
            lastscan = scan - lenb;
            lastpos = pos - lenb;
            lastoffset = pos - scan;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        crate::demo::noise(seed, n)
    }

    fn round_trip(old: &[u8], new: &[u8]) -> Option<usize> {
        let mut scratch = Scratch::default();
        let frame = make(old, new, 3, &mut scratch).unwrap()?;
        let patch = zstd::bulk::decompress(&frame, super::super::MAX_PATCH as usize).unwrap();
        let mut out = Vec::with_capacity(new.len());
        apply(&patch, old, new.len(), &mut out).unwrap();
        assert_eq!(out, new);
        Some(frame.len())
    }

    /// A stand-in for code: records that point at each other, every pointer
    /// shifted by `shift` when `shift` is not zero.
    fn code(n: usize, shift: u32) -> Vec<u8> {
        let words = noise(n, 7);
        let mut out = Vec::with_capacity(n);
        for (i, c) in words.chunks(8).enumerate() {
            out.extend_from_slice(&c[..4]);
            let target = (i as u32).wrapping_mul(2654435761) % 100_000;
            let at = if target > 1000 {
                target + shift
            } else {
                target
            };
            out.extend_from_slice(&at.to_le_bytes()[..c.len().saturating_sub(4).min(4)]);
        }
        out.truncate(n);
        out
    }

    #[test]
    fn shifted_addresses_make_a_small_patch() {
        let old = code(1 << 20, 0);
        let new = code(1 << 20, 48);
        let patch = round_trip(&old, &new).unwrap();
        // The patch-from form of the same change, for comparison.
        let mut pf = Vec::new();
        super::super::patch_from_frame(
            &old,
            &new,
            super::super::EncodeOptions {
                level: 3,
                long_distance: false,
                executables: false,
            },
            &mut pf,
        )
        .unwrap();
        assert!(
            patch * 2 < pf.len(),
            "bsdiff {patch}, patch-from {}",
            pf.len()
        );
    }

    #[test]
    fn edge_cases_round_trip() {
        let old = noise(100_000, 1);
        let mut new = old.clone();
        new.splice(50_000..50_000, noise(333, 2));
        new[10] ^= 0xff;
        round_trip(&old, &new).unwrap();
        round_trip(&old, &old).unwrap();
        round_trip(&old, &[]).unwrap();
        round_trip(&old[..1], &old[..1]).unwrap();
        round_trip(&old, &noise(5000, 3)).unwrap();
        round_trip(&[0; 5000], &[0; 7000]).unwrap();
        assert_eq!(round_trip(&[], &old), None);
    }

    #[test]
    fn hostile_patches_are_refused() {
        let window = noise(1000, 1);
        let run = |p: &[u8], seg: usize| {
            let mut out = Vec::with_capacity(seg);
            let r = apply(p, &window, seg, &mut out);
            assert!(out.len() <= seg);
            r
        };
        let control = |n: u32, c: &[(u32, u32, i32)], data: &[u8]| {
            let mut p = n.to_le_bytes().to_vec();
            for &(a, b, s) in c {
                p.extend(a.to_le_bytes());
                p.extend(b.to_le_bytes());
                p.extend(s.to_le_bytes());
            }
            p.extend_from_slice(data);
            p
        };
        let err = |p: Vec<u8>, seg: usize| run(&p, seg).unwrap_err();
        assert!(err(vec![1, 2], 0).contains("no control count"));
        assert!(err(control(u32::MAX, &[], &[]), 0).contains("controls (at most"));
        assert!(err(control(2, &[(1, 0, 0)], &[0]), 1).contains("need"));
        assert!(err(control(0, &[], &[0; 5]), 4).contains("5 bytes of differences"));
        assert!(err(control(1, &[(u32::MAX, 0, 0)], &[0; 8]), 8).contains("add 4294967295"));
        // Reading past the window.
        let e = err(control(2, &[(0, 0, 995), (8, 0, 0)], &[0; 8]), 8);
        assert!(e.contains("adds 8 bytes at 995"), "{e}");
        // Seeking before the start, and past the end.
        assert!(err(control(1, &[(0, 4, -1)], &[0; 4]), 4).contains("seeks to -1"));
        assert!(err(control(1, &[(0, 4, 1001)], &[0; 4]), 4).contains("seeks to 1001"));
        // More literals claimed than left, and some left unclaimed.
        assert!(err(control(1, &[(0, 9, 0)], &[0; 8]), 8).contains("copies 9"));
        assert!(err(control(1, &[(0, 7, 0)], &[0; 8]), 8).contains("1 literal bytes are left"));
        // A good one.
        let mut out = Vec::new();
        apply(
            &control(1, &[(4, 4, 0)], &[1, 1, 1, 1, 9, 9, 9, 9]),
            &window,
            8,
            &mut out,
        )
        .unwrap();
        let plus_one: Vec<u8> = window[..4].iter().map(|b| b.wrapping_add(1)).collect();
        assert_eq!(out[..4], plus_one[..]);
        assert_eq!(out[4..], [9; 4]);
    }
}
