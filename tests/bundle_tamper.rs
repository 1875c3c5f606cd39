//! A flipped byte in any region fails verification naming that region;
//! truncation at any offset fails cleanly without large allocations.

#[path = "common/bundle.rs"]
mod common_bundle;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common_bundle::*;
use didymos::bundle::{Bundle, BundleError, Region};

/// Records the largest single allocation made by a thread that asked for
/// it (other tests run in parallel threads), to prove none is sized by a
/// length read from a damaged file.
struct Tracking;
static LARGEST: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static TRACKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
fn record(size: usize) {
    if TRACKED.try_with(|t| t.get()).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        record(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        record(new);
        unsafe { System.realloc(p, l, new) }
    }
}
#[global_allocator]
static GLOBAL: Tracking = Tracking;

fn check(fx: &Fixture, path: &std::path::Path) -> Result<(), BundleError> {
    let v = Bundle::open(path)?.verify(&fx.keyring())?;
    v.verify_payload(&|_, _| {})?;
    Ok(())
}

fn small_tree(fx: &Fixture) -> std::path::PathBuf {
    let root = fx.path("root");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/text"), "compressible ".repeat(500)).unwrap();
    std::fs::write(root.join("random"), pseudo_random(3000, 1)).unwrap();
    std::fs::write(root.join("small"), "x").unwrap();
    root
}

#[test]
fn flipped_byte_in_each_region_is_named() {
    let fx = Fixture::new();
    let root = small_tree(&fx);
    let (packed, _) = fx.bundle(&root, "good.raucb", "1");
    let loose = fx.path("loose.raucb");
    let mut o = fx.options(&root, &loose, "1");
    o.packs = false;
    didymos::bundle::create::create(&o).unwrap();
    // Both objects in one pack, and each alone.
    for good in [packed, loose] {
        flip_each_region(&fx, &good);
    }
}

fn flip_each_region(fx: &Fixture, good: &std::path::Path) {
    check(fx, good).unwrap();
    let v = Bundle::open(good).unwrap().verify(&fx.keyring()).unwrap();
    let h = *v.header();
    let mut targets: Vec<(u64, Region)> = vec![
        (20, Region::Header),
        (h.manifest.offset + h.manifest.len / 2, Region::Manifest),
        // The signature value itself sits at the end of the CMS structure.
        (h.signature.end() - 3, Region::Signature),
        (h.index.offset + 20, Region::Index),
        (h.image.offset + h.image.len / 2, Region::Image),
    ];
    assert_eq!(v.index().len(), 2);
    // The members of a pack share its bytes: a flip there damages one of
    // them (whichever the flipped byte decodes into), which is named.
    let mut by_offset: Vec<_> = v.index().iter().collect();
    by_offset.sort_by_key(|e| e.stored_order());
    by_offset.dedup_by_key(|e| e.offset);
    for e in by_offset {
        targets.push((e.offset + e.stored_size / 2, Region::Object(e.digest)));
    }
    let same_pack = |a: &Region, b: &Region| match (a, b) {
        (Region::Object(x), Region::Object(y)) => {
            let (x, y) = (v.entry(x).unwrap(), v.entry(y).unwrap());
            x.offset == y.offset
        }
        _ => a == b,
    };
    let bytes = std::fs::read(good).unwrap();
    for (offset, region) in targets {
        let mut damaged = bytes.clone();
        damaged[offset as usize] ^= 0x55;
        let p = fx.path("damaged.raucb");
        std::fs::write(&p, &damaged).unwrap();
        let err = check(fx, &p).expect_err(&format!("flip at {offset} in {region} passed"));
        let named = err.region().expect("the error names a region");
        assert!(same_pack(&named, &region), "flip at {offset}: {err}");
        assert!(
            err.to_string().contains(&match named {
                Region::Object(d) => d.to_hex(),
                Region::Index => "index".into(),
                Region::Header => "header".into(),
                other => other.to_string(),
            }),
            "message should name the region: {err}"
        );
    }
}

#[test]
fn truncation_at_any_offset_fails_cleanly() {
    let fx = Fixture::new();
    let root = small_tree(&fx);
    let (good, _) = fx.bundle(&root, "good.raucb", "1");
    let bytes = std::fs::read(&good).unwrap();
    let keyring = fx.keyring();
    TRACKED.with(|t| t.set(true));
    for len in 0..bytes.len() {
        let cut: std::sync::Arc<dyn didymos::bundle::ReadAt> =
            std::sync::Arc::new(bytes[..len].to_vec());
        LARGEST.store(0, Ordering::Relaxed);
        let result = Bundle::from_source(cut).and_then(|b| b.verify(&keyring));
        let largest = LARGEST.load(Ordering::Relaxed);
        let err = match result {
            Ok(_) => panic!("bundle cut to {len} bytes verified"),
            Err(e) => e,
        };
        assert!(
            matches!(err, BundleError::Truncated(_)),
            "cut to {len}: {err}"
        );
        assert!(
            largest <= 64 * 1024 + len,
            "cut to {len}: allocated {largest} bytes"
        );
    }
    // The same through a real file, at a few offsets.
    let p = fx.path("cut.raucb");
    for len in [0, 100, 128, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..len]).unwrap();
        let err = Bundle::open(&p).err().expect("truncated bundle opened");
        assert!(
            err.to_string().contains("truncated") || err.to_string().contains("too short"),
            "{err}"
        );
    }
}

#[test]
fn appended_bytes_are_refused() {
    let fx = Fixture::new();
    let root = small_tree(&fx);
    let (good, _) = fx.bundle(&root, "good.raucb", "1");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&good, &bytes).unwrap();
    let err = check(&fx, &good).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
}

#[test]
fn not_a_bundle() {
    let fx = Fixture::new();
    let p = fx.path("x");
    std::fs::write(&p, vec![b'A'; 4096]).unwrap();
    let err = check(&fx, &p).unwrap_err();
    assert!(matches!(err, BundleError::NotABundle(_)), "{err}");
    assert!(err.to_string().contains("not a didymos bundle"), "{err}");
}

/// A manifest changed into text that is not even TOML is reported as
/// changed after signing: the signature is checked over the raw bytes
/// before the manifest is parsed.
#[test]
fn a_mangled_manifest_reads_as_modified_after_signing() {
    let fx = Fixture::new();
    let root = small_tree(&fx);
    let (good, _) = fx.bundle(&root, "good.raucb", "1");
    let mut bytes = std::fs::read(&good).unwrap();
    let h = *Bundle::open(&good).unwrap().header();
    let manifest = &mut bytes[h.manifest.offset as usize..h.manifest.end() as usize];
    let eq = manifest.iter().position(|&b| b == b'=').unwrap();
    manifest[eq] = b'~';
    assert!(didymos::bundle::Manifest::parse(manifest).is_err());
    let p = fx.path("mangled.raucb");
    std::fs::write(&p, &bytes).unwrap();
    let err = Bundle::open(&p)
        .unwrap()
        .verify(&fx.keyring())
        .err()
        .unwrap();
    assert!(matches!(err, BundleError::ManifestModified { .. }), "{err}");
    assert!(err.to_string().contains("modified after signing"), "{err}");
}

/// A header may claim an index of up to 1 GiB (the limit for 2^24 objects)
/// in a sparse file of a few KiB; the index is read at the length the
/// signed object count gives, so nothing near that size is allocated.
#[test]
fn an_index_longer_than_the_signed_count_is_refused_unread() {
    let fx = Fixture::new();
    let root = small_tree(&fx);
    let (good, _) = fx.bundle(&root, "good.raucb", "1");
    let p = fx.path("inflated.raucb");
    let limit = 16 + 64 * didymos::bundle::format::MAX_OBJECTS;
    with_inflated_index(&good, &p, limit);
    let keyring = fx.keyring();
    TRACKED.with(|t| t.set(true));
    LARGEST.store(0, Ordering::Relaxed);
    let err = Bundle::open(&p).unwrap().verify(&keyring).err().unwrap();
    let largest = LARGEST.load(Ordering::Relaxed);
    TRACKED.with(|t| t.set(false));
    assert!(matches!(err, BundleError::IndexInvalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("the object index region is {limit} bytes")),
        "{err}"
    );
    assert!(largest < 1024 * 1024, "allocated {largest} bytes");
}
