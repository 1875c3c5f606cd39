//! Container images that must be refused: each error names the layer (and
//! the entry, where one is at fault), and no bundle or temporary file is
//! left behind. The images are OCI layouts written here byte by byte, so
//! every fault is exactly the one intended.

#[path = "common/bundle.rs"]
mod common_bundle;

use std::io::Write;
use std::path::{Path, PathBuf};

use common_bundle::Fixture;
use didymos::bundle::create::{self, CreateOptions, Input};
use didymos::image::OciXattrs;
use didymos::oci::ImageRef;
use sha2::Digest as _;

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn sha(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// A tar stream built entry by entry.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }
    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_650_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }
    fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0.append_data(&mut h, path, &b""[..]).unwrap();
        self
    }
    fn file(mut self, path: &str, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }
    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }
    /// An entry whose name is written as given (`set_path` refuses `..`).
    fn raw_name(mut self, name: &[u8], data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn done(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("usr")
        .dir("usr/bin")
        .dir("etc")
        .file("etc/hostname", b"device\n")
        .file("usr/bin/tool", &[7u8; 5000])
        .symlink("etc/evil", "/tmp/outside")
        .done()
}

/// Writes an OCI layout with `layers` (media type, blob, uncompressed tar).
fn write_layout(dir: &Path, layers: &[(&str, Vec<u8>, Vec<u8>)]) -> Vec<PathBuf> {
    write_layout_labels(
        dir,
        layers,
        serde_json::json!({"org.opencontainers.image.version": "3.1"}),
    )
}

fn write_layout_labels(
    dir: &Path,
    layers: &[(&str, Vec<u8>, Vec<u8>)],
    labels: serde_json::Value,
) -> Vec<PathBuf> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut paths = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (media_type, blob, tar) in layers {
        let d = sha(blob);
        std::fs::write(blobs.join(&d), blob).unwrap();
        paths.push(blobs.join(&d));
        descs.push(serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{d}"), "size": blob.len()}));
        diff_ids.push(format!("sha256:{}", sha(tar)));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    std::fs::write(blobs.join(sha(&config)), &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha(&config)), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    std::fs::write(blobs.join(sha(&manifest)), &manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    paths
}

fn plain(tar: Vec<u8>) -> (&'static str, Vec<u8>, Vec<u8>) {
    (TAR, tar.clone(), tar)
}

fn gzip(tar: Vec<u8>) -> (&'static str, Vec<u8>, Vec<u8>) {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    (TAR_GZ, e.finish().unwrap(), tar)
}

/// Creates a bundle from `oci:<dir>` into an empty directory of its own.
fn create_from(
    fx: &Fixture,
    layout: &Path,
    version: &str,
) -> (Result<create::CreateSummary, String>, PathBuf) {
    let out_dir = tempfile::tempdir_in(fx.dir.path()).unwrap().keep();
    let out = out_dir.join("b.raucb");
    let mut o: CreateOptions = fx.options(Path::new(""), &out, version);
    o.input = Input::Oci {
        image: ImageRef::parse(&format!("oci:{}", layout.display())).unwrap(),
        xattrs: OciXattrs::default(),
    };
    (create::create(&o).map_err(|e| format!("{e:#}")), out_dir)
}

/// The error, after checking that nothing was left in the output directory.
fn refused(
    fx: &Fixture,
    layers: &[(&str, Vec<u8>, Vec<u8>)],
    edit: impl FnOnce(&Path, &[PathBuf]),
) -> String {
    let layout = tempfile::tempdir_in(fx.dir.path()).unwrap().keep();
    let blobs = write_layout(&layout, layers);
    edit(&layout, &blobs);
    let (result, out_dir) = create_from(fx, &layout, "1");
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    match result {
        Ok(s) => panic!("accepted: {:?}", s.manifest),
        Err(e) => e,
    }
}

fn assert_has(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "{p:?} not in: {err}");
    }
}

#[test]
fn a_good_two_layer_image_is_accepted() {
    // The images below differ from this one by exactly their fault.
    let fx = Fixture::new();
    let layout = fx.path("good");
    let second = Layer::new().dir("etc").file("etc/.wh.hostname", b"").done();
    write_layout(&layout, &[plain(base_layer()), gzip(second)]);
    let (s, _) = create_from(&fx, &layout, "");
    let s = s.unwrap();
    assert_eq!(s.manifest.version, "3.1", "from the label");
    assert_eq!(s.manifest.objects.referenced, 1);
}

#[test]
fn missing_blob() {
    let fx = Fixture::new();
    let second = Layer::new().dir("etc").file("etc/new", b"x").done();
    let err = refused(&fx, &[plain(base_layer()), gzip(second)], |_, blobs| {
        std::fs::remove_file(&blobs[1]).unwrap()
    });
    assert_has(&err, &["layer 2/2 (sha256:", "is missing", "blobs/sha256/"]);
}

#[test]
fn layer_digest_does_not_match_its_descriptor() {
    let fx = Fixture::new();
    let second = Layer::new().dir("etc").file("etc/new", &[1u8; 3000]).done();
    let err = refused(&fx, &[plain(base_layer()), plain(second)], |_, blobs| {
        let mut data = std::fs::read(&blobs[1]).unwrap();
        data[512 + 100] ^= 0xff; // a byte of etc/new, same size
        std::fs::write(&blobs[1], data).unwrap();
    });
    assert_has(
        &err,
        &[
            "layer 2/2 (sha256:",
            "does not match the digest its descriptor names",
            "expected sha256:",
            "found sha256:",
        ],
    );

    // A compressed blob that fails to decompress is reported the same way.
    let second = Layer::new().dir("etc").file("etc/new", &[1u8; 3000]).done();
    let err = refused(&fx, &[plain(base_layer()), gzip(second)], |_, blobs| {
        let mut data = std::fs::read(&blobs[1]).unwrap();
        let n = data.len();
        data[n / 2] ^= 0xff;
        std::fs::write(&blobs[1], data).unwrap();
    });
    assert_has(
        &err,
        &[
            "layer 2/2 (sha256:",
            "does not match the digest its descriptor names",
        ],
    );
}

#[test]
fn uncompressed_layer_does_not_match_its_diff_id() {
    let fx = Fixture::new();
    let second = Layer::new().dir("etc").file("etc/new", b"x").done();
    let other = Layer::new().dir("etc").file("etc/new", b"y").done();
    // The manifest's digest is right, the config's diff_id names another tar.
    let (mt, blob, _) = gzip(second);
    let err = refused(&fx, &[plain(base_layer()), (mt, blob, other)], |_, _| {});
    assert_has(
        &err,
        &["layer 2/2 (sha256:", "does not match the config's diff_id"],
    );
}

#[test]
fn path_traversal_entry() {
    let fx = Fixture::new();
    let second = Layer::new().raw_name(b"../outside", b"x").done();
    let err = refused(&fx, &[plain(base_layer()), plain(second)], |_, _| {});
    assert_has(
        &err,
        &[
            "layer 2/2 (sha256:",
            "entry ../outside",
            "leaves the root directory",
        ],
    );
}

#[test]
fn absolute_symlink_escape() {
    let fx = Fixture::new();
    // Layer 1 has etc/evil -> /tmp/outside; an extractor would write
    // /tmp/outside/payload on the build host.
    let second = Layer::new().file("etc/evil/payload", b"x").done();
    let err = refused(&fx, &[plain(base_layer()), plain(second)], |_, _| {});
    assert_has(
        &err,
        &[
            "layer 2/2 (sha256:",
            "entry etc/evil/payload",
            "etc/evil is a symbolic link (to /tmp/outside), not a directory",
        ],
    );
}

#[test]
fn whiteout_of_a_file_that_does_not_exist() {
    let fx = Fixture::new();
    let second = Layer::new().dir("etc").file("etc/.wh.nothing", b"").done();
    let err = refused(&fx, &[plain(base_layer()), plain(second)], |_, _| {});
    assert_has(
        &err,
        &[
            "layer 2/2 (sha256:",
            "entry etc/.wh.nothing",
            "whiteout of etc/nothing, which no lower layer has",
        ],
    );
}

#[test]
fn unsupported_media_type() {
    let fx = Fixture::new();
    let second = Layer::new().dir("etc").file("etc/new", b"x").done();
    let layer = (
        "application/vnd.oci.image.layer.v1.tar+bzip2",
        second.clone(),
        second,
    );
    let err = refused(&fx, &[plain(base_layer()), layer], |_, _| {});
    assert_has(
        &err,
        &[
            "layer 2/2 (sha256:",
            "unsupported media type \"application/vnd.oci.image.layer.v1.tar+bzip2\"",
        ],
    );
}

#[test]
fn image_without_usr_is_refused() {
    let fx = Fixture::new();
    let only = Layer::new().dir("etc").file("etc/hostname", b"x").done();
    let err = refused(&fx, &[plain(only)], |_, _| {});
    assert_has(&err, &["no /usr directory"]);
}

#[test]
fn no_version_and_no_label() {
    let fx = Fixture::new();
    let layout = fx.path("nolabel");
    write_layout_labels(&layout, &[plain(base_layer())], serde_json::json!({}));
    let (result, out_dir) = create_from(&fx, &layout, "");
    let err = result.unwrap_err();
    assert_has(
        &err,
        &["no --version given", "org.opencontainers.image.version"],
    );
    assert_eq!(std::fs::read_dir(out_dir).unwrap().count(), 0);
}

/// A zstd:chunked layer is a zstd stream whose table of contents sits in
/// skippable frames: it is read as the tar+zstd it is.
#[test]
fn zstd_chunked_style_layer_is_read() {
    let fx = Fixture::new();
    let second = Layer::new().dir("etc").file("etc/new", &[3u8; 4000]).done();
    let mut blob = zstd::encode_all(&second[..], 3).unwrap();
    // A skippable frame (magic 0x184D2A50) like the chunked TOC and footer.
    let toc = br#"{"version":1,"entries":[]}"#;
    blob.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    blob.extend_from_slice(&(toc.len() as u32).to_le_bytes());
    blob.extend_from_slice(toc);
    let layout = fx.path("chunked");
    write_layout(&layout, &[plain(base_layer()), (TAR_ZSTD, blob, second)]);
    let (s, _) = create_from(&fx, &layout, "1");
    assert_eq!(s.unwrap().manifest.objects.referenced, 2);
}

#[test]
fn parent_directory_no_layer_made() {
    let fx = Fixture::new();
    // What `tar -C / -cf x.tar usr/bin` writes: no entry for usr/ itself.
    let only = Layer::new()
        .dir("usr/bin")
        .file("usr/bin/tool", b"x")
        .done();
    let err = refused(&fx, &[plain(only)], |_, _| {});
    assert_has(
        &err,
        &[
            "layer 1/1 (sha256:",
            "entry usr/bin",
            "the parent directory usr is not in this layer or a lower one",
            "tar -C DIR -cf layer.tar .",
        ],
    );
}

#[test]
fn command_line() {
    let fx = Fixture::new();
    let layout = fx.path("cli-layout");
    write_layout(&layout, &[plain(base_layer())]);
    let out = fx.path("cli.raucb");
    let run = |extra: &[&str]| {
        let mut c = common_bundle::didymos_cmd();
        c.args(["bundle", "create", "-o"])
            .arg(&out)
            .arg("--cert")
            .arg(&fx.pki.signing_cert)
            .arg("--key")
            .arg(&fx.pki.signing_key)
            .arg("--intermediate")
            .arg(&fx.pki.intermediate_cert)
            .args(["--compatible", "didymos-test"])
            .args(extra);
        c.output().unwrap()
    };
    let oci = format!("oci:{}:1", layout.display());
    let ok = run(&["--oci", &oci, "--oci-xattrs", "capabilities+user"]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains(&format!("from       {oci} (config sha256:")),
        "{stdout}"
    );
    assert!(stdout.contains("version    3.1"), "{stdout}");
    // --version wins over the label.
    let ok = run(&["--oci", &oci, "--version", "9.9"]);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("version    9.9"));

    for (args, want) in [
        (vec!["--version", "1"], "--rootfs <DIR|TAR>|--oci <REF>"),
        (vec!["--rootfs", "x", "--oci", &oci], "cannot be used with"),
        (
            vec![
                "--rootfs",
                "x",
                "--version",
                "1",
                "--oci-xattrs",
                "capabilities",
            ],
            "cannot be used with",
        ),
        (vec!["--oci", "ftp:x"], "unknown transport ftp:"),
        (
            vec!["--oci", &oci, "--oci-xattrs", "all"],
            "invalid value 'all'",
        ),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn whiteout_of_an_entry_the_same_layer_adds() {
    let fx = Fixture::new();
    let second = Layer::new()
        .dir("etc")
        .file("etc/motd", b"hi")
        .file("etc/.wh.motd", b"")
        .done();
    let err = refused(&fx, &[plain(base_layer()), plain(second)], |_, _| {});
    assert_has(
        &err,
        &[
            "layer 2/2 (sha256:",
            "entry etc/.wh.motd",
            "whiteout of etc/motd, which this same layer adds",
        ],
    );
}

/// An opaque marker hides what lower layers put in its directory, not what
/// its own layer puts there (before or after the marker).
#[test]
fn opaque_directory_keeps_its_own_layers_entries() {
    let fx = Fixture::new();
    let second = Layer::new()
        .dir("etc")
        .file("etc/before", b"b")
        .file("etc/.wh..wh..opq", b"")
        .file("etc/after", b"a")
        .done();
    let layout = fx.path("opaque");
    write_layout(&layout, &[plain(base_layer()), plain(second)]);
    let (s, _) = create_from(&fx, &layout, "1");
    let out = s.unwrap().output;
    let bundle = didymos::bundle::Bundle::open(&out).unwrap();
    let v = bundle.verify(&fx.keyring()).unwrap();
    let dump = didymos::image::dump(&v.read_image().unwrap()).unwrap();
    let etc: Vec<&str> = dump
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|p| p.starts_with("/etc/"))
        .collect();
    assert_eq!(etc, ["/etc/after", "/etc/before"], "{dump}");
}
