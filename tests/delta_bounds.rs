//! Hostile deltas: truncated, bit-flipped, random and forged patches never
//! panic, and decoding one never holds more than the stated bound of
//! memory (`delta::DECODE_MEMORY_BOUND`), whatever sizes they claim.
//!
//! A counting allocator records the peak of live heap bytes while each patch
//! decodes. (zstd's own decoding context, a fixed ~160 KiB allocated by the C
//! library, is outside Rust's allocator and outside the count.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use didymos::Digest;
use didymos::bundle::delta::{self, DECODE_MEMORY_BOUND, EncodeOptions, SEGMENT};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// One measurement at a time (the test harness runs tests on threads).
static SERIAL: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarding to the system allocator with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    didymos::demo::noise(seed, n)
}

/// Decodes `patch` claiming `size` bytes; returns the peak of extra live
/// heap bytes and whether it succeeded.
fn decode(patch: &[u8], size: u64, source: &Vec<u8>) -> (usize, bool) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let ok = delta::decode(
        &Digest([1; 32]),
        &Digest([2; 32]),
        &mut &patch[..],
        patch.len() as u64,
        size,
        source,
        &mut |_| Ok(()),
    )
    .is_ok();
    (PEAK.load(Ordering::Relaxed).saturating_sub(base), ok)
}

#[test]
fn hostile_patches_are_bounded_and_never_panic() {
    let _serial = SERIAL.lock().unwrap();
    // A real delta over three segments of a 40 MiB source.
    let source = pseudo(40 << 20, 1);
    let mut target = source[..(9 << 20)].to_vec();
    target[5000] ^= 1;
    target.splice(6 << 20..6 << 20, pseudo(777, 2));
    let mut good = Vec::new();
    delta::encode(
        &mut &target[..],
        target.len() as u64,
        &source,
        EncodeOptions {
            level: 3,
            long_distance: false,
            executables: true,
        },
        u64::MAX,
        &mut good,
    )
    .unwrap();
    let size = target.len() as u64;
    let (peak, ok) = decode(&good, size, &source);
    assert!(ok);
    assert!(peak as u64 <= DECODE_MEMORY_BOUND, "{peak}");

    let mut worst = peak;
    let mut check = |patch: &[u8], size: u64| {
        let (peak, _) = decode(patch, size, &source);
        worst = worst.max(peak);
    };
    // Truncations.
    for cut in (0..good.len()).step_by(good.len() / 40 + 1) {
        check(&good[..cut], size);
    }
    // Bit flips all over, including the frame lengths.
    let mut x = 12345u64;
    for _ in 0..80 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut p = good.clone();
        let at = (x >> 33) as usize % p.len();
        p[at] ^= 1 << ((x >> 8) % 8);
        check(&p, size);
    }
    // Forged frame lengths: the largest accepted, and one past it, with a
    // claimed object size of 1 TiB.
    for len in [
        delta::MAX_FRAME as u32,
        delta::MAX_FRAME as u32 + 1,
        u32::MAX,
    ] {
        let mut p = len.to_le_bytes().to_vec();
        p.extend(pseudo(delta::MAX_FRAME as usize + 16, 3));
        check(&p, 1 << 40);
    }
    // Random garbage of many sizes.
    for (i, n) in [0usize, 1, 3, 4, 5, 100, 4096, 1 << 20]
        .into_iter()
        .enumerate()
    {
        check(&pseudo(n, i as u64 + 10), size);
        check(&pseudo(n, i as u64 + 10), SEGMENT * 3 + 1);
    }
    // A valid frame claiming to be more than its segment.
    let mut fat = Vec::new();
    let seg = pseudo(SEGMENT as usize, 4);
    let frame = zstd::bulk::compress(&seg, 1).unwrap();
    fat.extend((frame.len() as u32).to_le_bytes());
    fat.extend(&frame);
    check(&fat, 1000);
    // The bsdiff-style form: a frame stating a patch one byte larger than
    // the bound (refused before the patch is allocated), and the largest
    // patch accepted (every control, a whole segment of data), for a
    // segment of 4 MiB against the 40 MiB source.
    let flagged = |patch_len: u64| {
        let patch = vec![0u8; patch_len as usize];
        let frame = zstd::bulk::compress(&patch, 1).unwrap();
        let mut p = (delta::BSDIFF_FLAG | frame.len() as u32)
            .to_le_bytes()
            .to_vec();
        p.extend(&frame);
        p
    };
    check(&flagged(delta::MAX_PATCH + 1), SEGMENT);
    let mut largest = flagged(delta::MAX_PATCH);
    check(&largest, SEGMENT);
    largest.truncate(largest.len() - 1);
    check(&largest, SEGMENT);
    assert!(
        worst as u64 <= DECODE_MEMORY_BOUND,
        "peak {worst} bytes, bound {DECODE_MEMORY_BOUND}"
    );
}
