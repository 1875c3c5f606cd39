//! Shared helpers for the D-Bus tests: a private `dbus-daemon` started by the
//! test (session-like, or system-like with a policy file), a temporary device
//! with a file-backed bootloader, the service running on that bus, and the
//! generic clients (`busctl`, `gdbus`) pointed at it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const NAME: &str = "org.didymos.Installer1";
pub const IFACE: &str = "org.didymos.Installer1";
pub const RAUC_NAME: &str = "de.pengutronix.rauc";
pub const RAUC_IFACE: &str = "de.pengutronix.rauc.Installer";

/// Which kind of bus the private daemon imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anyone connected may call anything (what tests of the API use).
    Session,
    /// The system bus's default-deny rules plus the given policy file.
    System,
}

/// A private `dbus-daemon`, stopped on drop.
pub struct Bus {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Child,
}

impl Bus {
    /// A session-like bus.
    pub fn session() -> Self {
        Self::start(Kind::Session, "")
    }

    /// A system-like bus that loads `policy` (e.g. the shipped
    /// `dbus/org.didymos.Installer1.conf`), or allows everything when `None`.
    pub fn system(policy: Option<&Path>) -> Self {
        let extra = match policy {
            Some(p) => format!("<include>{}</include>", p.display()),
            None => "<policy context=\"default\"><allow send_destination=\"*\"/>\
                     <allow own=\"*\"/></policy>"
                .to_owned(),
        };
        Self::start(Kind::System, &extra)
    }

    fn start(kind: Kind, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Other users (the unprivileged client) must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus");
        let body = match kind {
            Kind::Session => "<type>session</type>\
                <policy context=\"default\">\
                  <allow send_destination=\"*\" eavesdrop=\"true\"/>\
                  <allow eavesdrop=\"true\"/>\
                  <allow own=\"*\"/>\
                </policy>"
                .to_owned(),
            // The rules of Debian's /usr/share/dbus-1/system.conf that matter here.
            Kind::System => "<type>system</type>\
                <policy context=\"default\">\
                  <allow user=\"*\"/>\
                  <deny own=\"*\"/>\
                  <deny send_type=\"method_call\"/>\
                  <allow send_type=\"signal\"/>\
                  <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\
                  <allow send_requested_reply=\"true\" send_type=\"error\"/>\
                  <allow receive_type=\"method_call\"/>\
                  <allow receive_type=\"method_return\"/>\
                  <allow receive_type=\"error\"/>\
                  <allow receive_type=\"signal\"/>\
                  <allow send_destination=\"org.freedesktop.DBus\" \
                         send_interface=\"org.freedesktop.DBus\"/>\
                  <allow send_destination=\"org.freedesktop.DBus\" \
                         send_interface=\"org.freedesktop.DBus.Introspectable\"/>\
                  <allow send_destination=\"org.freedesktop.DBus\" \
                         send_interface=\"org.freedesktop.DBus.Properties\"/>\
                  <deny send_destination=\"org.freedesktop.DBus\" \
                        send_interface=\"org.freedesktop.DBus\" \
                        send_member=\"UpdateActivationEnvironment\"/>\
                  <deny send_destination=\"org.freedesktop.DBus\" \
                        send_interface=\"org.freedesktop.DBus.Debug.Stats\"/>\
                </policy>"
                .to_owned(),
        };
        let config = format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig><listen>unix:path={}</listen><auth>EXTERNAL</auth>{body}{extra}\
             </busconfig>\n",
            socket.display()
        );
        let config_path = dir.path().join("bus.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("bus.log")).unwrap())
            .spawn()
            .expect("cannot start dbus-daemon (tests/deps.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Self {
            kind,
            dir,
            address,
            child,
        }
    }

    /// Environment that points clients (and the service) at this bus.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Session => vec![
                ("DBUS_SESSION_BUS_ADDRESS", self.address.clone()),
                ("DBUS_STARTER_BUS_TYPE", "session".into()),
            ],
            Kind::System => vec![("DBUS_SYSTEM_BUS_ADDRESS", self.address.clone())],
        }
    }

    fn bus_flag(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::Session => ("--user", "--session"),
            Kind::System => ("--system", "--system"),
        }
    }

    /// `busctl --user <args>` (or `--system`) on this bus.
    pub fn busctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("busctl");
        cmd.arg(self.bus_flag().0).args(args).envs(self.env());
        cmd.output().expect("cannot run busctl")
    }

    /// `gdbus <args...>` with `--session` (or `--system`) after the subcommand.
    pub fn gdbus(&self, subcommand: &str, args: &[&str]) -> Output {
        self.gdbus_cmd(subcommand, args)
            .output()
            .expect("cannot run gdbus")
    }

    pub fn gdbus_cmd(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("gdbus");
        cmd.arg(subcommand)
            .arg(self.bus_flag().1)
            .args(args)
            .envs(self.env());
        cmd
    }

    /// `gdbus call` on the service's object.
    pub fn gdbus_call(&self, name: &str, method: &str, args: &[&str]) -> Output {
        let mut all = vec!["--dest", name, "--object-path", "/", "--method", method];
        all.extend_from_slice(args);
        self.gdbus("call", &all)
    }

    /// Runs `program args` against this bus with `file` open for reading as
    /// the client's descriptor 3, so that an `h` argument `3` passes it.
    fn run_with_fd3(&self, file: &Path, program: &Path, args: &[&str]) -> Output {
        self.command_with_fd3(None, file, program, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    /// The command [`Self::run_with_fd3`] runs, optionally as `(uid, gid)`.
    fn command_with_fd3(
        &self,
        user: Option<(u32, u32)>,
        file: &Path,
        program: &Path,
        args: &[&str],
    ) -> Command {
        let mut cmd = match user {
            Some((uid, gid)) => as_user(uid, gid, "sh"),
            None => Command::new("sh"),
        };
        cmd.args(["-c", "file=$1; shift; exec \"$@\" 3<\"$file\"", "sh"])
            .arg(file)
            .arg(program)
            .args(args)
            .envs(self.env());
        cmd
    }

    /// `gdbus call` on the service's object with `file` as descriptor 3.
    /// gdbus (GLib 2.74) sends an argument of type `h`, known from
    /// introspection, as the file descriptor of that number in its process.
    pub fn gdbus_call_with_fd(
        &self,
        name: &str,
        method: &str,
        file: &Path,
        args: &[&str],
    ) -> Output {
        self.gdbus_fd_command(None, name, method, file, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run gdbus: {e}"))
    }

    /// [`Self::gdbus_call_with_fd`] run as `uid:gid`, not yet started.
    pub fn gdbus_call_with_fd_as(
        &self,
        user: (u32, u32),
        name: &str,
        method: &str,
        file: &Path,
        args: &[&str],
    ) -> Command {
        self.gdbus_fd_command(Some(user), name, method, file, args)
    }

    fn gdbus_fd_command(
        &self,
        user: Option<(u32, u32)>,
        name: &str,
        method: &str,
        file: &Path,
        args: &[&str],
    ) -> Command {
        let mut all = vec![
            "call",
            self.bus_flag().1,
            "--dest",
            name,
            "--object-path",
            "/",
            "--method",
            method,
        ];
        all.extend_from_slice(args);
        self.command_with_fd3(user, file, Path::new("gdbus"), &all)
    }

    /// `busctl --user <args>` with `file` as descriptor 3, run by `busctl`
    /// (systemd 257 or later, which sends an argument `h 3` as its own
    /// descriptor 3: [`fd_busctl`]).
    pub fn busctl_with_fd(&self, busctl: &Path, file: &Path, args: &[&str]) -> Output {
        let mut all = vec![self.bus_flag().0];
        all.extend_from_slice(args);
        self.run_with_fd3(file, busctl, &all)
    }

    /// A zbus connection to this bus.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busctl that passes file descriptors: systemd 257's, from Debian trixie,
/// fetched on first use by `tests/busctl/fetch` (Debian 12's busctl refuses
/// the `h` type).
pub fn fd_busctl() -> PathBuf {
    fetched("tests/busctl/fetch")
}

/// Debian trixie's `rauc` (RAUC 1.13's command line), fetched on first use
/// by `tests/rauc/fetch`.
pub fn rauc_client() -> PathBuf {
    fetched("tests/rauc/fetch")
}

/// Runs a `tests/*/fetch` script (tests/lib/debian-fetch) and returns the
/// program path it prints.
fn fetched(script: &str) -> PathBuf {
    let out = Command::new(repo_file(script))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Output as text, failing the test (with stderr) if the command failed.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stderr as text, failing the test if the command succeeded.
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "command succeeded but should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A directory-backed device: system.conf, a store, a file bootloader and a
/// kernel command line saying slot A was booted.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
}

impl Device {
    /// `dbus`: lines for the `[dbus]` table.
    pub fn new(dbus: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("store")).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("cmdline"), "quiet didymos.slot=A\n").unwrap();
        let text = format!(
            "[system]\ncompatible = \"didymos-test\"\nvariant = \"dev\"\nbootloader = \"file\"\n\
             data-directory = \"data\"\nkernel-cmdline = \"cmdline\"\n\n\
             [keyring]\npath = \"keyring.pem\"\n\n\
             [store]\npath = \"store\"\n\n\
             [bootloader]\nstate-file = \"bootstate.toml\"\n\n\
             [slot.rootfs.0]\ntype = \"composefs\"\nbootname = \"A\"\n\n\
             [slot.rootfs.1]\ntype = \"composefs\"\nbootname = \"B\"\n\n\
             [dbus]\n{dbus}\n"
        );
        let conf = dir.path().join("system.conf");
        std::fs::write(&conf, text).unwrap();
        Self { dir, conf }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The file bootloader's state file text ("" if not written yet).
    pub fn boot_state(&self) -> String {
        std::fs::read_to_string(self.path("bootstate.toml")).unwrap_or_default()
    }
}

/// The service running on a private bus, stopped (SIGTERM) on drop.
pub struct Service {
    child: Child,
    pub log: PathBuf,
}

impl Service {
    pub fn start(bus: &Bus, device: &Device) -> Self {
        let log = device.path("service.log");
        let child = Command::new(env!("CARGO_BIN_EXE_didymos"))
            .arg("--conf")
            .arg(&device.conf)
            .arg("service")
            .envs(bus.env())
            // Installs of large test bundles take long enough to be cancelled,
            // killed or raced, however fast the machine's storage.
            .env("DIDYMOS_FAILPOINT", "slow-objects")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut service = Self { child, log };
        service.wait_for_name(bus, NAME);
        service
    }

    /// Waits until `name` is owned on `bus` (the service requests names only
    /// after its object is served, so it can be called at once).
    pub fn wait_for_name(&mut self, bus: &Bus, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = bus.busctl(&["status", name]);
            if out.status.success() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the service exited ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the service did not take {name}: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the service with SIGKILL (a crash or power cut, for the service).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A non-root user for authorization tests (created if missing). Tests that
/// need it must run as root, and fail otherwise.
pub fn unprivileged_user() -> (u32, u32) {
    const USER: &str = "didymos-dbus-test";
    assert!(
        rustix::process::getuid().is_root(),
        "this test must run as root (it creates a user and runs a client as that user)"
    );
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .unwrap()
            })
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .unwrap();
        // Another test may have created it at the same moment.
        assert!(
            status.success() || id("-u").is_some(),
            "useradd {USER} failed"
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// A command run as `uid:gid` with no supplementary groups.
pub fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    cmd
}

/// The repository root (for shipped files like the policy and the XML).
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}
