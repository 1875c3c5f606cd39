//! The fuzz targets: one function per parser of untrusted input, each
//! taking arbitrary bytes and feeding them to the parser the way didymos
//! does. They are shared by the libFuzzer binaries (`fuzz/fuzz_targets/`)
//! and by `tests/fuzz_corpus.rs`, which replays every committed corpus file
//! through them in `cargo test`.
//!
//! A target panics only on a bug: a panic inside the code under test, or a
//! property that must hold for every input it accepts (what a parser
//! accepts is rendered back and parsed to the same value; streaming and
//! one-shot parsing agree). Where a format carries a checksum (the bundle
//! header, a U-Boot environment copy, tar headers), the input is also tried
//! with its checksums made right, so the fuzzer gets past them.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use didymos::Digest;
use didymos::boot::{grubenv, ubootenv};
use didymos::bundle::format::{self, Header, IndexParser, LayoutError, Span};
use didymos::bundle::{Bundle, Encoding, IndexEntry, Manifest};
use didymos::config::SystemConfig;
use didymos::keyring::{Keyring, KeyringOptions};
use didymos::slot::{Bootname, RawRecord, SlotRecord};

/// A target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("bundle_header", bundle_header),
    ("bundle_index", bundle_index),
    ("manifest", manifest),
    ("cms", cms),
    ("bundle", bundle),
    ("delta", delta),
    ("image", image),
    ("tar", tar),
    ("grubenv", grubenv),
    ("ubootenv", ubootenv),
    ("cmdline", cmdline),
    ("system_conf", system_conf),
    ("slot_record", slot_record),
    ("dbus_wire", dbus_wire),
    ("channel", channel),
    ("ddi", ddi),
];

/// The trusted CA of the fixed keyring the signature targets check against
/// (a development CA; `fuzz/seed` made it with the seed bundles).
const KEYRING_PEM: &[u8] = include_bytes!("../pki/keyring.pem");
/// The document the seed signatures in `fuzz/corpus/cms/` sign.
const SIGNED_MANIFEST: &[u8] = include_bytes!("../pki/manifest.toml");

/// The fixed keyrings: the same CA with the time rules a device without a
/// real-time clock uses, and with the bundle's signing time, a required
/// signer name and a partial chain allowed.
fn keyrings() -> &'static [Keyring; 2] {
    static KEYRINGS: OnceLock<[Keyring; 2]> = OnceLock::new();
    KEYRINGS.get_or_init(|| {
        let origin = Path::new("fuzz/pki/keyring.pem");
        let load = |options| Keyring::from_pem(KEYRING_PEM, options, origin).unwrap();
        [
            load(KeyringOptions {
                no_check_time: true,
                ..Default::default()
            }),
            load(KeyringOptions {
                use_bundle_signing_time: true,
                allow_partial_chain: true,
                allowed_signer_cns: vec!["didymos development signer".into()],
                ..Default::default()
            }),
        ]
    })
}

fn u64_le(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// `bundle::format::Header::parse`. Input: the header bytes, then
/// optionally the file size (8 bytes, little endian; else the input's
/// length is the file size).
pub fn bundle_header(data: &[u8]) {
    let n = format::HEADER_SIZE;
    let (head, file_size) = if data.len() >= n + 8 {
        (&data[..n], u64_le(&data[n..]))
    } else {
        (data, data.len() as u64)
    };
    match Header::parse(head, file_size) {
        Ok(h) => check_header(head, file_size, h),
        Err(LayoutError::HeaderChecksum { actual, .. }) => {
            // The same header with the checksum the parser computed.
            let mut fixed = head[..n].to_vec();
            let sum = hex::decode(actual).unwrap();
            fixed[n - sum.len()..].copy_from_slice(&sum);
            if let Ok(h) = Header::parse(&fixed, file_size) {
                check_header(&fixed, file_size, h);
            }
        }
        Err(_) => {}
    }
}

/// An accepted header describes the whole file, regions in order, and
/// every one of its bytes is what `to_bytes` writes.
fn check_header(head: &[u8], file_size: u64, h: Header) {
    assert_eq!(h.file_size(), file_size);
    assert_eq!(&h.to_bytes()[..], &head[..format::HEADER_SIZE]);
    let seq = Header::laid_out(
        h.version,
        h.manifest.len,
        h.signature.len,
        h.index.len,
        h.image.len,
        h.objects.len,
    );
    assert_eq!(seq, h);
}

/// `bundle::format::parse_index` and `IndexParser`. Input: the objects
/// region (offset and length, 8 bytes each, little endian), the container
/// version (one byte: 1, 3 and 4 are those versions, anything else version
/// 2), then the index region.
pub fn bundle_index(data: &[u8]) {
    if data.len() < 17 {
        return;
    }
    let objects = Span {
        offset: u64_le(data),
        len: u64_le(&data[8..]),
    };
    // A parsed header bounds the objects region by the file size.
    if objects.offset.checked_add(objects.len).is_none() {
        return;
    }
    let version = match data[16] {
        1 => format::FORMAT_VERSION_1,
        3 => format::FORMAT_VERSION_3,
        4 => format::FORMAT_VERSION_4,
        _ => format::FORMAT_VERSION_2,
    };
    let index = &data[17..];
    let whole = format::parse_index(version, index, objects);
    if let Ok(parsed) = &whole {
        check_index(version, &parsed.entries, objects);
        assert_eq!(
            format::index_to_bytes(version, &parsed.entries, &parsed.dictionary, objects.offset),
            index
        );
    }
    // Streamed as Bundle::verify reads it, once the signed count fixed the
    // region's length: the same result as the one-shot parser.
    let hs = format::index_header_size(version);
    let Some(head) = index.get(..hs) else {
        return;
    };
    let streamed = IndexParser::new(version, head, objects).and_then(|mut p| {
        if p.region_len() != index.len() as u64 {
            return Ok(None);
        }
        let entries_end = hs + p.count() as usize * format::INDEX_ENTRY_SIZE;
        for raw in index[hs..entries_end].chunks_exact(format::INDEX_ENTRY_SIZE) {
            p.push(raw.try_into().unwrap())?;
        }
        let sources_end = entries_end + p.source_count() as usize * format::SOURCE_ENTRY_SIZE;
        p.finish(
            &index[entries_end..sources_end],
            index[sources_end..].to_vec(),
        )
        .map(Some)
    });
    match streamed {
        Ok(Some(parsed)) => assert_eq!(whole, Ok(parsed)),
        Ok(None) => assert!(whole.is_err()),
        Err(e) => assert_eq!(whole, Err(e)),
    }
}

/// Entries are sorted by digest without duplicates and tile the objects
/// region (in version 1 in digest order, in version 2 and later in any
/// order; the members of a pack share its span once and do not overlap in
/// it, within the limit of a pack); only delta entries name a source, never
/// themselves.
fn check_index(version: u32, entries: &[IndexEntry], objects: Span) {
    let mut spans = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            assert!(entries[i - 1].digest < e.digest);
        }
        if e.encoding == Encoding::Raw {
            assert_eq!(e.stored_size, e.size);
        }
        assert_eq!(e.source.is_some(), e.encoding == Encoding::Delta);
        assert_ne!(e.source, Some(e.digest));
        if e.encoding == Encoding::Packed {
            assert!(version >= format::FORMAT_VERSION_4);
            assert!(e.size > 0 && e.packed_at + e.size <= format::MAX_PACK_SIZE);
            assert!(e.stored_size <= format::MAX_PACK_FRAME);
        } else {
            assert_eq!(e.packed_at, 0);
        }
        spans.push((e.offset, e.packed_at, e.stored_size, e.size, e.encoding));
    }
    if version != format::FORMAT_VERSION_1 {
        spans.sort_unstable_by_key(|s| (s.0, s.1));
    }
    let mut at = objects.offset;
    let mut pack: Option<(u64, u64)> = None; // offset, end of the last member
    for (offset, packed_at, len, size, encoding) in spans {
        if let Some((p, end)) = pack
            && p == offset
        {
            assert_eq!(encoding, Encoding::Packed);
            assert!(packed_at >= end);
            pack = Some((p, packed_at + size));
            continue;
        }
        assert_eq!(offset, at);
        at += len;
        pack = (encoding == Encoding::Packed).then_some((offset, packed_at + size));
    }
    assert_eq!(at, objects.end());
}

/// `bundle::Manifest::parse`: an accepted manifest is one its canonical
/// text (what a build host signs) parses back to.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::parse(data) {
        assert!(m.needed_format() <= m.format);
        let text = m.to_toml();
        assert_eq!(Manifest::parse(text.as_bytes()).as_ref(), Ok(&m), "{text}");
    }
}

/// CMS signature handling: the signer's signed attributes read by the DER
/// walk, the signing time, and the whole check against the fixed keyrings,
/// over the fixed document, as `Bundle::verify` and setup-root (through
/// `verify_manifest_signature`) do it. Input: the DER signature.
pub fn cms(data: &[u8]) {
    use didymos::cms::der;
    let _ = der::signed_attributes(data);
    let time = didymos::cms::signing_time(data);
    let [device, dated] = keyrings();
    let _ = didymos::cms::verify(SIGNED_MANIFEST, data, device);
    if let Ok((manifest, signer)) =
        didymos::bundle::verify_manifest_signature(SIGNED_MANIFEST, data, dated)
    {
        // Only a signature that carries a signing time passes this keyring.
        assert!(time.is_some());
        assert!(!signer.chain.is_empty());
        assert_eq!(Manifest::parse(SIGNED_MANIFEST).unwrap(), manifest);
    }
}

/// The image of the seed corpus's full bundle (`fuzz/seed`): the base image
/// the seed delta bundle's image is a delta against, as a device's store
/// holds it.
const BASE_IMAGE: &[u8] = include_bytes!("../pki/base-image.cfs");

fn base_images() -> &'static Vec<(Digest, Vec<u8>)> {
    static IMAGES: OnceLock<Vec<(Digest, Vec<u8>)>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        vec![(
            didymos::image::digest_bytes(BASE_IMAGE),
            BASE_IMAGE.to_vec(),
        )]
    })
}

/// Opening and verifying a whole bundle from memory, as `install` does:
/// header, manifest and signature, the signature against the fixed
/// keyring, the index against the signed manifest, then the image (a delta
/// image decoded against the fixed base image) and every object streamed
/// out and checked against its digest (the objects region is outside the
/// signature: a changed byte there must be an error, never a panic).
/// Input: a bundle file.
pub fn bundle(data: &[u8]) {
    let Ok(b) = Bundle::from_source(Arc::new(data.to_vec())) else {
        return;
    };
    let _ = b.manifest_unverified();
    let _ = b.read_image_unverified();
    let _ = b.read_image_unverified_with(base_images());
    let Ok(v) = b.verify(&keyrings()[0]) else {
        return;
    };
    let _ = v.image_base();
    if let Ok(image) = v.read_image_with(base_images()) {
        let _ = didymos::image::referenced_objects(&image);
    }
    for entry in v.index() {
        let _ = v.copy_object(entry, &mut std::io::sink());
    }
}

/// `bundle::delta::decode`, as install decodes an object stored as a
/// delta against a source object from the store. Input: the object's size
/// (3 bytes, little endian: up to 16 MiB, four segments), the source's
/// length (3 bytes, at most what follows), the source, then the delta. A
/// decode that succeeds hands over exactly the object's size, in segments.
pub fn delta(data: &[u8]) {
    use didymos::bundle::delta;
    let u24 = |b: &[u8]| u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16;
    if data.len() < 6 {
        return;
    }
    let size = u24(data);
    let rest = &data[6..];
    let source_len = (u24(&data[3..]) as usize).min(rest.len());
    let source = rest[..source_len].to_vec();
    let stored = &rest[source_len..];
    let mut emitted = 0u64;
    let decoded = delta::decode(
        &Digest([1; 32]),
        &Digest([2; 32]),
        &mut &stored[..],
        stored.len() as u64,
        size,
        &source,
        &mut |segment| {
            assert!(segment.len() as u64 <= delta::SEGMENT);
            emitted += segment.len() as u64;
            Ok(())
        },
    );
    if decoded.is_ok() {
        assert_eq!(emitted, size);
    }
}

/// Paths looked up in an image: boot files as `boot-files` names them
/// (a file, a directory, through a symlink), and ones that are missing.
const IMAGE_PATHS: &[&str] = &[
    "boot/vmlinuz",
    "boot",
    "/boot/initrd.img",
    "etc/os-release",
    "bin/sh",
    "usr/share/example",
    "lib/modules",
    "missing/file",
    "..",
];

/// Reading a composefs image: the objects it references (install, gc and
/// fsck), the lookups boot files go through (install), and the readable
/// dump. Input: an EROFS image.
pub fn image(data: &[u8]) {
    let _ = didymos::image::referenced_objects(data);
    if let Ok(tree) = didymos::image::ImageTree::parse(data) {
        for path in IMAGE_PATHS {
            let _ = tree.files_at(Path::new(path));
        }
    }
    let _ = didymos::image::dump(data);
}

/// Scanning a tar archive into a tree and writing its composefs image, as
/// `bundle create` does (the image is then read back). Input: an
/// uncompressed tar archive.
pub fn tar(data: &[u8]) {
    // Compressed input is left to the decompressors' own fuzzing: a small
    // input would decompress to unbounded output.
    if didymos::image::TarCompression::detect(data) != didymos::image::TarCompression::None {
        return;
    }
    // So is an archive whose members expand to more than a fuzzer should
    // write to disk (large members are spooled to temporary files, and a
    // sparse member of a few bytes can claim terabytes).
    if !expands_within(data, 64 << 20) {
        return;
    }
    scan_tar(data);
    let fixed = fix_tar_checksums(data);
    if fixed != data {
        scan_tar(&fixed);
    }
}

fn scan_tar(data: &[u8]) {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join("input.tar");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(data))
        .unwrap();
    let Ok(tree) = didymos::image::scan_tar(&path, &mut |_, _, _, _| Ok(())) else {
        return;
    };
    let digests: Vec<Digest> = (0..tree.job_count())
        .map(|job| {
            let mut d = [0xa5; 32];
            d[..8].copy_from_slice(&(job as u64).to_le_bytes());
            Digest(d)
        })
        .collect();
    if let Ok(image) = tree.into_image(&digests) {
        let referenced = didymos::image::referenced_objects(&image).unwrap();
        let all: BTreeSet<Digest> = digests.into_iter().collect();
        assert!(referenced.is_subset(&all));
        didymos::image::ImageTree::parse(&image).unwrap();
    }
}

/// Whether the members of a tar archive add up to at most `max` bytes.
fn expands_within(data: &[u8], max: u64) -> bool {
    let mut archive = ::tar::Archive::new(data);
    let Ok(entries) = archive.entries() else {
        return true;
    };
    let mut total = 0u64;
    for entry in entries {
        let Ok(entry) = entry else {
            break;
        };
        total = total.saturating_add(entry.size());
        if total > max {
            return false;
        }
    }
    true
}

/// The archive with every header's checksum made right, walking headers as
/// a tar reader does (a header, then its data rounded up to 512 bytes).
fn fix_tar_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0usize;
    while at + 512 <= out.len() {
        let block = &mut out[at..at + 512];
        if block.iter().all(|&b| b == 0) {
            at += 512;
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = std::str::from_utf8(&block[124..136])
            .ok()
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
            .and_then(|s| u64::from_str_radix(s, 8).ok())
            .unwrap_or(0);
        let Some(next) = size
            .div_ceil(512)
            .checked_mul(512)
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| n.checked_add(at + 512))
        else {
            break;
        };
        at = next;
    }
    out
}

/// `boot::grubenv`: an accepted block renders to a block that parses back
/// to the same variables and size.
pub fn grubenv(data: &[u8]) {
    let Ok(env) = grubenv::Grubenv::parse(data) else {
        return;
    };
    let _ = env.to_string();
    if let Ok(bytes) = env.render() {
        assert_eq!(grubenv::Grubenv::parse(&bytes).as_ref(), Ok(&env));
    }
}

/// `boot::ubootenv`: the input as one environment copy (plain and
/// redundant, as stored and with its CRC made right) and, when it is text,
/// as `fw_env.config`. Decoded variables encode to a copy that decodes to
/// the same variables.
pub fn ubootenv(data: &[u8]) {
    let mut copies = Vec::new();
    for redundant in [false, true] {
        let copy = ubootenv::decode(data, data.len(), redundant);
        if let Err(ubootenv::UbootEnvError::Crc { computed, .. }) = copy {
            let mut fixed = data.to_vec();
            fixed[..4].copy_from_slice(&computed.to_le_bytes());
            copies.push(ubootenv::decode(&fixed, fixed.len(), redundant));
        }
        copies.push(copy);
    }
    for copy in copies.iter().flatten() {
        if let Ok(bytes) = ubootenv::encode(&copy.vars, data.len(), copy.flag) {
            let again = ubootenv::decode(&bytes, bytes.len(), copy.flag.is_some()).unwrap();
            assert_eq!(&again, copy);
        }
        let bootnames = [Bootname::new("A").unwrap(), Bootname::new("B").unwrap()];
        let _ = didymos::boot::uboot::counters_from_vars(&copy.vars, &bootnames, 3);
    }
    if let [a, b, ..] = &copies[..] {
        let _ = ubootenv::active_copy([a, b]);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = ubootenv::FwEnvConfig::parse(text)
    {
        assert!(config.size() >= 16);
    }
}

/// The kernel command line: `cmdline::parse` and setup-root's
/// `BootArgs::parse`, which takes the last `didymos.slot=`.
pub fn cmdline(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let words = didymos::cmdline::parse(&text);
    let Ok(args) = didymos::setup_root::cmdline::BootArgs::parse(&text) else {
        return;
    };
    if let Some(slot) = didymos::cmdline::get(&words, "didymos.slot") {
        assert_eq!(args.slot, Some(Bootname::new(slot).unwrap()));
    }
    let _ = (args.require_slot(), args.require_store());
}

/// `config::SystemConfig::parse`, and what is looked up in a parsed one.
pub fn system_conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = SystemConfig::parse(text, Path::new("/etc/didymos/system.conf")) else {
        return;
    };
    for b in config.bootnames() {
        let slot = config.slot_by_bootname(&b).unwrap();
        assert!(config.slot(&slot.name).is_some());
    }
    let _ = KeyringOptions::from_section(&config.keyring);
}

/// Slot records (`record.toml`, and `raw.toml` of raw slots): an accepted
/// record is written back (as install writes it) to text that parses to
/// the same record.
pub fn slot_record(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("slots/rootfs.0/record.toml");
    if let Ok(r) = SlotRecord::parse(text, path) {
        let back = toml::to_string(&r).unwrap();
        assert_eq!(SlotRecord::parse(&back, path).unwrap(), r, "{back}");
    }
    if let Ok(r) = RawRecord::parse(text, path) {
        let back = toml::to_string(&r).unwrap();
        assert_eq!(RawRecord::parse(&back, path).unwrap(), r, "{back}");
    }
}

/// D-Bus argument dictionaries: the input as the marshalled body of an
/// `a{sv}` (little endian), decoded as the bus connection decodes it, then
/// given to every function of `service::wire` that takes one. A slot
/// status decoded from a dictionary encodes to one that decodes to it.
pub fn dbus_wire(data: &[u8]) {
    use didymos::service::wire;
    use zbus::zvariant::{LE, serialized};
    let body = serialized::Data::new(data, serialized::Context::new_dbus(LE, 0));
    let Ok((dict, _)) = body.deserialize::<wire::Dict>() else {
        return;
    };
    let _ = wire::install_options(&dict);
    let _ = wire::no_options("InspectBundle", &dict);
    let _ = wire::bundle_info_from_wire(&dict);
    for name in ["rootfs.0", "bootloader.1"] {
        if let Ok(status) = wire::slot_status_from_wire(name, &dict) {
            let (wire_name, again) = wire::slot_status(&status).unwrap();
            let back = wire::slot_status_from_wire(&wire_name, &again).unwrap();
            assert_eq!(format!("{back:?}"), format!("{status:?}"));
        }
    }
}

/// A channel file as the update agent reads one from a server: the
/// signature block split off and checked against the fixed keyring, the
/// document parsed, and the planner asked for the next hop from every
/// release, at the channel's issue time and past every rollout's end.
/// Input: a channel file (signed or not). An accepted document written back
/// as TOML parses to itself; the planner never panics or loops.
pub fn channel(data: &[u8]) {
    use didymos::agent::channel::{Channel, signed};
    use didymos::agent::plan::graph::{DeviceView, next_hop};
    let _ = signed::VerifiedChannel::verify(data, &keyrings()[0], "fuzz");
    let content = match signed::split(data, "fuzz") {
        Ok((content, _)) => content,
        Err(_) => signed::unsigned_part(data),
    };
    let Ok(channel) = Channel::parse(content) else {
        return;
    };
    let text = channel.to_toml();
    assert_eq!(
        Channel::parse(text.as_bytes()).as_ref(),
        Ok(&channel),
        "{text}"
    );
    let failed: Vec<String> = channel
        .releases
        .iter()
        .take(1)
        .map(|r| r.manifest_hash.clone())
        .collect();
    let late = channel.channel.expires;
    for release in channel.releases.iter().take(16) {
        for (wariness, allow_downgrade, now) in [
            (0.0, false, channel.channel.issued),
            (0.5, true, late),
            (1.0, false, late),
        ] {
            let device = DeviceView {
                compatible: &release.compatible,
                booted_version: Some(&release.version),
                wariness,
                allow_downgrade,
                failed: &failed,
            };
            let _ = next_hop(&channel, &device, now);
        }
    }
}

/// A hawkBit DDI server's answers as the agent reads them (the server is
/// not signed: only TLS stands between it and the device). Input: a JSON
/// body, tried as the controller resource and as a `deploymentBase`, and
/// as a polling interval (`HH:MM:SS`, which must format back to itself).
pub fn ddi(data: &[u8]) {
    use didymos::agent::ddi;
    if let Ok(poll) = ddi::parse_poll(data, "fuzz") {
        // The action id is the link's last path segment.
        for (id, href) in poll.deployment.iter().chain(&poll.cancel) {
            assert!(!id.contains(['/', '?', '#']), "{id} from {href}");
        }
    }
    let _ = ddi::parse_deployment(data, "fuzz");
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(d) = ddi::parse_sleep(text)
    {
        let secs = d.as_secs();
        let back = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        assert_eq!(ddi::parse_sleep(&back), Some(d));
    }
}
