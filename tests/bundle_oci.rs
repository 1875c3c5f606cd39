//! Root only: bundles from container images that the real podman built,
//! offline, `FROM scratch`, with whiteouts, an opaque directory, a hard
//! link, a capability and a user extended attribute in later layers.
//!
//! - the four ways to hand over an image give one image digest;
//! - installed on a directory-backed device and mounted (EROFS +
//!   overlayfs), the slot equals `podman export` of the image, entry by
//!   entry, with the differences composefs defines and no others;
//! - the digest is the one composefs-rs (`composefs-oci`, the release of the
//!   pinned `composefs`) computes for the same image;
//! - a delta between two tags carries only the changed objects.
//!
//! These tests need root and fail (not skip) without it.

#[path = "common/device.rs"]
mod device;
#[path = "common/oci.rs"]
mod oci;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use device::Device;
use didymos::bundle::create::{self, CreateOptions, CreateSummary, Input};
use didymos::image::OciXattrs;
use didymos::oci::ImageRef;
use didymos::sys::composefs::{ComposefsOptions, OverlayVerity, mount_composefs};
use oci::Podman;

/// A directory-backed device whose slots take no boot files (the test
/// image has no kernel).
fn device() -> Device {
    let boot_files = "boot-files = [\"boot/vmlinuz\", \"boot/initrd.img\"]\n";
    Device::with_config(|c| {
        assert!(c.contains(boot_files), "{c}");
        c.replace(boot_files, "")
    })
}

fn oci_bundle(
    dev: &Device,
    reference: &str,
    xattrs: OciXattrs,
    out: &Path,
    bases: &[PathBuf],
) -> CreateSummary {
    let mut o = CreateOptions::new(
        "",
        out,
        &dev.pki.signing_cert,
        &dev.pki.signing_key,
        didymos::demo::COMPATIBLE,
        "",
    );
    o.input = Input::Oci {
        image: ImageRef::parse(reference).unwrap(),
        xattrs,
    };
    o.intermediates = vec![dev.pki.intermediate_cert.clone()];
    o.bases = bases.to_vec();
    o.created = Some(1_700_000_000);
    create::create(&o).unwrap_or_else(|e| panic!("{reference}: {e}"))
}

/// The four references to one image: OCI layout, OCI archive, docker
/// archive (all written by `podman save`) and podman's store itself.
fn references(p: &Podman, dir: &Path, tag: &str) -> Vec<String> {
    let layout = dir.join(format!("layout-{tag}"));
    let oci_archive = dir.join(format!("image-{tag}.oci.tar"));
    let docker_archive = dir.join(format!("image-{tag}.docker.tar"));
    p.save(tag, "oci-dir", &layout);
    p.save(tag, "oci-archive", &oci_archive);
    p.save(tag, "docker-archive", &docker_archive);
    vec![
        format!("oci:{}", layout.display()),
        format!("oci-archive:{}", oci_archive.display()),
        format!("docker-archive:{}", docker_archive.display()),
        p.storage_ref(tag),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// File type and permission bits.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    rdev: u64,
    link: Option<PathBuf>,
    content_sha: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// What `podman export` wrote: path → entry, and the hard links (path →
/// the path it links to).
fn read_export(tar: &Path) -> (BTreeMap<PathBuf, Entry>, BTreeMap<PathBuf, PathBuf>) {
    let mut out = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut ar = tar::Archive::new(fs::File::open(tar).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path: PathBuf = e
            .path()
            .unwrap()
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        let h = e.header().clone();
        let kind = h.entry_type();
        if kind.is_hard_link() {
            let target: PathBuf = e.link_name().unwrap().unwrap().into_owned();
            links.insert(path, target);
            continue;
        }
        let ftype = match kind {
            tar::EntryType::Directory => 0o040000,
            tar::EntryType::Regular => 0o100000,
            tar::EntryType::Symlink => 0o120000,
            tar::EntryType::Char => 0o020000,
            tar::EntryType::Block => 0o060000,
            tar::EntryType::Fifo => 0o010000,
            other => panic!("{}: unexpected {other:?} in the export", path.display()),
        };
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for x in pax {
                let x = x.unwrap();
                if let Some(n) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(n.to_owned(), x.value_bytes().to_vec());
                }
            }
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let rdev = match (h.device_major().unwrap(), h.device_minor().unwrap()) {
            (Some(a), Some(b)) if ftype == 0o020000 || ftype == 0o060000 => {
                rustix::fs::makedev(a, b)
            }
            _ => 0,
        };
        out.insert(
            path,
            Entry {
                mode: ftype | (h.mode().unwrap() & 0o7777),
                uid: h.uid().unwrap() as u32,
                gid: h.gid().unwrap() as u32,
                mtime: h.mtime().unwrap() as i64,
                rdev,
                link: (ftype == 0o120000).then(|| e.link_name().unwrap().unwrap().into_owned()),
                content_sha: (ftype == 0o100000).then(|| sha(&data)),
                xattrs,
            },
        );
    }
    (out, links)
}

/// The mounted tree: path → entry, and inode → paths.
fn read_mount(root: &Path) -> (BTreeMap<PathBuf, Entry>, HashMap<u64, Vec<PathBuf>>) {
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
        out.insert(
            rel,
            Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                rdev: m.rdev(),
                link: m.is_symlink().then(|| fs::read_link(&p).unwrap()),
                content_sha: m.is_file().then(|| sha(&fs::read(&p).unwrap())),
                xattrs,
            },
        );
    }
    (out, inodes)
}

/// Installs `bundle`, mounts the slot, and returns what the mount shows.
fn install_and_read(
    dev: &Device,
    bundle: &Path,
) -> (BTreeMap<PathBuf, Entry>, HashMap<u64, Vec<PathBuf>>) {
    let outcome = dev.install(bundle).unwrap();
    let store = didymos::store::Store::open(&dev.config.store.path, dev.config.store.verity);
    let image = fs::File::open(store.image_path(&outcome.image)).unwrap();
    let staging = dev.path(&format!("staging-{}", outcome.image));
    let target = dev.path(&format!("mnt-{}", outcome.image));
    fs::create_dir_all(&staging).unwrap();
    fs::create_dir_all(&target).unwrap();
    let m = mount_composefs(
        &image,
        "slot image",
        &store.objects_dir(),
        &staging,
        OverlayVerity::Off,
        ComposefsOptions::default(),
    )
    .unwrap();
    let guard = m.root.attach(&target).unwrap();
    let seen = read_mount(&target);
    guard.unmount().unwrap();
    seen
}

/// Compares the mounted slot with the export. The only differences allowed
/// are the ones composefs defines for container images: the root directory
/// (not in an export) has `/usr`'s metadata, `/run` has `/usr`'s mtime, and
/// extended attributes other than the kept ones are gone.
fn compare(
    export: &(BTreeMap<PathBuf, Entry>, BTreeMap<PathBuf, PathBuf>),
    mount: &(BTreeMap<PathBuf, Entry>, HashMap<u64, Vec<PathBuf>>),
    keep_user: bool,
) -> Vec<String> {
    let (want, want_links) = export;
    let (got, inodes) = mount;
    let mut diffs = Vec::new();
    let usr = want.get(Path::new("usr")).expect("/usr in the export");
    for (path, w) in want {
        let mut w = w.clone();
        if path == Path::new("run") {
            w.mtime = usr.mtime;
        }
        w.xattrs
            .retain(|k, _| k == "security.capability" || (keep_user && k.starts_with("user.")));
        match got.get(path) {
            None => diffs.push(format!("{}: missing from the slot", path.display())),
            Some(g) if *g != w => diffs.push(format!(
                "{}:\n  export {w:?}\n  slot   {g:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for (path, target) in want_links {
        let group = inodes
            .values()
            .find(|v| v.contains(target))
            .cloned()
            .unwrap_or_default();
        if !group.contains(path) {
            diffs.push(format!(
                "{}: not a hard link of {} in the slot (group {group:?})",
                path.display(),
                target.display()
            ));
        }
    }
    for path in got.keys() {
        if !path.as_os_str().is_empty()
            && !want.contains_key(path)
            && !want_links.contains_key(path)
        {
            diffs.push(format!(
                "{}: in the slot, not in the export",
                path.display()
            ));
        }
    }
    let root = &got[Path::new("")];
    if (root.mode, root.uid, root.gid, root.mtime) != (usr.mode, usr.uid, usr.gid, usr.mtime) {
        diffs.push(format!("/: {root:?} does not have /usr's metadata {usr:?}"));
    }
    diffs
}

#[test]
fn four_transports_one_image_and_the_slot_equals_podman_export() {
    let p = Podman::new();
    let dev = device();
    let ctx = oci::context(dev.dir.path());
    p.build(&ctx, oci::CONTAINERFILE_V1, "1");

    let mut digests = BTreeSet::new();
    let mut first = None;
    for (i, r) in references(&p, dev.dir.path(), "1").iter().enumerate() {
        let out = dev.path(&format!("t{i}.raucb"));
        let s = oci_bundle(&dev, r, OciXattrs::KeepUser, &out, &[]);
        assert_eq!(s.manifest.version, "1.0", "from the label");
        assert_eq!(s.tree.hardlinks, 1, "{r}");
        digests.insert(s.manifest.image.digest);
        first.get_or_insert(out);
    }
    assert_eq!(
        digests.len(),
        1,
        "one image digest for all four: {digests:?}"
    );

    let export = dev.path("export.tar");
    p.export("1", &export);
    let export = read_export(&export);
    // The layers did what the test says they do.
    let (files, links) = &export;
    assert!(!files.contains_key(Path::new("bin/sleep")), "whiteout");
    assert!(files.contains_key(Path::new("bin/sh")));
    assert!(
        !files.contains_key(Path::new("usr/share/example/numbers")),
        "opaque"
    );
    assert!(files.contains_key(Path::new("usr/share/example/new")));
    assert_eq!(
        links.get(Path::new("usr/bin/busybox-link")),
        Some(&PathBuf::from("bin/busybox"))
    );
    let tool = &files[Path::new("usr/bin/captool")];
    assert_eq!(tool.xattrs["security.capability"], oci::CAP_NET_RAW_EP);
    assert_eq!(tool.xattrs["user.note"], b"hello");

    let mount = install_and_read(&dev, first.as_ref().unwrap());
    let diffs = compare(&export, &mount, true);
    assert!(
        diffs.is_empty(),
        "slot differs from podman export:\n{}",
        diffs.join("\n")
    );
    assert!(mount.0.len() > 25, "{}", mount.0.len());

    // composefs-rs's default keeps capabilities only: same tree, no user.note.
    let caps = dev.path("caps.raucb");
    let s = oci_bundle(
        &dev,
        &p.storage_ref("1"),
        OciXattrs::CapabilitiesOnly,
        &caps,
        &[],
    );
    assert!(!digests.contains(&s.manifest.image.digest));
    let mount = install_and_read(&dev, &caps);
    let diffs = compare(&export, &mount, false);
    assert!(
        diffs.is_empty(),
        "slot differs from podman export:\n{}",
        diffs.join("\n")
    );
    let tool = &mount.0[Path::new("usr/bin/captool")];
    assert_eq!(
        tool.xattrs.keys().collect::<Vec<_>>(),
        ["security.capability"]
    );
    // The comparison notices a difference.
    assert!(!compare(&export, &mount, true).is_empty());
}

/// composefs-rs's own computation: `composefs-oci` imports the layout into
/// a repository and `create_filesystem` + `compute_image_id(V1)` is what
/// `cfsctl oci compute-id` prints for it (V1 is `cfsctl init`'s default).
fn composefs_rs_image_id(layout: &str, repo_dir: &Path, keep_user: bool) -> didymos::Digest {
    use composefs_oci::composefs::erofs::format::FormatVersion;
    use composefs_oci::composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
    use composefs_oci::composefs::repository::{Repository, RepositoryConfig};
    let (repo, _) = Repository::<Sha256HashValue>::init_path(
        rustix::fs::CWD,
        repo_dir,
        RepositoryConfig::default().set_insecure(),
    )
    .unwrap();
    let repo = std::sync::Arc::new(repo);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pulled = rt
        .block_on(composefs_oci::pull(
            &repo,
            layout,
            None,
            composefs_oci::PullOptions::default(),
        ))
        .unwrap();
    let options = composefs_oci::OciTransformOptions {
        xattrs: if keep_user {
            composefs_oci::XattrFiltering::KeepUserXattrs
        } else {
            composefs_oci::XattrFiltering::AllowlistOnly
        },
    };
    let fs = composefs_oci::image::create_filesystem(
        &repo,
        &pulled.config_digest,
        Some(&pulled.config_verity),
        &options,
    )
    .unwrap();
    didymos::Digest::from_hex(&fs.compute_image_id(FormatVersion::V1).to_hex()).unwrap()
}

#[test]
fn image_digest_equals_composefs_rs() {
    let p = Podman::new();
    let dev = device();
    let ctx = oci::context(dev.dir.path());
    p.build(&ctx, oci::CONTAINERFILE_V1, "1");
    let refs = references(&p, dev.dir.path(), "1");
    for (i, (xattrs, keep_user)) in [
        (OciXattrs::CapabilitiesOnly, false),
        (OciXattrs::KeepUser, true),
    ]
    .into_iter()
    .enumerate()
    {
        let s = oci_bundle(
            &dev,
            &refs[0],
            xattrs,
            &dev.path(&format!("d{i}.raucb")),
            &[],
        );
        for (j, r) in refs[..2].iter().enumerate() {
            let theirs = composefs_rs_image_id(r, &dev.path(&format!("repo-{i}-{j}")), keep_user);
            assert_eq!(
                s.manifest.image.digest, theirs,
                "{r} ({xattrs:?}): didymos against composefs-rs"
            );
        }
    }
}

#[test]
fn delta_between_two_tags_carries_only_the_changed_objects() {
    let p = Podman::new();
    let dev = device();
    let ctx = oci::context(dev.dir.path());
    p.build(&ctx, oci::CONTAINERFILE_V1, "1");
    p.build(&ctx, oci::CONTAINERFILE_V2, "2");
    let v1 = dev.path("v1.raucb");
    let full1 = oci_bundle(&dev, &p.storage_ref("1"), OciXattrs::default(), &v1, &[]);
    let full2 = oci_bundle(
        &dev,
        &p.storage_ref("2"),
        OciXattrs::default(),
        &dev.path("v2-full.raucb"),
        &[],
    );
    let v2 = dev.path("v2.raucb");
    let delta = oci_bundle(
        &dev,
        &p.storage_ref("2"),
        OciXattrs::default(),
        &v2,
        std::slice::from_ref(&v1),
    );
    assert_eq!(delta.manifest.version, "2.0");
    assert_eq!(delta.manifest.image.digest, full2.manifest.image.digest);

    // v2's image may be a delta against v1's.
    let mut images: Vec<(didymos::Digest, Vec<u8>)> = Vec::new();
    let mut objects = |b: &Path| -> BTreeSet<didymos::Digest> {
        let bundle = didymos::bundle::Bundle::open(b).unwrap();
        let image = bundle.read_image_unverified_with(&images).unwrap();
        let referenced = didymos::image::referenced_objects(&image).unwrap();
        let digest = bundle.manifest_unverified().unwrap().image.digest;
        images.push((digest, image));
        referenced
    };
    let (o1, o2) = (objects(&v1), objects(&v2));
    let changed: BTreeSet<_> = o2.difference(&o1).copied().collect();
    assert_eq!(changed.len(), 1, "one file changed: {changed:?}");
    assert_eq!(
        delta.manifest.objects.count, 1,
        "{:?}",
        delta.manifest.objects
    );
    assert_eq!(delta.objects_in_base, o2.len() as u64 - 1);
    assert_eq!(full1.manifest.objects.count, o1.len() as u64);
    assert!(delta.file_size < full2.file_size / 2);

    // The delta installs on a device that has v1.
    dev.install(&v1).unwrap();
    dev.boot();
    dev.mark_good();
    dev.install(&v2).unwrap();
    dev.fsck_clean();
}

#[test]
fn missing_image_in_containers_storage_leaves_nothing_behind() {
    let p = Podman::new();
    let dev = device();
    let out_dir = dev.path("out");
    fs::create_dir_all(&out_dir).unwrap();
    let mut o = CreateOptions::new(
        "",
        out_dir.join("b.raucb"),
        &dev.pki.signing_cert,
        &dev.pki.signing_key,
        didymos::demo::COMPATIBLE,
        "1",
    );
    o.input = Input::Oci {
        image: ImageRef::parse(&p.storage_ref("absent")).unwrap(),
        xattrs: OciXattrs::default(),
    };
    o.intermediates = vec![dev.pki.intermediate_cert.clone()];
    let err = format!("{:#}", create::create(&o).unwrap_err());
    assert!(
        err.contains("localhost/didymos-test:absent")
            && err.contains("skopeo could not read the image from containers-storage"),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
