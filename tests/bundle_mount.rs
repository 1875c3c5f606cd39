//! Root only: create a bundle from a tree with every file type, extract it,
//! mount it (EROFS + overlayfs with the objects as data-only lower layer) and
//! compare the mounted tree with the input, entry by entry.
//!
//! These tests need root and fail (not skip) without it.

#[path = "common/bundle.rs"]
mod common_bundle;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use common_bundle::*;
use didymos::bundle::Bundle;
use didymos::sys::composefs::{ComposefsOptions, OverlayLayers, OverlayVerity, mount_composefs};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts filesystems and must run as root (CI runs as root)"
    );
}

/// Everything a root filesystem holds, including what only root can make.
fn full_tree(root: &Path) {
    sample_tree(root);
    let mk = |p: &str, ft: rustix::fs::FileType, mode: u32, dev: u64| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join(p),
            ft,
            rustix::fs::Mode::from_raw_mode(mode),
            dev,
        )
        .unwrap();
    };
    fs::create_dir_all(root.join("dev")).unwrap();
    mk(
        "dev/null",
        rustix::fs::FileType::CharacterDevice,
        0o666,
        rustix::fs::makedev(1, 3),
    );
    mk(
        "dev/sda1",
        rustix::fs::FileType::BlockDevice,
        0o660,
        rustix::fs::makedev(8, 1),
    );
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
    rustix::fs::chown(
        root.join("usr/bin/text").as_path(),
        Some(rustix::process::Uid::from_raw(1234)),
        Some(rustix::process::Gid::from_raw(5678)),
    )
    .unwrap();
    rustix::fs::chown(
        root.join("dev/sda1").as_path(),
        Some(rustix::process::Uid::from_raw(0)),
        Some(rustix::process::Gid::from_raw(6)),
    )
    .unwrap();
    xattr::set(
        root.join("usr/bin/random"),
        "security.capability",
        b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    )
    .unwrap();
    xattr::set(
        root.join("etc"),
        "security.selinux",
        b"system_u:object_r:etc_t:s0\0",
    )
    .unwrap();
    xattr::set(root.join("etc/hostname"), "trusted.didymos", b"t").unwrap();
    symlink("/absolute/target", root.join("abs-link")).unwrap();
    fs::write(root.join("usr/bin/third-link-src"), pseudo_random(1000, 9)).unwrap();
    fs::hard_link(
        root.join("usr/bin/third-link-src"),
        root.join("etc/third-link"),
    )
    .unwrap();
    fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname-link")).unwrap();
    set_mtime(root, 1_600_000_000);
    // One entry with nanoseconds.
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 123_456_789,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 123_456_789,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        root.join("usr/bin/text"),
        &t,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: Option<u64>,
    nlink: u64,
    rdev: u64,
    link: Option<PathBuf>,
    content_digest: Option<didymos::Digest>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every entry below `root` (relative path → metadata), plus hardlink groups
/// (sets of paths sharing an inode).
fn snapshot(root: &Path) -> (BTreeMap<PathBuf, Entry>, Vec<Vec<PathBuf>>) {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_owned();
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else {
            inodes.entry(m.ino()).or_default().push(rel.clone());
        }
        let mut xattrs = BTreeMap::new();
        for n in xattr::list(&p).unwrap() {
            let n = n.to_string_lossy().into_owned();
            if let Some(v) = xattr::get(&p, &n).unwrap() {
                xattrs.insert(n, v);
            }
        }
        let ft = m.file_type();
        out.insert(
            rel,
            Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: (!m.is_dir()).then(|| m.size()),
                nlink: if m.is_dir() { 0 } else { m.nlink() },
                rdev: m.rdev(),
                link: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                content_digest: ft
                    .is_file()
                    .then(|| didymos::image::digest_bytes(&fs::read(&p).unwrap())),
                xattrs,
            },
        );
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (out, groups)
}

fn round_trip(legacy: bool) {
    require_root();
    let fx = Fixture::new();
    let root = fx.path("root");
    full_tree(&root);
    let (b, _) = fx.bundle(&root, "b.raucb", "1");
    let v = Bundle::open(&b).unwrap().verify(&fx.keyring()).unwrap();
    let ex = fx.path("extracted");
    didymos::bundle::extract::extract(&v, &ex, None, &didymos::bundle::NoBaseImages).unwrap();

    let image = fs::File::open(ex.join("image.cfs")).unwrap();
    let staging = fx.path("staging");
    let target = fx.path("mnt");
    fs::create_dir_all(&staging).unwrap();
    fs::create_dir_all(&target).unwrap();
    let options = ComposefsOptions {
        force_legacy_layers: legacy,
        ..Default::default()
    };
    let m = mount_composefs(
        &image,
        "test image",
        &ex.join("objects"),
        &staging,
        OverlayVerity::Off,
        options,
    )
    .unwrap();
    if legacy {
        assert_eq!(m.layers, OverlayLayers::Legacy);
    }
    let guard = m.root.attach(&target).unwrap();

    let (want, want_links) = snapshot(&root);
    let (got, got_links) = snapshot(&target);
    let mut diffs = Vec::new();
    for (path, w) in &want {
        match got.get(path) {
            None => diffs.push(format!("{}: missing", path.display())),
            Some(g) if g != w => {
                diffs.push(format!("{}:\n  want {w:?}\n  got  {g:?}", path.display()));
            }
            Some(_) => {}
        }
    }
    for path in got.keys() {
        if !want.contains_key(path) {
            diffs.push(format!("{}: unexpected", path.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "mounted tree differs from the input:\n{}",
        diffs.join("\n")
    );
    assert_eq!(got_links, want_links, "hardlink groups");
    assert!(want_links.len() >= 3, "{want_links:?}");
    assert_eq!(want.len(), got.len());
    assert!(want.len() > 20, "{}", want.len());
    // The comparison notices a difference.
    rustix::fs::chmod(
        root.join("etc/hostname").as_path(),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    assert_ne!(snapshot(&root).0, got);
    guard.unmount().unwrap();
}

#[test]
fn mounted_tree_equals_input() {
    round_trip(false);
}

#[test]
fn mounted_tree_equals_input_legacy_lowerdir() {
    round_trip(true);
}
