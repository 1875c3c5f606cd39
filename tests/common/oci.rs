//! Container images made by the real podman, offline: a private store in a
//! temporary directory (overlay driver), images built `FROM scratch` from
//! the sample root filesystem of `bundles/example-rootfs.sh`.
//!
//! `podman build` runs with `--isolation chroot`: RUN steps execute in a
//! chroot, not under an OCI runtime, so no cgroup setup is needed (crun
//! refuses the hybrid cgroup hierarchy of some CI hosts) and no network
//! namespace either. podman runs as root (these tests are tier 2).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The capability every test image gives `/usr/bin/captool` (cap_net_raw+ep,
/// as `setcap` writes it: VFS_CAP_REVISION_2, permitted and effective).
pub const CAP_NET_RAW_EP: &[u8] =
    b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

/// The layers of the test image, each exercising one thing.
pub const CONTAINERFILE_V1: &str = "\
FROM scratch
# 1: the sample root filesystem, from a local tarball
ADD rootfs.tar /
# 2: a deletion (whiteout .wh.sleep)
RUN rm /bin/sleep
# 3: a directory replaced (opaque directory .wh..wh..opq)
RUN rm -rf /usr/share/example && mkdir /usr/share/example && echo replaced > /usr/share/example/new && busybox seq 1 3000 > /usr/share/example/counted
# 4: a hard link across directories
RUN ln /bin/busybox /usr/bin/busybox-link
# 5: a file with a capability and a user extended attribute
ADD extra.tar /
LABEL org.opencontainers.image.version=1.0 org.opencontainers.image.description=\"didymos test image\" org.opencontainers.image.revision=abc123
";

/// The next version: one new layer changing one large file.
pub const CONTAINERFILE_V2: &str = "\
FROM localhost/didymos-test:1
RUN busybox seq 1 4000 > /usr/share/example/counted
LABEL org.opencontainers.image.version=2.0
";

pub struct Podman {
    pub dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "podman tests run as root (tier 2; CI runs as root)"
        );
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    fn runroot(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.runroot())
            .arg("--storage-driver")
            .arg("overlay");
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("podman: {e} (tests/deps.sh installs it)"));
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman build` of `containerfile` in `context`, tagged `didymos-test:<tag>`.
    pub fn build(&self, context: &Path, containerfile: &str, tag: &str) {
        let file = context.join(format!("Containerfile.{tag}"));
        std::fs::write(&file, containerfile).unwrap();
        self.run(&[
            "build",
            "--isolation",
            "chroot",
            "--pull=never",
            "-t",
            &format!("didymos-test:{tag}"),
            "-f",
            file.to_str().unwrap(),
            context.to_str().unwrap(),
        ]);
    }

    /// The containers-storage: reference of a tag in this private store.
    pub fn storage_ref(&self, tag: &str) -> String {
        format!(
            "containers-storage:[overlay@{}+{}]localhost/didymos-test:{tag}",
            self.root().display(),
            self.runroot().display()
        )
    }

    /// `podman save --format <format> -o <out>`.
    pub fn save(&self, tag: &str, format: &str, out: &Path) {
        self.run(&[
            "save",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            &format!("localhost/didymos-test:{tag}"),
        ]);
    }

    /// `podman export` of a container created from the tag (never started).
    pub fn export(&self, tag: &str, out: &Path) {
        let name = format!("export-{tag}");
        self.run(&[
            "create",
            "--name",
            &name,
            &format!("localhost/didymos-test:{tag}"),
            "/bin/sh",
        ]);
        self.run(&["export", "-o", out.to_str().unwrap(), &name]);
        self.run(&["rm", &name]);
    }
}

impl Drop for Podman {
    /// Removes the images, then the bind mount the overlay driver keeps on
    /// its own directory, so the temporary directory can go.
    fn drop(&mut self) {
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.root().join("overlay"))
            .output();
    }
}

/// The build context: `rootfs.tar` (the sample root filesystem, root-owned)
/// and `extra.tar` (`/usr/bin/captool` with a capability and `user.note`).
pub fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("context");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&ctx).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles/example-rootfs.sh");
    sh(Command::new("sh").arg(&script).arg(&rootfs).arg("1.0"));
    assert!(
        rootfs.join("bin/busybox").exists(),
        "the sample rootfs needs busybox-static for the RUN steps (tests/deps.sh installs it)"
    );
    tar_dir(&rootfs, &ctx.join("rootfs.tar"), &["."]);

    let extra = dir.join("extra");
    std::fs::create_dir_all(extra.join("usr/bin")).unwrap();
    let tool = extra.join("usr/bin/captool");
    std::fs::write(&tool, "#!/bin/sh\necho captool\n".repeat(8)).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    xattr::set(&tool, "security.capability", CAP_NET_RAW_EP).unwrap();
    xattr::set(&tool, "user.note", b"hello").unwrap();
    tar_dir(&extra, &ctx.join("extra.tar"), &["usr/bin/captool"]);
    ctx
}

fn tar_dir(dir: &Path, out: &Path, members: &[&str]) {
    sh(Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--xattrs",
            "--xattrs-include=*",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .args(members));
}

pub fn sh(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
