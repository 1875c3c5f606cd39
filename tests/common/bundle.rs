//! Helpers for the bundle tests: a development PKI, sample trees, bundles.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use didymos::bundle::create::{self, CreateOptions, CreateSummary};
use didymos::bundle::devpki::{self, DevPki};
use didymos::keyring::{Keyring, KeyringOptions};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = devpki::generate(&dir.path().join("pki")).unwrap();
        Self { dir, pki }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn keyring(&self) -> Keyring {
        Keyring::from_pem_file(&self.pki.keyring, KeyringOptions::default()).unwrap()
    }

    pub fn options(&self, rootfs: &Path, output: &Path, version: &str) -> CreateOptions {
        let mut o = CreateOptions::new(
            rootfs,
            output,
            &self.pki.signing_cert,
            &self.pki.signing_key,
            "didymos-test",
            version,
        );
        o.intermediates = vec![self.pki.intermediate_cert.clone()];
        o.created = Some(1_700_000_000);
        o
    }

    /// Creates `name` from `rootfs`.
    pub fn bundle(&self, rootfs: &Path, name: &str, version: &str) -> (PathBuf, CreateSummary) {
        let out = self.path(name);
        let s = create::create(&self.options(rootfs, &out, version)).unwrap();
        (out, s)
    }
}

/// A tree a normal user can make: files of many sizes (inline, large,
/// compressible, incompressible, empty, sparse), directories, a symlink, a
/// fifo, hardlinks, a duplicate file, user xattrs, odd modes and mtimes.
pub fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/sub")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("etc/hostname"), "didymos\n").unwrap();
    fs::write(root.join("etc/sub/small"), vec![b'x'; 64]).unwrap();
    fs::write(root.join("etc/sub/just-large"), vec![b'y'; 65]).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let text: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    fs::write(root.join("usr/bin/text"), &text).unwrap();
    fs::write(root.join("usr/bin/text-copy"), &text).unwrap();
    fs::write(root.join("usr/bin/random"), pseudo_random(300_000, 7)).unwrap();
    let f = fs::File::create(root.join("sparse")).unwrap();
    f.set_len(10 * 1024 * 1024).unwrap();
    drop(f);
    fs::hard_link(
        root.join("usr/bin/random"),
        root.join("usr/bin/random-link"),
    )
    .unwrap();
    symlink("../etc/hostname", root.join("usr/hostname-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    fs::set_permissions(
        root.join("usr/bin/text"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    xattr::set(root.join("etc/hostname"), "user.didymos", b"label").unwrap();
    set_mtime(root, 1_600_000_000);
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sets every entry's mtime (not following symlinks) so trees are reproducible.
pub fn set_mtime(root: &Path, secs: i64) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        if p.is_dir() && !p.is_symlink() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &p,
            &t,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

/// The `didymos` binary under test.
pub fn didymos_cmd() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("didymos").unwrap();
    c.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("DIDYMOS_KEY_PASSPHRASE");
    c
}
