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

/// Issues a certificate under the fixture's intermediate CA; returns (cert, key) paths.
pub fn issue_signer(fx: &Fixture, name: &str, spec: &devpki::CertSpec<'_>) -> (PathBuf, PathBuf) {
    use openssl::pkey::PKey;
    use openssl::x509::X509;
    let inter = devpki::Issued {
        cert: X509::from_pem(&fs::read(&fx.pki.intermediate_cert).unwrap()).unwrap(),
        key: PKey::private_key_from_pem(&fs::read(&fx.pki.intermediate_key).unwrap()).unwrap(),
    };
    let issued = devpki::issue(spec, Some(&inter)).unwrap();
    let cert = fx.path(&format!("{name}.pem"));
    let key = fx.path(&format!("{name}.key"));
    fs::write(&cert, issued.cert.to_pem().unwrap()).unwrap();
    fs::write(&key, issued.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, key)
}

/// Builds a tar archive in memory with every member type tar can carry,
/// fixed owners, modes, mtimes and extended attributes.
pub fn sample_tar() -> Vec<u8> {
    use tar::{EntryType, Header};
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str,
                   kind: EntryType,
                   mode: u32,
                   uid: u64,
                   data: &[u8],
                   link: Option<&str>,
                   xattrs: &[(&str, &[u8])]| {
        if !xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                .collect();
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 1);
        h.set_mtime(1_650_000_000 + uid);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        if kind == EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        if kind == EntryType::Block {
            h.set_device_major(8).unwrap();
            h.set_device_minor(1).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    let big = pseudo_random(200_000, 3);
    let text: Vec<u8> = (0..5000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    add(
        "./",
        EntryType::Directory,
        0o755,
        0,
        b"",
        None,
        &[("security.selinux", b"system_u:object_r:root_t:s0\0")],
    );
    add("./etc/", EntryType::Directory, 0o755, 0, b"", None, &[]);
    add(
        "./etc/passwd",
        EntryType::Regular,
        0o644,
        0,
        b"root:x:0:0::/root:/bin/sh\n",
        None,
        &[],
    );
    add(
        "./usr/bin/ping",
        EntryType::Regular,
        0o4755,
        1000,
        &big,
        None,
        &[
            (
                "security.capability",
                b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            ),
            ("user.note", b"hello"),
        ],
    );
    add(
        "./usr/share/text",
        EntryType::Regular,
        0o600,
        42,
        &text,
        None,
        &[],
    );
    add(
        "./usr/share/empty",
        EntryType::Regular,
        0o644,
        0,
        b"",
        None,
        &[],
    );
    add(
        "./usr/bin/ping-link",
        EntryType::Link,
        0o4755,
        1000,
        b"",
        Some("./usr/bin/ping"),
        &[],
    );
    add(
        "./usr/lib",
        EntryType::Symlink,
        0o777,
        0,
        b"",
        Some("../lib"),
        &[],
    );
    add("./dev/null", EntryType::Char, 0o666, 0, b"", None, &[]);
    add("./dev/sda1", EntryType::Block, 0o660, 6, b"", None, &[]);
    add("./run/fifo", EntryType::Fifo, 0o600, 0, b"", None, &[]);
    b.into_inner().unwrap()
}

/// Writes a copy of `good` whose header claims an object index of
/// `index_len` bytes: the real index followed by a sparse hole, every other
/// region moved along and the header checksum recomputed, so that the
/// layout is valid and only the signed manifest can tell the index is wrong.
/// The file takes little disk space whatever `index_len` is.
pub fn with_inflated_index(good: &Path, out: &Path, index_len: u64) {
    use std::os::unix::fs::FileExt;
    let bytes = fs::read(good).unwrap();
    let b = didymos::bundle::Bundle::open(good).unwrap();
    let h = *b.header();
    let region = |s: didymos::bundle::format::Span| &bytes[s.offset as usize..s.end() as usize];
    let new = didymos::bundle::format::Header::laid_out(
        h.version,
        h.manifest.len,
        h.signature.len,
        index_len,
        h.image.len,
        h.objects.len,
    );
    let f = fs::File::create(out).unwrap();
    f.set_len(new.file_size()).unwrap();
    f.write_all_at(&new.to_bytes(), 0).unwrap();
    for (old, at) in [
        (h.manifest, new.manifest.offset),
        (h.signature, new.signature.offset),
        (h.index, new.index.offset),
        (h.image, new.image.offset),
        (h.objects, new.objects.offset),
    ] {
        f.write_all_at(region(old), at).unwrap();
    }
}
