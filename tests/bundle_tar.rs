//! Tar input (plain, gzip, zstd) and the golden image digest.

#[path = "common/bundle.rs"]
mod common_bundle;

use std::io::Write;

use common_bundle::*;
use didymos::bundle::Bundle;

/// The composefs image digest of `sample_tar()`. Changes only if the image
/// format changes; if this fails, find out why before updating it.
const GOLDEN_IMAGE_DIGEST: &str =
    "5bb108db257c01a645987e8c83c5839b951e79757c7352cb0059ba8fc041b0cd";

fn image_of(fx: &Fixture, bundle: &std::path::Path) -> Vec<u8> {
    Bundle::open(bundle)
        .unwrap()
        .verify(&fx.keyring())
        .unwrap()
        .read_image()
        .unwrap()
}

#[test]
fn tar_plain_gzip_zstd_give_the_same_image() {
    let fx = Fixture::new();
    let tar = sample_tar();
    let plain = fx.path("root.tar");
    std::fs::write(&plain, &tar).unwrap();
    let gz = fx.path("root.tar.gz");
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all(&tar).unwrap();
    e.finish().unwrap();
    let zst = fx.path("root.tar.zst");
    std::fs::write(&zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();

    let mut images = Vec::new();
    for (i, input) in [&plain, &gz, &zst].into_iter().enumerate() {
        let (out, s) = fx.bundle(input, &format!("t{i}.raucb"), "1");
        assert_eq!(
            s.manifest.objects.referenced, 2,
            "ping and text: {:?}",
            s.manifest
        );
        assert_eq!(s.tree.hardlinks, 1);
        assert_eq!(s.tree.devices, 2);
        images.push(image_of(&fx, &out));
    }
    assert_eq!(images[0], images[1]);
    assert_eq!(images[0], images[2]);

    let dump = didymos::image::dump(&images[0]).unwrap();
    let line = |p: &str| {
        dump.lines()
            .find(|l| l.split(' ').next() == Some(p))
            .unwrap_or_else(|| panic!("{p} not in dump:\n{dump}"))
            .to_owned()
    };
    // path size mode nlink uid gid rdev mtime payload content digest xattrs
    assert!(
        line("/usr/bin/ping")
            .starts_with("/usr/bin/ping 200000 104755 2 1000 1001 0 1650001000.0 "),
        "{dump}"
    );
    assert!(
        line("/usr/bin/ping").contains("security.capability="),
        "{dump}"
    );
    assert!(line("/usr/bin/ping").contains("user.note=hello"), "{dump}");
    assert!(
        line("/usr/bin/ping-link").contains("/usr/bin/ping"),
        "{dump}"
    );
    assert!(
        line("/dev/null").starts_with("/dev/null 0 20666 1 0 1 259 "),
        "{dump}"
    );
    assert!(
        line("/dev/sda1").starts_with("/dev/sda1 0 60660 1 6 7 2049 "),
        "{dump}"
    );
    assert!(
        line("/run/fifo").starts_with("/run/fifo 0 10600 1 "),
        "{dump}"
    );
    assert!(line("/usr/lib").contains("../lib"), "{dump}");
    assert!(
        line("/usr/share/empty").starts_with("/usr/share/empty 0 100644 1 "),
        "{dump}"
    );
    assert!(line("/").contains("security.selinux="), "{dump}");
}

#[test]
fn golden_image_digest() {
    let fx = Fixture::new();
    let plain = fx.path("root.tar");
    std::fs::write(&plain, sample_tar()).unwrap();
    let (_, s) = fx.bundle(&plain, "g.raucb", "1");
    assert_eq!(s.manifest.image.digest.to_hex(), GOLDEN_IMAGE_DIGEST);
}

#[test]
fn bad_tar_is_refused_with_a_message() {
    let fx = Fixture::new();
    let mut tar = sample_tar();
    tar.truncate(1500);
    tar[600] ^= 0xff;
    let p = fx.path("bad.tar");
    std::fs::write(&p, &tar).unwrap();
    let out = fx.path("bad.raucb");
    let err = didymos::bundle::create::create(&fx.options(&p, &out, "1")).unwrap_err();
    assert!(err.to_string().contains("tar archive"), "{err}");
    assert!(!out.exists());

    let mut escape = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    // `set_path` refuses "..", so write the name bytes directly.
    h.as_old_mut().name[..10].copy_from_slice(b"../outside");
    h.set_cksum();
    escape.append(&h, &b"x"[..]).unwrap();
    std::fs::write(&p, escape.into_inner().unwrap()).unwrap();
    let err = didymos::bundle::create::create(&fx.options(&p, &out, "1")).unwrap_err();
    assert!(
        format!("{err:#}").contains("leaves the root directory"),
        "{err:#}"
    );
}

/// Extended attributes from the tar writers a build host has: GNU tar
/// (`SCHILY.xattr`) and bsdtar (`LIBARCHIVE.xattr`, base64 values and
/// %-encoded names, alone or next to its SCHILY records) give the same
/// attributes in the image.
#[test]
fn xattrs_from_gnu_tar_and_bsdtar() {
    let fx = Fixture::new();
    let root = fx.path("xattr-root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let file = root.join("etc/f");
    std::fs::write(&file, "content\n").unwrap();
    xattr::set(&file, "user.note", "hé=llo".as_bytes()).unwrap();
    xattr::set(&file, "user.odd%name", &[0, 0xff, 0x10]).unwrap();
    xattr::set(&file, "user.empty", b"").unwrap();
    xattr::set(&file, "user.a=b", b"x").unwrap();

    let writers: [(&str, &[&str]); 3] = [
        ("tar", &["--xattrs", "--format=pax"]),
        ("bsdtar", &["--xattrs", "--format", "pax"]),
        (
            "bsdtar",
            &[
                "--xattrs",
                "--format",
                "pax",
                "--options",
                "pax:xattrheader=LIBARCHIVE",
            ],
        ),
    ];
    let mut attrs = Vec::new();
    for (i, (tool, args)) in writers.iter().enumerate() {
        let tar = fx.path(&format!("x{i}.tar"));
        let status = std::process::Command::new(tool)
            .args(*args)
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg("etc")
            .status()
            .unwrap_or_else(|e| panic!("{tool}: {e} (tests/deps.sh installs it)"));
        assert!(status.success(), "{tool} {args:?}");
        let (out, _) = fx.bundle(&tar, &format!("x{i}.raucb"), "1");
        let dump = didymos::image::dump(&image_of(&fx, &out)).unwrap();
        let line = dump
            .lines()
            .find(|l| l.starts_with("/etc/f "))
            .unwrap_or_else(|| panic!("{dump}"))
            .to_owned();
        // The attributes: the fields after the digest.
        attrs.push(line.split(' ').skip(11).collect::<Vec<_>>().join(" "));
    }
    assert!(attrs[0].contains("user.note="), "{}", attrs[0]);
    // The dump escapes '=' in names as \x3d.
    assert!(attrs[0].contains("user.odd%name="), "{}", attrs[0]);
    assert!(attrs[0].contains("user.a\\x3db="), "{}", attrs[0]);
    assert_eq!(attrs[0], attrs[1], "bsdtar, both kinds of records");
    assert_eq!(attrs[0], attrs[2], "bsdtar, LIBARCHIVE records only");
}
