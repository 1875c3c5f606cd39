//! A device in a temporary directory: the demo configuration (file-backed
//! bootloader, kernel command line in a file), development keys, and bundles
//! of the sample root filesystem.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use didymos::boot::file::FileBootloader;
use didymos::boot::mark::MarkState;
use didymos::bundle::create::{self, CreateOptions};
use didymos::config::SystemConfig;
use didymos::install::{
    self, BundleSource, CancelToken, InstallError, InstallOptions, InstallOutcome,
};
use didymos::slot::Bootname;

pub struct Device {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub config: SystemConfig,
    pub pki: didymos::bundle::devpki::DevPki,
}

impl Device {
    /// A fresh device; `edit` may change the configuration text first.
    pub fn with_config(edit: impl FnOnce(String) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = didymos::bundle::devpki::generate(&dir.path().join("pki")).unwrap();
        let conf = dir.path().join("system.conf");
        std::fs::write(&conf, edit(didymos::demo::device_config())).unwrap();
        std::fs::write(dir.path().join("cmdline"), "").unwrap();
        let config = SystemConfig::load(&conf).unwrap();
        Device {
            dir,
            conf,
            config,
            pki,
        }
    }

    pub fn new() -> Self {
        Self::with_config(|c| c)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Builds a bundle of sample rootfs `version`, optionally as a delta.
    pub fn bundle(&self, version: u32, base: Option<&Path>) -> PathBuf {
        self.bundle_with(version, base, |_| {})
    }

    pub fn bundle_with(
        &self,
        version: u32,
        base: Option<&Path>,
        edit: impl FnOnce(&mut CreateOptions),
    ) -> PathBuf {
        let rootfs = self.path(&format!("rootfs-v{version}"));
        if !rootfs.exists() {
            didymos::demo::write_sample_rootfs(&rootfs, version).unwrap();
        }
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let output = self.path(&format!("v{version}-{n}.raucb"));
        let mut opts = CreateOptions::new(
            &rootfs,
            &output,
            &self.pki.signing_cert,
            &self.pki.signing_key,
            didymos::demo::COMPATIBLE,
            format!("{version}.0"),
        );
        opts.intermediates = vec![self.pki.intermediate_cert.clone()];
        opts.bases = base.into_iter().map(Path::to_owned).collect();
        edit(&mut opts);
        create::create(&opts).unwrap();
        output
    }

    pub fn install(&self, bundle: &Path) -> Result<InstallOutcome, InstallError> {
        install::install(
            &self.config,
            BundleSource::Path(bundle.to_owned()),
            &InstallOptions::default(),
            &|_| {},
            &CancelToken::default(),
        )
    }

    pub fn bootloader(&self) -> FileBootloader {
        FileBootloader::new(
            self.path("bootloader.toml"),
            self.config.bootnames(),
            self.config.system.boot_attempts,
        )
    }

    /// Power-on: the bootloader picks a slot, the kernel command line says so.
    pub fn boot(&self) -> Option<Bootname> {
        let chosen = self.bootloader().simulate_boot().unwrap();
        let line = chosen
            .as_ref()
            .map(|b| format!("didymos.slot={b}\n"))
            .unwrap_or_default();
        std::fs::write(self.path("cmdline"), line).unwrap();
        chosen
    }

    pub fn booted(&self) -> Option<Bootname> {
        didymos::slot::booted::detect(&self.config)
            .bootname()
            .cloned()
    }

    /// `didymos status mark-good booted`, through the install engine's
    /// marking (install lock, slot checks, the security floor).
    pub fn mark_good(&self) {
        self.mark(MarkState::Good, "booted").unwrap();
    }

    pub fn mark(&self, state: MarkState, slot: &str) -> Result<String, InstallError> {
        install::mark(&self.config, state, slot).map(|o| o.message)
    }

    pub fn primary(&self) -> Option<Bootname> {
        use didymos::boot::Bootloader;
        self.bootloader().get_primary().unwrap()
    }

    pub fn cli(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_didymos"));
        c.arg("--conf").arg(&self.conf);
        c
    }

    /// `didymos install BUNDLE` cut at the failpoint `step` (the binary exits
    /// with 86 there, as a power cut would stop it).
    pub fn install_cut_at(&self, bundle: &Path, step: &str) {
        let out = self
            .cli()
            .arg("install")
            .arg(bundle)
            .env("DIDYMOS_FAILPOINT", step)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(86),
            "failpoint {step} was not reached: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The composefs image of `bundle`, checked against this device's
    /// keyring; `bases` are the bundles its image may be a delta against,
    /// in the order they were built (each may be a delta of the ones
    /// before it).
    pub fn image(&self, bundle: &Path, bases: &[&Path]) -> Vec<u8> {
        let keyring = didymos::keyring::Keyring::load(&self.config.keyring).unwrap();
        let mut images: Vec<(didymos::Digest, Vec<u8>)> = Vec::new();
        for b in bases.iter().copied().chain([bundle]) {
            let v = didymos::bundle::Bundle::open(b)
                .unwrap()
                .verify(&keyring)
                .unwrap();
            let image = v.read_image_with(&images).unwrap();
            images.push((v.manifest().image.digest, image));
        }
        images.pop().unwrap().1
    }

    pub fn objects(&self) -> std::collections::BTreeSet<didymos::Digest> {
        didymos::store::Store::open(&self.config.store.path, self.config.store.verity)
            .list_objects()
            .unwrap()
    }

    pub fn fsck_clean(&self) {
        let report = install::fsck(&self.config).unwrap();
        assert!(report.is_clean(), "fsck: {:?}", report.problems);
    }

    /// Every file under the store and the bootloader state: path → content hash.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.config.store.path.clone(), self.path("bootloader.toml")];
        while let Some(p) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                out.insert(p.clone(), "dir".into());
                for e in std::fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            } else {
                let data = std::fs::read(&p).unwrap();
                out.insert(p, didymos::image::digest_bytes(&data).to_hex());
            }
        }
        out
    }
}
