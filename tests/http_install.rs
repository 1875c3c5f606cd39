//! Tier 2 (root: network namespaces, tc): installs from real nginx over HTTP
//! and HTTPS, what goes over the wire (from nginx's access log), faults made
//! by the kernel (netem, a link taken down, the server killed) and by the
//! device (SIGKILL, a power cut), and servers that answer wrongly.

#[path = "common/bundle.rs"]
mod common_bundle;
#[path = "common/device.rs"]
mod device;
#[path = "common/hostile.rs"]
mod hostile;
#[path = "common/nginx.rs"]
mod nginx;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use device::Device;
use nginx::{Nginx, Options, TestPki};

/// A device whose `[streaming]` settings suit a test: quick timeouts, quick
/// retries (8 of them), and `extra` lines.
fn device(extra: &str) -> Device {
    device_retrying(8, extra)
}

fn device_retrying(retries: u32, extra: &str) -> Device {
    let extra = extra.to_owned();
    Device::with_config(move |c| {
        format!(
            "{c}\n[streaming]\nconnect-timeout = \"2s\"\nread-timeout = \"2s\"\n\
             retry-delay = \"100ms\"\nmax-retries = {retries}\n{extra}"
        )
    })
}

fn install_url(d: &Device, url: &str) -> Result<didymos::install::InstallOutcome, String> {
    didymos::install::install(
        &d.config,
        didymos::install::BundleSource::Url(url.to_owned()),
        &Default::default(),
        &|_| {},
        &Default::default(),
    )
    .map_err(|e| didymos::service::error::chain(&e))
}

/// Boots the slot the last install activated and marks it good.
fn boot_good(d: &Device) {
    d.boot();
    d.mark_good();
}

/// What a verified bundle's head and payload are, for counting bytes.
struct Layout {
    head: u64,
    image: u64,
    /// Every carried object's entry, by digest.
    entries: std::collections::BTreeMap<didymos::Digest, didymos::bundle::IndexEntry>,
    /// Where each carried object's stored bytes start.
    offsets: std::collections::BTreeMap<didymos::Digest, u64>,
    referenced: std::collections::BTreeSet<didymos::Digest>,
}

impl Layout {
    /// The stored bytes of every carried object (a pack counted once).
    fn stored(&self) -> u64 {
        didymos::bundle::format::stored_total(self.entries.values())
    }
}

fn layout(d: &Device, bundle: &Path) -> Layout {
    let k = didymos::keyring::Keyring::load(&d.config.keyring).unwrap();
    let v = didymos::bundle::Bundle::open(bundle)
        .unwrap()
        .verify(&k)
        .unwrap();
    let h = v.header();
    Layout {
        // Header, manifest, signature and index, wherever the container
        // version puts them.
        head: 128 + h.manifest.len + h.signature.len + h.index.len,
        image: h.image.len,
        entries: v.index().iter().map(|e| (e.digest, e.clone())).collect(),
        offsets: v.index().iter().map(|e| (e.digest, e.offset)).collect(),
        // A delta bundle's image may be a delta against an installed image.
        referenced: didymos::image::referenced_objects(
            &v.read_image_with(&didymos::store::Store::open(
                &d.config.store.path,
                d.config.store.verity,
            ))
            .unwrap(),
        )
        .unwrap(),
    }
}

/// The stored bytes of the objects of `l` that `d`'s store lacks.
fn missing_bytes(d: &Device, l: &Layout) -> u64 {
    let have = d.objects();
    didymos::bundle::format::stored_total(
        l.referenced
            .iter()
            .filter(|o| !have.contains(o))
            .filter_map(|o| l.entries.get(o)),
    )
}

fn assert_same_store(a: &Device, b: &Device) {
    assert_eq!(a.objects(), b.objects(), "the same objects");
    let images = |d: &Device| {
        didymos::store::Store::open(&d.config.store.path, d.config.store.verity)
            .list_images()
            .unwrap()
    };
    assert_eq!(images(a), images(b), "the same images");
}

#[test]
fn full_and_delta_installs_fetch_only_what_the_device_lacks() {
    let web = Nginx::start(Options::default());
    let d = device("");
    let v1 = d.bundle(1, None);
    let v2 = d.bundle(2, Some(&v1));
    web.publish(&v1, "v1.raucb");
    web.publish(&v2, "v2.raucb");

    // The same install from a local file, on a twin device with the same keys.
    let twin = device("");
    std::fs::copy(&d.pki.keyring, &twin.config.keyring.path).unwrap();

    let l1 = layout(&d, &v1);
    let o = install_url(&d, &web.url("v1.raucb")).unwrap();
    assert_eq!(o.slot.to_string(), "rootfs.0");
    twin.install(&v1).unwrap();
    assert_same_store(&d, &twin);
    d.fsck_clean();
    // A full install fetches its head, image and objects, about once.
    let sent = web.bytes_sent();
    let payload = l1.head + l1.image + l1.stored();
    assert!(
        sent <= payload * 105 / 100 + 64 * 1024,
        "full install: {sent} bytes sent for a {payload}-byte payload"
    );
    boot_good(&d);
    boot_good(&twin);

    // The delta: within 5 % (+64 KiB) of head + image + missing objects.
    let l2 = layout(&d, &v2);
    let need = l2.head + l2.image + missing_bytes(&d, &l2);
    web.clear_log();
    let o = install_url(&d, &web.url("v2.raucb")).unwrap();
    assert_eq!(o.slot.to_string(), "rootfs.1");
    twin.install(&v2).unwrap();
    assert_same_store(&d, &twin);
    let sent = web.bytes_sent();
    assert!(
        sent <= need * 105 / 100 + 64 * 1024,
        "delta install: {sent} bytes sent, the device lacked {need}"
    );
    assert!(
        web.requests().iter().all(|r| r.status == 206),
        "{:?}",
        web.requests()
    );
    boot_good(&d);

    // The same bundle again (into the other slot): the objects are on the
    // device; only the head and the image go over the wire. (In container
    // version 2 the head is at the end of the file: the first 64 KiB
    // read-ahead at the start fetches object bytes besides the header.)
    web.clear_log();
    install_url(&d, &web.url("v2.raucb")).unwrap();
    let sent = web.bytes_sent();
    assert!(
        sent <= l2.head + l2.image + 2 * 64 * 1024,
        "a second install sent {sent} bytes; the head is {} bytes",
        l2.head
    );
    d.fsck_clean();

    // info says the same of the URL as of the file, and what an install
    // would fetch on this device.
    let info = |what: &str| {
        let out = d.cli().args(["info", "--direct", what]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("Bundle:"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    assert_eq!(info(&web.url("v2.raucb")), info(v2.to_str().unwrap()));
    // Both slots hold v2 now: nothing to fetch for it.
    let shown = info(&web.url("v2.raucb"));
    assert!(
        shown.contains("This device:  an install fetches 0 bytes"),
        "{shown}"
    );
}

/// A full bundle laid out `--previous` the release a device runs keeps what
/// changed in packs of its own: over real nginx, the device fetches those
/// and nothing of the packs it holds; laid out without it, the one pack
/// that mixes old and new objects is fetched whole.
#[test]
fn a_full_bundle_laid_out_against_the_installed_release_fetches_what_changed() {
    let web = Nginx::start(Options::default());
    let d = device("");
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    boot_good(&d);
    let laid_out = d.bundle_with(2, None, |o| o.previous = vec![v1.clone()]);
    let plain = d.bundle(2, None);
    web.publish(&laid_out, "v2.raucb");
    let (l, lp) = (layout(&d, &laid_out), layout(&d, &plain));
    assert!(
        l.entries
            .values()
            .all(|e| e.encoding == didymos::bundle::Encoding::Packed),
        "the demo tree's objects are all small"
    );
    let (need, need_plain) = (missing_bytes(&d, &l), missing_bytes(&d, &lp));
    // The changed objects (about 1.6 MB) against the whole tree's one pack.
    assert!(need * 2 < need_plain, "{need} against {need_plain}");
    web.clear_log();
    install_url(&d, &web.url("v2.raucb")).unwrap();
    let sent = web.bytes_sent();
    assert!(
        sent <= (l.head + l.image + need) * 105 / 100 + 64 * 1024,
        "{sent} bytes sent; the device lacked {need} bytes of packs"
    );
    d.fsck_clean();
}

/// A tree with many small objects and two large ones (received into
/// `tmp/partial/` first), about 20 MiB, all incompressible.
fn big_bundle(d: &Device, version: u32) -> PathBuf {
    let root = d.path(&format!("big-{version}"));
    let mut seed = u64::from(version) << 32;
    let mut noise = |n: usize| {
        seed += 1;
        common_bundle::pseudo_random(n, seed)
    };
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join("boot/vmlinuz"), noise(100_000)).unwrap();
    std::fs::write(root.join("boot/initrd.img"), noise(100_000)).unwrap();
    for i in 0..200 {
        std::fs::write(root.join(format!("usr/lib/f{i}")), noise(40_000)).unwrap();
    }
    // Named to come first in the scan, so that container version 2 (objects
    // in the scan's order) puts them first in the bundle, as the install
    // fetches them: the kill lands while one of them is being received.
    std::fs::write(root.join("usr/lib/a-large-1"), noise(5 << 20)).unwrap();
    std::fs::write(root.join("usr/lib/a-large-2"), noise(6 << 20)).unwrap();
    let out = d.path(&format!("big-{version}.raucb"));
    let mut o = didymos::bundle::create::CreateOptions::new(
        &root,
        &out,
        &d.pki.signing_cert,
        &d.pki.signing_key,
        didymos::demo::COMPATIBLE,
        format!("{version}.0"),
    );
    o.intermediates = vec![d.pki.intermediate_cert.clone()];
    didymos::bundle::create::create(&o).unwrap();
    out
}

/// The byte ranges (first, last) nginx was asked for.
fn ranges(web: &Nginx) -> Vec<(u64, u64)> {
    web.requests()
        .iter()
        .filter_map(|r| {
            let (a, b) = r.range.strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// In flight when an install stops: a commit batch of small objects
/// (4 MiB) or the pack its uncommitted members came from (fetched whole
/// again), the pieces fetched ahead (4 requests × 2 pieces of 1 MiB).
const IN_FLIGHT: u64 = didymos::bundle::format::MAX_PACK_FRAME + 8 * 1024 * 1024;

/// `didymos install URL --direct` as a child, killed (SIGKILL) once `web`
/// has sent `after` bytes, then run again to the end. What was fetched
/// twice is bounded by the objects in flight, not the bundle.
#[test]
fn sigkill_mid_download_then_again_fetches_little_twice() {
    let web = Nginx::start(Options::default());
    let d = device("bandwidth-limit = 4000000\n");
    let big = big_bundle(&d, 1);
    let l = layout(&d, &big);
    web.publish(&big, "big.raucb");
    let total: u64 = l.stored();

    let mut child = d
        .cli()
        .args(["install", "--direct", &web.url("big.raucb")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while web.bytes_sent() < total / 2 {
        assert!(Instant::now() < deadline, "the install fetched too little");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the install ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = web.bytes_sent();
    // A large object was being received: its partial file survived. (One
    // the kill found just created, still empty, has nothing to resume.)
    let partial = d.config.store.path.join("tmp/partial");
    let resumed: Vec<didymos::Digest> = std::fs::read_dir(&partial)
        .map(|r| {
            r.filter_map(|e| {
                let e = e.ok()?;
                if e.metadata().ok()?.len() == 0 {
                    return None;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                name.rsplit_once('-')?.1.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default();
    assert!(
        !resumed.is_empty(),
        "no partially received object in {}",
        partial.display()
    );

    web.clear_log();
    let o = install_url(&d, &web.url("big.raucb")).unwrap();
    assert!(o.objects_written > 0);
    d.fsck_clean();
    let second = web.bytes_sent();
    // Fetched twice: at most what was in flight, and the head again.
    let twice = (first + second).saturating_sub(total + l.head + l.image);
    assert!(
        twice <= IN_FLIGHT + l.head + l.image + 64 * 1024,
        "{twice} bytes fetched twice (first run {first}, second {second}, payload {total})"
    );
    assert!(
        second < total,
        "the second run fetched the whole payload again"
    );
    // The partly received large object resumed by range: nothing asked
    // for its first byte again.
    for digest in &resumed {
        let start = l.offsets[digest];
        assert!(
            !ranges(&web).iter().any(|(a, b)| *a <= start && start <= *b),
            "object {digest} was fetched from its start again: {:?}",
            ranges(&web)
        );
    }
    assert_eq!(
        std::fs::read_dir(&partial).map_or(0, |r| r.count()),
        0,
        "partial objects are removed once committed"
    );
}

/// A power cut (failpoint) half-way through writing the objects: the next
/// install completes, fetching again only what was not committed.
#[test]
fn a_power_cut_mid_download_then_again() {
    let web = Nginx::start(Options::default());
    let d = device("");
    let big = big_bundle(&d, 1);
    let l = layout(&d, &big);
    let total: u64 = l.stored();
    web.publish(&big, "big.raucb");
    let out = d
        .cli()
        .args(["install", "--direct", &web.url("big.raucb")])
        .env("DIDYMOS_FAILPOINT", "objects-half-written")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(86),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = web.bytes_sent();
    web.clear_log();
    install_url(&d, &web.url("big.raucb")).unwrap();
    d.fsck_clean();
    let second = web.bytes_sent();
    let twice = (first + second).saturating_sub(total + l.head + l.image);
    assert!(
        twice <= IN_FLIGHT + l.head + l.image + 64 * 1024,
        "{twice} bytes fetched twice (first {first}, second {second}, payload {total})"
    );
    assert!(second < total, "{second} of {total}");
}

/// The server killed and started again in the middle, and the connection
/// broken mid-object: the install retries, resumes and completes in one
/// run, fetching little twice.
#[test]
fn server_restarts_and_broken_connections_are_survived() {
    let mut web = Nginx::start(Options::default());
    let d = device("bandwidth-limit = 6000000\n");
    let big = big_bundle(&d, 1);
    let l = layout(&d, &big);
    let total: u64 = l.stored();
    web.publish(&big, "big.raucb");
    let url = web.url("big.raucb");
    let installing = std::thread::scope(|s| {
        let job = s.spawn(|| install_url(&d, &url));
        let wait_for = |bytes: u64| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while web.bytes_sent() < bytes && !job.is_finished() {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for(total / 4);
        web.kill_workers();
        wait_for(total / 2);
        web.restart();
        job.join().unwrap()
    });
    installing.unwrap();
    d.fsck_clean();
    let sent = web.bytes_sent();
    assert!(
        sent <= total + l.head + l.image + 8 * 1024 * 1024,
        "{sent} bytes sent for a {total}-byte payload"
    );
}

#[test]
fn https_with_a_test_ca_a_client_certificate_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("tls"));
    let web = Nginx::start(Options {
        tls: Some(pki.dir.clone()),
        locations: "location /private/ { if ($http_authorization != \"Bearer s3cret-token\") \
                    { return 401; } }"
            .into(),
        ..Default::default()
    });
    let ca = pki.path("ca.pem");
    let d = device(&format!("tls-ca = \"{}\"\n", ca.display()));
    let v1 = d.bundle(1, None);
    web.publish(&v1, "v1.raucb");
    std::fs::create_dir_all(web.root.join("private")).unwrap();
    web.publish(&v1, "private/v1.raucb");

    // HTTPS, the server's certificate from the configured CA.
    let o = install_url(&d, &web.tls_url("server", "localhost", "v1.raucb")).unwrap();
    assert_eq!(o.slot.to_string(), "rootfs.0");
    boot_good(&d);

    // A server that requires a client certificate: refused without one…
    let err = install_url(&d, &web.tls_url("mtls", "localhost", "v1.raucb")).unwrap_err();
    assert!(err.contains("400") || err.contains("refused"), "{err}");
    // …and installs with one.
    let d2 = device(&format!(
        "tls-ca = \"{}\"\ntls-cert = \"{}\"\ntls-key = \"{}\"\n",
        ca.display(),
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    ));
    std::fs::copy(&d.pki.keyring, &d2.config.keyring.path).unwrap();
    install_url(&d2, &web.tls_url("mtls", "localhost", "v1.raucb")).unwrap();

    // A bearer token checked by nginx: 401 without it, with a message that
    // says where credentials go…
    let err = install_url(&d2, &web.url("private/v1.raucb")).unwrap_err();
    assert!(err.contains("401") && err.contains("header-file"), "{err}");
    // …and with it from the header file, never shown in what is printed.
    let headers = d2.path("headers");
    std::fs::write(&headers, "Authorization: Bearer s3cret-token\n").unwrap();
    let d3 = device(&format!("header-file = \"{}\"\n", headers.display()));
    std::fs::copy(&d.pki.keyring, &d3.config.keyring.path).unwrap();
    let out = d3
        .cli()
        .args(["-vv", "install", "--direct", &web.url("private/v1.raucb")])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("s3cret"), "the token was printed: {all}");
}

/// Each wrong server gets its own message naming the URL and what to do;
/// the device keeps its slots as they were.
#[test]
fn bad_servers_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("tls"));
    let web = Nginx::start(Options {
        tls: Some(pki.dir.clone()),
        locations: "location /forbidden/ { return 403; }\n\
                    location /loop { return 302 /loop; }\n\
                    location /norange/ { max_ranges 0; }"
            .into(),
        ..Default::default()
    });
    let d = device_retrying(
        2,
        &format!("tls-ca = \"{}\"\n", pki.path("ca.pem").display()),
    );
    let v1 = d.bundle(1, None);
    let v2 = d.bundle(2, None);
    d.install(&v1).unwrap();
    boot_good(&d);
    web.publish(&v2, "v2.raucb");
    for sub in ["forbidden", "norange"] {
        std::fs::create_dir_all(web.root.join(sub)).unwrap();
        web.publish(&v2, &format!("{sub}/v2.raucb"));
    }
    let before = d.snapshot();
    let expect = |url: String, wants: &[&str]| {
        let err = install_url(&d, &url).unwrap_err();
        for w in wants {
            assert!(err.contains(w), "{url}: {w:?} not in {err:?}");
        }
        assert_eq!(d.snapshot(), before, "{url}: the device changed");
    };
    expect(
        web.url("nowhere.raucb"),
        &["/nowhere.raucb", "404", "check the URL"],
    );
    expect(web.url("forbidden/v2.raucb"), &["403", "credentials"]);
    expect(
        web.url("norange/v2.raucb"),
        &["ignores range requests", "python3 -m http.server"],
    );
    expect(web.url("loop"), &["redirect"]);
    expect(
        web.tls_url("other-server", "localhost", "v2.raucb"),
        &["not trusted", "tls-ca"],
    );
    expect(
        web.tls_url("expired", "localhost", "v2.raucb"),
        &["expired", "renew"],
    );
    expect(
        web.tls_url("wrong-name", "localhost", "v2.raucb"),
        &["another name"],
    );
    // The test's hostile server, for what no real server can be made to do.
    use hostile::{HostileServer, Misbehaviour};
    for (mode, wants) in [
        (
            Misbehaviour::CutAfter(0),
            &["connection failed", "after 3 attempts", "check the network"][..],
        ),
        (Misbehaviour::TooLong, &["longer than the"][..]),
        (Misbehaviour::WrongRange, &["Content-Range says bytes"][..]),
        (
            Misbehaviour::Stall,
            &["sent nothing for 2 s", "read-timeout"][..],
        ),
    ] {
        let h = HostileServer::start(v2.clone(), mode);
        expect(h.url(), wants);
    }
    // A body cut short on every answer still makes progress: resumed until whole.
    let h = HostileServer::start(v2.clone(), Misbehaviour::CutAfter(100_000));
    install_url(&d, &h.url()).unwrap();
    d.fsck_clean();
}

/// The bundle replaced on the server by another signed bundle during the
/// install: caught (the server's ETag, If-Match), nothing of the new file
/// used, the device as before; started again, the new bundle installs.
#[test]
fn a_bundle_replaced_mid_install_is_caught() {
    let web = Nginx::start(Options::default());
    let d = device("bandwidth-limit = 3000000\n");
    let v1 = d.bundle(1, None);
    d.install(&v1).unwrap();
    boot_good(&d);
    let a = big_bundle(&d, 2);
    // Another signed bundle (of another size: nginx's ETag is the file's
    // size and modification second).
    let b = d.bundle(3, None);
    web.publish(&a, "latest.raucb");
    let url = web.url("latest.raucb");
    let primary = d.primary();
    let result = std::thread::scope(|s| {
        let job = s.spawn(|| install_url(&d, &url));
        let deadline = Instant::now() + Duration::from_secs(60);
        while web.bytes_sent() < 4 << 20 {
            assert!(Instant::now() < deadline && !job.is_finished());
            std::thread::sleep(Duration::from_millis(20));
        }
        web.publish(&b, "latest.raucb");
        job.join().unwrap()
    });
    let err = result.unwrap_err();
    assert!(err.contains("changed on the server"), "{err}");
    assert_eq!(d.primary(), primary, "the old slot stays primary");
    d.fsck_clean();
    let o = install_url(&d, &url).unwrap();
    assert_eq!(o.bundle_version, "3.0");
    d.fsck_clean();
}

/// A network namespace with a veth to the host: the kernel's own network
/// faults between the device (the host) and the server (in the namespace).
/// This host's kernel has no netem (`sch_netem`): loss comes from nftables
/// (`numgen random … drop` on what the server sends), a slow link from a
/// token bucket (`tc qdisc … tbf`), a cut from taking the link down. Delay
/// and loss with netem run in the whole-device tier, in the guest's kernel.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    pub server: String,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new(n: u8) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test makes network namespaces and must run as root (tests/run does)"
        );
        let name = format!("didymos-t{}-{n}", std::process::id());
        let host_if = format!("dh{}{n}", std::process::id() % 10000);
        let ns_if = format!("dn{}{n}", std::process::id() % 10000);
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("10.77.{n}.1/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("10.77.{n}.2/24"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self {
            server: format!("10.77.{n}.2"),
            name,
            host_if,
            ns_if,
        }
    }

    fn exec(&self, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args));
    }

    /// Drops `percent` % of the packets the server sends, at random.
    fn loss(&self, percent: u32) {
        self.exec(&["nft", "add", "table", "inet", "faults"]);
        self.exec(&[
            "nft",
            "add chain inet faults out { type filter hook output priority 0; }",
        ]);
        self.exec(&[
            "nft",
            &format!("add rule inet faults out numgen random mod 100 < {percent} drop"),
        ]);
    }

    /// A link of `rate` (e.g. `20mbit`) from the server.
    fn rate(&self, rate: &str) {
        self.exec(&[
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.ns_if,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "32kbit",
            "latency",
            "400ms",
        ]);
    }

    fn link(&self, up: bool) {
        run(Command::new("ip").args([
            "link",
            "set",
            &self.host_if,
            if up { "up" } else { "down" },
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// 3 % of the server's packets lost, a 30 Mbit/s link, and the link taken
/// down for longer than the read timeout in the middle: the install
/// completes, and the store is consistent.
#[test]
fn a_lossy_slow_link_and_a_cut_link() {
    let ns = Netns::new(1);
    let web = Nginx::start(Options {
        host: Some(ns.server.clone()),
        netns: Some(ns.name.clone()),
        ..Default::default()
    });
    let d = device("");
    let big = big_bundle(&d, 1);
    let l = layout(&d, &big);
    let total: u64 = l.stored();
    web.publish(&big, "big.raucb");
    ns.loss(3);
    ns.rate("30mbit");
    let url = web.url("big.raucb");
    let result = std::thread::scope(|s| {
        let job = s.spawn(|| install_url(&d, &url));
        let deadline = Instant::now() + Duration::from_secs(120);
        while web.bytes_sent() < 6 << 20 {
            assert!(Instant::now() < deadline && !job.is_finished(), "too slow");
            std::thread::sleep(Duration::from_millis(50));
        }
        ns.link(false);
        std::thread::sleep(Duration::from_secs(3));
        ns.link(true);
        job.join().unwrap()
    });
    result.unwrap();
    d.fsck_clean();
    // Lost packets are TCP's business; the cut costs the requests in flight.
    let sent = web.bytes_sent();
    assert!(
        sent <= total + l.head + l.image + IN_FLIGHT,
        "{sent} bytes sent for a {total}-byte payload"
    );
}

/// Through an HTTP proxy (Debian's tinyproxy): the one `[streaming] proxy`
/// names, and the one `http_proxy` names in the environment.
#[test]
fn through_a_proxy() {
    let web = Nginx::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    let port = nginx::free_port();
    let log = dir.path().join("tinyproxy.log");
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nMaxClients 20\nTimeout 60\n\
             LogFile \"{}\"\nLogLevel Connect\nConnectPort {}\n",
            log.display(),
            web.port
        ),
    )
    .unwrap();
    let mut proxy = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tinyproxy (Debian package tinyproxy, tests/deps.sh)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tinyproxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let proxied = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(&format!("127.0.0.1:{}", web.port))
            .count()
    };
    let d = device(&format!("proxy = \"http://127.0.0.1:{port}\"\n"));
    let v1 = d.bundle(1, None);
    web.publish(&v1, "v1.raucb");
    install_url(&d, &web.url("v1.raucb")).unwrap();
    let by_config = proxied();
    assert!(
        by_config > 0,
        "the proxy saw nothing: {:?}",
        std::fs::read_to_string(&log)
    );

    let d2 = device("");
    std::fs::copy(&d.pki.keyring, &d2.config.keyring.path).unwrap();
    let out = d2
        .cli()
        .args(["install", "--direct", &web.url("v1.raucb")])
        .env("http_proxy", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        proxied() > by_config,
        "http_proxy from the environment was not used"
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
}
