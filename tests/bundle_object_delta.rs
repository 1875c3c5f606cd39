//! Object deltas end to end: a delta bundle built with `--base` installs over
//! its base and the mounted slot equals the new tree (root: real EROFS +
//! overlayfs); a damaged or missing source, a tampered delta, a power cut and
//! a SIGKILL in the middle of decoding a delta all leave the store consistent
//! and nothing stored under a wrong name.

#[path = "common/device.rs"]
mod device;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use device::Device;
use didymos::Digest;
use didymos::bundle::create::{self, CreateOptions};
use didymos::bundle::{Bundle, Encoding, VerifiedBundle};
use didymos::keyring::{Keyring, KeyringOptions};

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Bytes that look like a build's output: text and binary runs a few KiB
/// long, repeated with variations.
fn binary_like(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("symbol_{}_{seed}\0", i % 977).as_bytes());
        out.extend_from_slice(&pseudo_random(200, i % 311));
        i += 1;
    }
    out.truncate(len);
    out
}

/// An executable's shape: an ELF header, then instructions whose 4-byte
/// pointers point into the program. `moved` inserts 64 bytes of code in the
/// middle and moves every pointer past them by 64: the change a one-function
/// fix makes to a real binary.
fn executable(records: usize, moved: bool) -> Vec<u8> {
    let mut out = b"\x7fELF\x02\x01\x01\0".to_vec();
    let ops = pseudo_random(records * 4, 21);
    for i in 0..records {
        if moved && i == records / 2 {
            out.extend_from_slice(&pseudo_random(64, 22));
        }
        out.extend_from_slice(&ops[i * 4..i * 4 + 4]);
        let to = (i as u32).wrapping_mul(2_654_435_761) % (records as u32 * 8);
        let to = if moved && to > records as u32 * 4 {
            to + 64
        } else {
            to
        };
        out.extend_from_slice(&to.to_le_bytes());
    }
    out
}

/// A small edit: `n` bytes changed at a few places, and 100 bytes inserted.
fn edited(data: &[u8], seed: u64) -> Vec<u8> {
    let mut v = data.to_vec();
    for k in 1..=4u64 {
        let at = (k * 7919 * (seed + 1)) as usize % v.len();
        v[at] ^= 0x55;
    }
    let at = v.len() / 3;
    v.splice(at..at, pseudo_random(100, seed));
    v
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// v1 and v2 of a tree with changed, renamed-by-version, unchanged, new and
/// deleted files: tiny (just above the inline limit), empty, around the
/// 4 KiB block boundary, multi-MiB (over two delta segments).
fn make_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let (v1, v2) = (dir.join("tree-v1"), dir.join("tree-v2"));
    let big = binary_like(5 << 20, 1);
    let lib = binary_like(300_000, 2);
    let module = binary_like(70_000, 3);
    let block = binary_like(4096, 4);
    let tiny = binary_like(80, 5);
    let same = binary_like(50_000, 6);
    for (root, v2) in [(&v1, false), (&v2, true)] {
        let e = |d: &[u8], seed| if v2 { edited(d, seed) } else { d.to_vec() };
        // The boot files the device's configuration takes from the image.
        write(root, "boot/vmlinuz", &e(&big, 11));
        write(root, "boot/initrd.img", &binary_like(100_000, 9));
        let libname = if v2 {
            "libfoo.so.1.2.4"
        } else {
            "libfoo.so.1.2.3"
        };
        write(root, &format!("usr/lib/{libname}"), &e(&lib, 12));
        let kver = if v2 {
            "6.1.0-50-amd64"
        } else {
            "6.1.0-47-amd64"
        };
        write(
            root,
            &format!("usr/lib/modules/{kver}/kernel/drivers/net/foo.ko"),
            &e(&module, 13),
        );
        // 4096 bytes in both: one byte changed.
        let mut b = block.clone();
        if v2 {
            b[100] ^= 1;
        }
        write(root, "etc/block4k", &b);
        let mut t = tiny.clone();
        if v2 {
            t[3] ^= 1;
        }
        write(root, "etc/tiny", &t);
        write(root, "etc/empty", b"");
        write(root, "usr/share/same", &same);
        write(root, "usr/bin/prog", &executable(25_000, v2));
        symlink(libname, root.join("usr/lib/libfoo.so.1")).unwrap();
        if v2 {
            write(root, "usr/bin/new", &binary_like(20_000, 7));
        } else {
            write(root, "usr/bin/deleted", &binary_like(30_000, 8));
        }
    }
    (v1, v2)
}

fn options(dev: &Device, rootfs: &Path, out: &Path, version: &str) -> CreateOptions {
    let mut o = CreateOptions::new(
        rootfs,
        out,
        &dev.pki.signing_cert,
        &dev.pki.signing_key,
        didymos::demo::COMPATIBLE,
        version,
    );
    o.intermediates = vec![dev.pki.intermediate_cert.clone()];
    o
}

fn keyring(dev: &Device) -> Keyring {
    Keyring::from_pem_file(&dev.pki.keyring, KeyringOptions::default()).unwrap()
}

fn open(dev: &Device, b: &Path) -> VerifiedBundle {
    Bundle::open(b).unwrap().verify(&keyring(dev)).unwrap()
}

/// A device with v1 installed, booted and marked good; v1 full and v2 delta
/// bundles.
struct Setup {
    dev: Device,
    v2_tree: PathBuf,
    delta: PathBuf,
}

fn setup() -> Setup {
    let dev = Device::new();
    let (v1, v2) = make_pair(dev.dir.path());
    let full = dev.path("v1.raucb");
    create::create(&options(&dev, &v1, &full, "1.0")).unwrap();
    let delta = dev.path("v2-delta.raucb");
    let mut o = options(&dev, &v2, &delta, "2.0");
    o.bases = vec![full.clone()];
    create::create(&o).unwrap();
    dev.install(&full).unwrap();
    dev.boot();
    dev.mark_good();
    Setup {
        dev,
        v2_tree: v2,
        delta,
    }
}

fn deltas(v: &VerifiedBundle) -> Vec<(Digest, Digest, u64)> {
    v.index()
        .iter()
        .filter_map(|e| e.source.map(|s| (e.digest, s, e.size)))
        .collect()
}

#[test]
fn delta_bundle_picks_sources_by_path_and_by_version() {
    let s = setup();
    let v = open(&s.dev, &s.delta);
    let d = deltas(&v);
    // vmlinuz (same path), libfoo and foo.ko (renamed by version), the 4 KiB
    // file and the executable (same path); the tiny file's delta does not
    // save enough, the new file has no source.
    assert_eq!(d.len(), 5, "{d:?}");
    // The executable's segment is in the bsdiff-style form (the top bit of
    // its first length word), and small: its pointers moved, which the
    // patch-from form matches poorly.
    let prog = didymos::image::digest_bytes(&fs::read(s.v2_tree.join("usr/bin/prog")).unwrap());
    let e = v.entry(&prog).expect("the executable is carried");
    assert!(e.source.is_some(), "the executable is a delta");
    let mut word = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(
        &fs::File::open(&s.delta).unwrap(),
        &mut word,
        e.offset,
    )
    .unwrap();
    assert_ne!(
        u32::from_le_bytes(word) & didymos::bundle::delta::BSDIFF_FLAG,
        0,
        "the executable's delta is not in the bsdiff-style form"
    );
    let (old, new) = (executable(25_000, false), executable(25_000, true));
    let mut patch_from = Vec::new();
    didymos::bundle::delta::encode(
        &mut &new[..],
        new.len() as u64,
        &old,
        didymos::bundle::delta::EncodeOptions {
            level: 15,
            long_distance: false,
            executables: false,
        },
        u64::MAX,
        &mut patch_from,
    )
    .unwrap();
    assert!(
        e.stored_size * 2 < patch_from.len() as u64,
        "bsdiff form {} bytes, patch-from {}",
        e.stored_size,
        patch_from.len()
    );
    assert!(
        v.index()
            .iter()
            .all(|e| (e.encoding == Encoding::Delta) == e.source.is_some())
    );
    let big = d
        .iter()
        .find(|x| x.2 > 5 << 20)
        .expect("the multi-MiB file is a delta");
    let stored = v.entry(&big.0).unwrap().stored_size;
    assert!(stored < 100_000, "{stored}");
    // info shows them.
    let out = s
        .dev
        .cli()
        .args(["info", "--keyring"])
        .arg(&s.dev.pki.keyring)
        .arg(&s.delta)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Container:    version 3"), "{text}");
    assert!(text.contains("Deltas:       5 objects"), "{text}");
    assert!(
        text.contains("Sources:      5 objects the device must hold"),
        "{text}"
    );
    // The image is a delta against v1's.
    let v1_image = open(&s.dev, &s.dev.path("v1.raucb"))
        .manifest()
        .image
        .digest;
    assert!(
        text.contains(&format!("against base image {v1_image}")),
        "{text}"
    );
    // `bundle verify` checks the rest and says what it leaves to the device.
    let out = s
        .dev
        .cli()
        .args(["bundle", "verify", "--keyring"])
        .arg(&s.dev.pki.keyring)
        .arg(&s.delta)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("deltas     5 not decoded"), "{text}");
    assert!(
        text.contains(&format!(
            "image      stored as a delta against image {v1_image}"
        )),
        "{text}"
    );
}

#[test]
fn extract_needs_the_base_and_names_it() {
    let s = setup();
    let base = s.dev.path("v1.raucb");
    let dir = s.dev.path("x");
    let run = |extra: &[&Path]| {
        let mut c = s.dev.cli();
        c.args(["bundle", "extract", "--keyring"])
            .arg(&s.dev.pki.keyring);
        for b in extra {
            c.arg("--base").arg(b);
        }
        c.arg(&s.delta).arg(&dir).output().unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("are deltas against objects that are neither"),
        "{err}"
    );
    assert!(err.contains("version 1.0"), "{err}");
    assert!(!dir.join("image.cfs").exists(), "nothing is written");
    let out = run(&[&base]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = fs::read(dir.join("image.cfs")).unwrap();
    let v = open(&s.dev, &s.delta);
    for e in v.index() {
        let data = fs::read(dir.join(e.digest.to_object_path())).unwrap();
        assert_eq!(didymos::image::digest_bytes(&data), e.digest);
    }
    assert_eq!(
        didymos::image::digest_bytes(&image),
        v.manifest().image.digest
    );
}

fn store_object(dev: &Device, d: &Digest) -> PathBuf {
    dev.config.store.path.join(d.to_object_path())
}

/// Every file name in the store's tmp/ (must be empty after a failure).
fn tmp_files(dev: &Device) -> Vec<PathBuf> {
    fs::read_dir(dev.config.store.path.join("tmp"))
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_damaged_source_stores_nothing_under_the_targets_name() {
    let s = setup();
    let v = open(&s.dev, &s.delta);
    let (target, source, _) = deltas(&v).into_iter().find(|d| d.2 > 1 << 20).unwrap();
    // A flipped byte in the source, on a store without fs-verity.
    let p = store_object(&s.dev, &source);
    let flip = |at: u64| {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x80], at).unwrap();
    };
    flip(1000);
    let err = s.dev.install(&s.delta).unwrap_err().to_string();
    assert!(err.contains("damaged on this device"), "{err}");
    assert!(err.contains(&source.to_hex()), "{err}");
    assert!(err.contains("fsck --repair"), "{err}");
    assert!(!store_object(&s.dev, &target).exists());
    assert!(tmp_files(&s.dev).is_empty(), "{:?}", tmp_files(&s.dev));

    // Past the check (the source damaged after it), the result's own digest
    // check refuses the decoded bytes. (One flipped byte may lie where the
    // delta takes nothing from: damage every 4 KiB.)
    let len = fs::metadata(&p).unwrap().len();
    for at in (4096..len).step_by(4096) {
        flip(at);
    }
    let sources = didymos::bundle::delta::ObjectDir(s.dev.config.store.path.join("objects"));
    let entry = v.entry(&target).unwrap().clone();
    let e = v
        .copy_object_with(&entry, &sources, &mut std::io::sink())
        .unwrap_err();
    assert!(
        matches!(e, didymos::bundle::BundleError::DeltaResultMismatch { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("source object on this device"),
        "{e}"
    );
}

#[test]
fn a_missing_source_is_refused_before_anything_is_written() {
    let s = setup();
    let v = open(&s.dev, &s.delta);
    let (target, source, _) = deltas(&v)[0];
    fs::remove_file(store_object(&s.dev, &source)).unwrap();
    let before = s.dev.snapshot();
    let err = s.dev.install(&s.delta).unwrap_err().to_string();
    assert!(
        err.contains("deltas against objects this device does not hold"),
        "{err}"
    );
    assert!(err.contains(&target.to_hex()), "{err}");
    assert!(err.contains("install a full bundle"), "{err}");
    assert_eq!(s.dev.snapshot(), before, "the install changed the device");
    // The same for a device that never had the base: refused by the
    // existing missing-base check first, naming the base.
    let fresh = Device::new();
    let mut o = options(&fresh, &s.v2_tree, &fresh.path("d.raucb"), "2.0");
    o.bases = vec![s.dev.path("v1.raucb")];
    // Same PKI is needed to verify: re-sign with the fresh device's keys.
    o.cert = fresh.pki.signing_cert.clone();
    o.key = fresh.pki.signing_key.clone();
    o.intermediates = vec![fresh.pki.intermediate_cert.clone()];
    create::create(&o).unwrap();
    let before = fresh.snapshot();
    let err = fresh
        .install(&fresh.path("d.raucb"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("version 1.0"), "{err}");
    // The image of a delta bundle is itself a delta against the base's
    // image, which this device lacks too: that is what stops it first.
    assert!(
        err.contains("image is stored as a delta against image"),
        "{err}"
    );
    assert_eq!(fresh.snapshot(), before);
}

#[test]
fn a_delta_bundle_is_a_base_together_with_its_own_base() {
    // v3 built against the v2 delta bundle: v2's image is a delta against
    // v1's, so v1 must be given too (in any order).
    let s = setup();
    let v3 = s.dev.path("tree-v3");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&s.v2_tree)
        .arg(&v3)
        .status()
        .unwrap();
    assert!(cp.success());
    write(&v3, "etc/block4k", &binary_like(4096, 40));
    let out = s.dev.path("v3.raucb");
    let mut o = options(&s.dev, &v3, &out, "3.0");
    o.bases = vec![s.delta.clone()];
    let err = create::create(&o).unwrap_err().to_string();
    assert!(err.contains("its image is a delta against image"), "{err}");
    assert!(err.contains("give that base too"), "{err}");
    assert!(!out.exists());
    o.bases = vec![s.delta.clone(), s.dev.path("v1.raucb")];
    create::create(&o).unwrap();
    // The image is a delta against the first base's (v2's): it installs on
    // a device that runs v2.
    let v = open(&s.dev, &out);
    assert_eq!(v.manifest().bases.len(), 2);
    s.dev.install(&s.delta).unwrap();
    s.dev.boot();
    s.dev.mark_good();
    s.dev.install(&out).unwrap();
}

#[test]
fn a_tampered_delta_is_caught_like_any_tampered_object() {
    let s = setup();
    let v = open(&s.dev, &s.delta);
    let (target, _, _) = deltas(&v).into_iter().find(|d| d.2 > 1 << 20).unwrap();
    let e = v.entry(&target).unwrap().clone();
    drop(v);
    let bad = s.dev.path("tampered.raucb");
    fs::copy(&s.delta, &bad).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)
        .unwrap();
    let at = e.offset + e.stored_size / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    drop(f);
    let err = s.dev.install(&bad).unwrap_err().to_string();
    assert!(err.contains(&target.to_hex()), "{err}");
    assert!(
        err.contains("damaged") || err.contains("cannot be decoded"),
        "{err}"
    );
    assert!(!store_object(&s.dev, &target).exists());
    assert!(tmp_files(&s.dev).is_empty());
    // The untouched bundle still installs.
    s.dev.install(&s.delta).unwrap();
}

#[test]
fn power_cut_mid_delta_decode_then_the_next_install_succeeds() {
    let s = setup();
    s.dev.install_cut_at(&s.delta, "delta-half-decoded");
    // A half-written temporary file is all that is left of the delta.
    let v = open(&s.dev, &s.delta);
    for (target, _, _) in deltas(&v) {
        assert!(!store_object(&s.dev, &target).exists());
    }
    s.dev.fsck_clean();
    s.dev.install(&s.delta).unwrap();
    assert!(tmp_files(&s.dev).is_empty());
    s.dev.fsck_clean();
}

#[test]
fn sigkill_mid_delta_decode_then_the_next_install_succeeds() {
    let s = setup();
    let mut child = s
        .dev
        .cli()
        .arg("install")
        .arg(&s.delta)
        .env("DIDYMOS_FAILPOINT", "delta-decode-pause")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let reached = lines.any(|l| l.is_ok_and(|l| l.contains("didymos: delta-decode-pause")));
    assert!(
        reached,
        "the pause in the middle of a delta was not reached"
    );
    // In the middle of writing a delta's result into tmp/.
    assert!(!tmp_files(&s.dev).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    s.dev.fsck_clean();
    s.dev.install(&s.delta).unwrap();
    assert!(tmp_files(&s.dev).is_empty());
    s.dev.fsck_clean();
}

// ---- Root only: the installed slot, mounted, equals the new tree. ----

/// path → (type, mode, size, content digest or link target).
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, u64, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_owned();
        let what = if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            String::new()
        } else if m.file_type().is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else {
            didymos::image::digest_bytes(&fs::read(&p).unwrap()).to_hex()
        };
        let size = if m.is_dir() { 0 } else { m.size() };
        out.insert(rel, (m.mode(), size, what));
    }
    out
}

#[test]
fn round_trip_installed_slot_mounts_as_the_new_tree() {
    use didymos::sys::composefs::{ComposefsOptions, OverlayVerity, mount_composefs};
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts filesystems and must run as root (CI runs as root)"
    );
    let s = setup();
    let outcome = s.dev.install(&s.delta).unwrap();
    let v = open(&s.dev, &s.delta);
    assert!(deltas(&v).len() >= 3);
    // Written: what the delta bundle carries, and no more.
    assert_eq!(outcome.objects_written, v.index().len() as u64);
    let store = &s.dev.config.store.path;
    let image = fs::File::open(store.join("images").join(outcome.image.to_hex())).unwrap();
    let staging = s.dev.path("staging");
    let target = s.dev.path("mnt");
    fs::create_dir_all(&staging).unwrap();
    fs::create_dir_all(&target).unwrap();
    let m = mount_composefs(
        &image,
        "installed slot",
        &store.join("objects"),
        &staging,
        OverlayVerity::Off,
        ComposefsOptions::default(),
    )
    .unwrap();
    let guard = m.root.attach(&target).unwrap();
    let want = tree(&s.v2_tree);
    let got = tree(&target);
    drop(guard);
    let mut diffs = Vec::new();
    for (p, w) in &want {
        match got.get(p) {
            Some(g) if g == w => {}
            g => diffs.push(format!("{}: want {w:?}, got {g:?}", p.display())),
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!("{}: unexpected", p.display()));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(want.len() > 10);
}

/// Rewrites `v2` (a bundle without deltas or dictionary) in the container
/// version 1 layout an older didymos writes: regions manifest, signature,
/// index, image, objects; objects in digest order; 16-byte index header.
fn as_version_1(dev: &Device, v2: &Path, out: &Path) {
    use didymos::bundle::format::{self, Header};
    use sha2::Digest as _;
    let v = open(dev, v2);
    let bytes = fs::read(v2).unwrap();
    let mut objects = Vec::new();
    let mut entries = Vec::new();
    for e in v.index() {
        assert!(matches!(e.encoding, Encoding::Raw | Encoding::Zstd));
        let mut e = e.clone();
        let data = &bytes[e.offset as usize..(e.offset + e.stored_size) as usize];
        e.offset = objects.len() as u64;
        objects.extend_from_slice(data);
        entries.push(e);
    }
    let index = format::index_to_bytes(format::FORMAT_VERSION_1, &entries, &[], 0);
    let mut m = v.manifest().clone();
    m.objects.index_sha256 = hex::encode(sha2::Sha256::digest(&index));
    let text = m.to_toml();
    let signer = create::Signer::load(
        &dev.pki.signing_cert,
        &dev.pki.signing_key,
        None,
        std::slice::from_ref(&dev.pki.intermediate_cert),
    )
    .unwrap();
    let sig = signer.sign(text.as_bytes()).unwrap();
    let image = v.read_image().unwrap();
    let h = Header::sequential(
        text.len() as u64,
        sig.len() as u64,
        index.len() as u64,
        image.len() as u64,
        objects.len() as u64,
    );
    let mut file = h.to_bytes().to_vec();
    for part in [text.as_bytes(), &sig, &index, &image, &objects] {
        file.extend_from_slice(part);
    }
    fs::write(out, file).unwrap();
}

#[test]
fn version_1_bundles_stay_readable_and_installable() {
    let dev = Device::new();
    let (v1, _) = make_pair(dev.dir.path());
    let v2 = dev.path("v2-layout.raucb");
    let mut o = options(&dev, &v1, &v2, "1.0");
    o.dictionary = false;
    o.packs = false;
    create::create(&o).unwrap();
    let old = dev.path("v1-layout.raucb");
    as_version_1(&dev, &v2, &old);
    let b = Bundle::open(&old).unwrap();
    assert_eq!(b.header().version, 1);
    let v = b.verify(&keyring(&dev)).unwrap();
    v.verify_payload(&|_, _| {}).unwrap();
    dev.install(&old).unwrap();
    dev.fsck_clean();
}

/// A tree of many small files that resemble each other, some of them the
/// same, and two larger ones.
fn many_small_files(root: &Path) {
    for i in 0..300u64 {
        let text = format!(
            "Package: lib{i}\nVersion: 1.{i}\nDepends: libc6 (>= 2.36)\nDescription: a library\n{}",
            "Copyright: the authors, under the terms of the GNU General Public License.\n"
                .repeat(3 + (i % 5) as usize)
        );
        write(
            root,
            &format!("var/lib/dpkg/info/lib{i}.list"),
            text.as_bytes(),
        );
        // The same bytes in another place: one object.
        if i % 50 == 0 {
            write(root, &format!("usr/share/doc/lib{i}/list"), text.as_bytes());
        }
    }
    write(root, "boot/vmlinuz", &binary_like(100_000, 1));
    write(root, "boot/initrd.img", &binary_like(100_000, 2));
}

#[test]
fn full_bundles_pack_small_objects_and_stay_reproducible() {
    let dev = Device::new();
    let root = dev.path("many");
    many_small_files(&root);
    // Over a pack's limit, and a file too large for a pack in between.
    for i in 0..60u64 {
        write(
            &root,
            &format!("usr/lib/modules/m{i:02}.ko"),
            &binary_like(300_000, i),
        );
    }
    write(
        &root,
        "usr/lib/modules/m20.large",
        &binary_like(3 << 20, 99),
    );
    let make = |name: &str, threads: usize, packs: bool| {
        let out = dev.path(name);
        let mut o = options(&dev, &root, &out, "1.0");
        o.threads = threads;
        o.packs = packs;
        o.created = Some(1_700_000_000);
        create::create(&o).unwrap();
        out
    };
    let (a, b, c, loose) = (
        make("a.raucb", 2, true),
        make("b.raucb", 1, true),
        make("c.raucb", 4, true),
        make("loose.raucb", 2, false),
    );
    let v = open(&dev, &a);
    assert_eq!(
        v.header().version,
        didymos::bundle::format::FORMAT_VERSION_4
    );
    assert!(!v.has_dictionary(), "packs replace the dictionary");
    let packed: Vec<_> = v
        .index()
        .iter()
        .filter(|e| e.encoding == Encoding::Packed)
        .collect();
    let packs: std::collections::BTreeSet<u64> = packed.iter().map(|e| e.offset).collect();
    // 300 lists (the copies are the same objects), 60 modules and the two
    // boot files; the large file alone. Before it 6.5 MB in one pack, after
    // it 11.7 MB of modules, over a pack's limit: at least three packs.
    assert_eq!(packed.len(), 300 + 60 + 2);
    assert!(packs.len() >= 3, "{} packs", packs.len());
    let large = v
        .index()
        .iter()
        .find(|e| e.size == 3 << 20)
        .expect("the large file is an object");
    assert_ne!(large.encoding, Encoding::Packed);
    v.verify_payload(&|_, _| {}).unwrap();
    let size = |p: &Path| fs::metadata(p).unwrap().len();
    assert!(
        size(&a) < size(&loose),
        "{} against {}",
        size(&a),
        size(&loose)
    );
    assert_eq!(
        open(&dev, &loose).header().version,
        didymos::bundle::format::FORMAT_VERSION_2
    );
    // The same bytes whatever the threads did (the signature aside).
    let h = *Bundle::open(&a).unwrap().header();
    let payload =
        |p: &Path| fs::read(p).unwrap()[h.objects.offset as usize..h.index.end() as usize].to_vec();
    assert!(payload(&a) == payload(&b) && payload(&a) == payload(&c));
    // Extracted, every object is there and checked.
    let out = dev.path("extracted");
    let x =
        didymos::bundle::extract::extract(&v, &out, None, &didymos::bundle::NoBaseImages).unwrap();
    assert_eq!(x.objects_written, v.index().len() as u64);
    dev.install(&a).unwrap();
    dev.fsck_clean();
}

/// Laid out against the previous release, a full bundle keeps what that
/// release has and what it lacks in different packs: a device running it
/// fetches over HTTP the packs of the changed objects, and no others.
#[test]
fn packs_laid_out_against_a_previous_release_keep_what_changed_apart() {
    let dev = Device::new();
    let (t1, t2) = make_pair(dev.dir.path());
    // Small files that stay the same, around the changed ones.
    for root in [&t1, &t2] {
        many_small_files(root);
    }
    let v1 = dev.path("v1.raucb");
    create::create(&options(&dev, &t1, &v1, "1.0")).unwrap();
    let make = |name: &str, previous: bool| {
        let out = dev.path(name);
        let mut o = options(&dev, &t2, &out, "2.0");
        if previous {
            o.previous = vec![v1.clone()];
        }
        create::create(&o).unwrap();
        open(&dev, &out)
    };
    let (laid_out, plain) = (make("v2.raucb", true), make("v2-plain.raucb", false));
    let old: BTreeSet<Digest> = open(&dev, &v1).index().iter().map(|e| e.digest).collect();
    assert!(laid_out.manifest().bases.is_empty(), "a full bundle");
    let fetched = |v: &VerifiedBundle| {
        let packs: BTreeSet<u64> = v
            .index()
            .iter()
            .filter(|e| e.encoding == Encoding::Packed && !old.contains(&e.digest))
            .map(|e| e.offset)
            .collect();
        didymos::bundle::format::stored_total(v.index().iter().filter(|e| {
            !old.contains(&e.digest)
                || (e.encoding == Encoding::Packed && packs.contains(&e.offset))
        }))
    };
    // Every pack holds only old objects or only new ones.
    let mut kinds: BTreeMap<u64, BTreeSet<bool>> = BTreeMap::new();
    for e in laid_out
        .index()
        .iter()
        .filter(|e| e.encoding == Encoding::Packed)
    {
        kinds
            .entry(e.offset)
            .or_default()
            .insert(old.contains(&e.digest));
    }
    assert!(kinds.values().all(|k| k.len() == 1), "{kinds:?}");
    assert!(
        kinds.values().any(|k| k.contains(&true)) && kinds.values().any(|k| k.contains(&false))
    );
    // So a device running v1 fetches exactly the new objects' bytes, less
    // than from the bundle laid out without it.
    let new_only = didymos::bundle::format::stored_total(
        laid_out.index().iter().filter(|e| !old.contains(&e.digest)),
    );
    assert_eq!(fetched(&laid_out), new_only);
    assert!(
        fetched(&laid_out) < fetched(&plain),
        "{} against {}",
        fetched(&laid_out),
        fetched(&plain)
    );
    dev.install(&v1).unwrap();
    dev.install(&dev.path("v2.raucb")).unwrap();
    dev.fsck_clean();
    // Only for full bundles with packs.
    let mut o = options(&dev, &t2, &dev.path("x.raucb"), "2.0");
    o.previous = vec![v1.clone()];
    o.packs = false;
    let err = create::create(&o).unwrap_err().to_string();
    assert!(
        err.contains("--previous") && err.contains("--no-packs"),
        "{err}"
    );
}

#[test]
fn full_bundles_without_packs_carry_a_dictionary_and_stay_reproducible() {
    let dev = Device::new();
    let root = dev.path("many");
    many_small_files(&root);
    let make = |name: &str, threads: usize, dictionary: bool| {
        let out = dev.path(name);
        let mut o = options(&dev, &root, &out, "1.0");
        o.threads = threads;
        o.dictionary = dictionary;
        o.packs = false;
        o.created = Some(1_700_000_000);
        create::create(&o).unwrap();
        out
    };
    let (a, b, plain) = (
        make("a.raucb", 2, true),
        make("b.raucb", 1, true),
        make("p.raucb", 2, false),
    );
    let v = open(&dev, &a);
    let dict = v
        .index()
        .iter()
        .filter(|e| e.encoding == Encoding::ZstdDict)
        .count();
    assert!(v.has_dictionary());
    assert!(dict >= 300, "{dict} objects use the dictionary");
    v.verify_payload(&|_, _| {}).unwrap();
    let size = |p: &Path| fs::metadata(p).unwrap().len();
    assert!(
        size(&a) < size(&plain),
        "{} against {}",
        size(&a),
        size(&plain)
    );
    // The same bytes whatever the threads did (the signature aside).
    let h = *Bundle::open(&a).unwrap().header();
    let (ba, bb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_eq!(
        ba[h.objects.offset as usize..h.index.end() as usize],
        bb[h.objects.offset as usize..h.index.end() as usize]
    );
    dev.install(&a).unwrap();
    dev.fsck_clean();
}

#[test]
fn a_tampered_image_delta_is_refused_and_changes_nothing() {
    let s = setup();
    let span = Bundle::open(&s.delta).unwrap().header().image;
    let bytes = fs::read(&s.delta).unwrap();
    assert_eq!(
        bytes[span.offset as usize], 1,
        "the image is stored as a delta"
    );
    for (at, says) in [
        (0u64, "neither a whole image nor a delta"),
        (5, "which the manifest does not name as a base"),
        (span.len / 2 + 16, "the frame"),
    ] {
        let mut bad = bytes.clone();
        bad[(span.offset + at) as usize] ^= 0x5a;
        let path = s.dev.path("bad-image.raucb");
        fs::write(&path, &bad).unwrap();
        let before = s.dev.snapshot();
        let err = s.dev.install(&path).unwrap_err().to_string();
        // A flipped byte in the frame: zstd refuses it, or it decodes to an
        // image that is not the signed one.
        let ok = if says == "the frame" {
            err.contains("cannot decode the image region") || err.contains("image digest mismatch")
        } else {
            err.contains(says)
        };
        assert!(ok, "byte {at}: {err}");
        assert_eq!(
            s.dev.snapshot(),
            before,
            "byte {at}: the install changed the device"
        );
    }
    s.dev.install(&s.delta).unwrap();
}
