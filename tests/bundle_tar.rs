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
