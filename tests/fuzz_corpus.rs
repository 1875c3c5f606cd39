//! Tier 0: every committed fuzz corpus file, run through its fuzz target.
//!
//! The targets (`fuzz/targets/mod.rs`) are the bodies of the libFuzzer
//! binaries that `fuzz/run` builds; here they run without instrumentation
//! on the seeds and on every input that once made a target fail (the
//! `crash-*` files), so a fixed bug stays fixed in a plain `cargo test`.

#[path = "../fuzz/targets/mod.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut failed = Vec::new();
    for (name, target) in targets::TARGETS {
        let dir = corpus_dir(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has seeds)", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seeds", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "failing corpus files: {failed:#?}");
}

#[test]
fn every_target_has_a_binary_and_seeds() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    for (name, _) in targets::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no binary {name}"
        );
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&bin).unwrap();
        assert!(
            text.contains(&format!("didymos_fuzz::{name}(")),
            "{}",
            bin.display()
        );
    }
}

/// Writes the `delta` seeds (see `fuzz/targets/mod.rs` for their layout):
/// deltas `delta::encode` makes of a small text changed in a few places, of
/// an object of two segments against a short source and of an executable
/// whose pointers moved (its segment in the bsdiff-style form) (run by
/// `fuzz/seed`, which names the directory in the environment).
#[test]
#[ignore = "makes seeds; run by fuzz/seed"]
fn write_delta_seeds() {
    use didymos::bundle::delta::{self, EncodeOptions};
    let out = PathBuf::from(std::env::var("DIDYMOS_FUZZ_SEEDS").expect("DIDYMOS_FUZZ_SEEDS"));
    std::fs::create_dir_all(&out).unwrap();
    let text: Vec<u8> = (0..400)
        .flat_map(|i| format!("line {i} of a configuration file\n").into_bytes())
        .collect();
    let mut changed = text.clone();
    changed[100..110].copy_from_slice(b"0123456789");
    changed.extend_from_slice(b"one more line\n");
    let pattern: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let long: Vec<u8> = pattern
        .iter()
        .copied()
        .cycle()
        .take((delta::SEGMENT + 300_000) as usize)
        .collect();
    // An "executable": the bsdiff-style form wins where every pointer moved.
    let elf = |shift: u32| -> Vec<u8> {
        let mut b = b"\x7fELF".to_vec();
        for i in 0..2000u32 {
            b.extend((i.wrapping_mul(2654435761) % 5000 + shift).to_le_bytes());
            b.extend(b"mov ");
        }
        b
    };
    let (elf_old, elf_new) = (elf(0), elf(64));
    let options = EncodeOptions {
        level: 3,
        long_distance: false,
        executables: true,
    };
    for (name, source, target) in [
        ("text", &text, &changed),
        ("two-segments", &pattern, &long),
        ("executable", &elf_old, &elf_new),
    ] {
        let mut patch = Vec::new();
        delta::encode(
            &mut &target[..],
            target.len() as u64,
            source,
            options,
            u64::MAX,
            &mut patch,
        )
        .unwrap()
        .unwrap();
        let u24 = |n: usize| (n as u32).to_le_bytes()[..3].to_vec();
        let mut seed = u24(target.len());
        seed.extend(u24(source.len()));
        seed.extend_from_slice(source);
        seed.extend(patch);
        std::fs::write(out.join(name), seed).unwrap();
    }
}

/// Writes the `dbus_wire` seeds: `InstallBundle` arguments, and the
/// `GetSlotStatus` and `InspectBundle` replies for a device and a bundle
/// (run by `fuzz/seed`, which names them in the environment).
#[test]
#[ignore = "makes seeds; run by fuzz/seed"]
fn write_dbus_wire_seeds() {
    use didymos::service::wire::{self, Dict};
    use zbus::zvariant::{LE, serialized::Context, to_bytes};

    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let out = PathBuf::from(var("DIDYMOS_FUZZ_SEEDS"));
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, dict: &Dict| {
        let data = to_bytes(Context::new_dbus(LE, 0), dict).unwrap();
        std::fs::write(out.join(name), data.bytes()).unwrap();
    };

    let install = [
        ("ignore-compatible", wire::owned(true).unwrap()),
        ("transaction-id", wire::owned("update-2025-01").unwrap()),
        (
            "require-manifest-hash",
            wire::owned("ab".repeat(32)).unwrap(),
        ),
    ];
    write(
        "install-options",
        &install
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    );

    let config =
        didymos::config::SystemConfig::load(Path::new(&var("DIDYMOS_FUZZ_DEVICE"))).unwrap();
    let status = didymos::status::collect(&config).unwrap();
    for slot in &status.slots {
        let (name, dict) = wire::slot_status(slot).unwrap();
        write(&format!("slot-status-{name}"), &dict);
    }

    let keyring = didymos::keyring::Keyring::load(&config.keyring).unwrap();
    let path = PathBuf::from(var("DIDYMOS_FUZZ_BUNDLE"));
    let bundle = didymos::bundle::Bundle::open(&path)
        .unwrap()
        .verify(&keyring)
        .unwrap();
    let info = didymos::service::BundleInfo {
        manifest: bundle.manifest().clone(),
        manifest_text: String::from_utf8(bundle.manifest_bytes().to_vec()).unwrap(),
        manifest_hash: bundle.manifest_hash(),
        signer: bundle.signer().clone(),
        size: std::fs::metadata(&path).unwrap().len(),
        for_device: Some(didymos::install::size_for_device(&config, &bundle).unwrap()),
    };
    write("bundle-info", &wire::bundle_info(&info).unwrap());
}
