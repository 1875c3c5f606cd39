//! Root-only: the mount code of setup-root against the host kernel (EROFS,
//! overlayfs and loop devices; no fs-verity here, that is the VM tier's).

#[path = "common/setup_root.rs"]
mod helpers;

use std::fs::File;
use std::path::Path;

use didymos::setup_root::tree::{TreeSpec, mount_tree};
use didymos::slot::Bootname;
use didymos::sys::composefs::{
    ComposefsOptions, ErofsBacking, OverlayLayers, OverlayVerity, mount_composefs,
};
use helpers::*;

fn files() -> Vec<TestFile> {
    vec![
        ("/usr/bin/tool", content("tool-binary", 10_000)),
        ("/etc/os-release", content("VERSION=1\n", 100)),
        ("/usr/share/big", content("0123456789abcdef", 300_000)),
    ]
}

fn mount_and_check(options: ComposefsOptions, backing_loop: bool, layers: OverlayLayers) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let digest = make_store(&store, &files());
    let image = File::open(store.join("images").join(digest.to_hex())).unwrap();
    let staging = dir.path().join("staging");
    let target = dir.path().join("root");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(&target).unwrap();

    let m = mount_composefs(
        &image,
        "test image",
        &store.join("objects"),
        &staging,
        OverlayVerity::Off,
        options,
    )
    .unwrap();
    assert_eq!(
        matches!(m.backing, ErofsBacking::Loop(_)),
        backing_loop,
        "{:?}",
        m.backing
    );
    assert_eq!(m.layers, layers);
    // The staging mount is gone once the overlay holds the image.
    assert_eq!(mount_at(&staging), None);

    let guard = m.root.attach(&target).unwrap();
    for (path, data) in files() {
        let got = std::fs::read(target.join(&path[1..])).unwrap();
        assert!(got == data, "{path} reads back different content");
    }
    let (fstype, source, opts, sopts) = mount_at(&target).expect("tree is mounted");
    assert_eq!((fstype.as_str(), source.as_str()), ("overlay", "composefs"));
    assert!(opts.split(',').any(|o| o == "ro"), "mount options {opts}");
    assert!(
        sopts.contains("metacopy=on") && sopts.contains("redirect_dir=on"),
        "{sopts}"
    );
    // Read-only: writing fails.
    assert!(std::fs::write(target.join("etc/new"), b"x").is_err());

    drop(guard);
    assert_eq!(mount_at(&target), None, "dropping the guard unmounts");
}

#[test]
fn composefs_from_file_with_appended_layers() {
    mount_and_check(ComposefsOptions::default(), false, OverlayLayers::Appended);
}

#[test]
fn composefs_through_loop_device() {
    mount_and_check(
        ComposefsOptions {
            force_loop: true,
            ..Default::default()
        },
        true,
        OverlayLayers::Appended,
    );
}

#[test]
fn composefs_with_legacy_layer_string() {
    mount_and_check(
        ComposefsOptions {
            force_legacy_layers: true,
            ..Default::default()
        },
        false,
        OverlayLayers::Legacy,
    );
}

#[test]
fn errors_name_the_step_and_carry_the_kernel_log() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let digest = make_store(&store, &files());
    let image = File::open(store.join("images").join(digest.to_hex())).unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let missing = dir.path().join("no-such-objects");
    let err = mount_composefs(
        &image,
        "test image",
        &missing,
        &staging,
        OverlayVerity::Off,
        ComposefsOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("datadir+") && err.contains("no-such-objects"),
        "{err}"
    );
    assert_eq!(mount_at(&staging), None, "nothing left mounted: {err}");

    // A parameter the kernel rejects: its own explanation is in the message.
    let fs = didymos::sys::FsHandle::open("overlay", "probe").unwrap();
    let err = fs.set_string("redirect_dir", "sideways").unwrap_err();
    assert!(!err.kernel_log.is_empty(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("(kernel: ") && text.contains("redirect_dir"),
        "{text}"
    );
}

#[test]
fn garbage_image_is_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bad");
    std::fs::write(&img, vec![0x5a; 8192]).unwrap();
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let err = mount_composefs(
        &File::open(&img).unwrap(),
        "bad image",
        dir.path(),
        &staging,
        OverlayVerity::Off,
        ComposefsOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("EROFS image bad image"), "{err}");
}

#[test]
fn tree_has_persistent_etc_and_var() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let digest = make_store(&store, &files());
    let target = dir.path().join("sysroot");
    let staging = dir.path().join("staging");
    let bootname = Bootname::new("A").unwrap();
    let image = File::open(store.join("images").join(digest.to_hex())).unwrap();
    let spec = TreeSpec {
        store: &store,
        target: &target,
        staging: &staging,
        bootname: &bootname,
        image: &image,
        image_name: "test image",
        verity: OverlayVerity::Off,
        options: ComposefsOptions::default(),
        store_mountpoint: Some(Path::new("/store")),
    };
    for round in 0..2 {
        let tree = mount_tree(&spec).unwrap();
        assert_eq!(
            std::fs::read(target.join("etc/os-release")).unwrap(),
            content("VERSION=1\n", 100)
        );
        if round == 0 {
            std::fs::write(target.join("etc/hostname"), b"device-1\n").unwrap();
            std::fs::write(target.join("var/log.txt"), b"first boot\n").unwrap();
        } else {
            // What the first mount wrote survived: /etc per slot, /var shared.
            assert_eq!(
                std::fs::read(target.join("etc/hostname")).unwrap(),
                b"device-1\n"
            );
            assert_eq!(
                std::fs::read(target.join("var/log.txt")).unwrap(),
                b"first boot\n"
            );
        }
        assert_eq!(mount_at(&target.join("etc")).unwrap().0, "overlay");
        assert!(target.join("store/images").join(digest.to_hex()).is_file());
        drop(tree);
        assert_eq!(mount_at(&target), None);
    }
    assert_eq!(
        std::fs::read(store.join("state/A/etc/upper/hostname")).unwrap(),
        b"device-1\n"
    );
    assert_eq!(
        std::fs::read(store.join("state/var/log.txt")).unwrap(),
        b"first boot\n"
    );
}

#[test]
fn tree_failure_unmounts_everything() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let digest = make_store(&store, &files());
    // The last step fails (the image has no directory for the store): the
    // root, /etc and /var mounts made before it must all be gone.
    let target = dir.path().join("sysroot");
    let bootname = Bootname::new("A").unwrap();
    let image = File::open(store.join("images").join(digest.to_hex())).unwrap();
    let spec = TreeSpec {
        store: &store,
        target: &target,
        staging: &dir.path().join("staging"),
        bootname: &bootname,
        image: &image,
        image_name: "test image",
        verity: OverlayVerity::Off,
        options: ComposefsOptions::default(),
        store_mountpoint: Some(Path::new("/no/such/dir")),
    };
    let err = mount_tree(&spec).unwrap_err().to_string();
    assert!(err.contains("no/such/dir"), "{err}");
    assert_eq!(
        mount_at(&target),
        None,
        "a failed setup leaves nothing mounted"
    );
    assert_eq!(mount_at(&target.join("etc")), None);
}
