//! The update agent against a real hawkBit DDI server on 127.0.0.1:
//! goosebit 0.2.12 from PyPI, in a virtualenv the test makes
//! (tests/ddi/requirements.txt, pinned; cached in tests/ddi/cache/), run by
//! tests/ddi/goosebit-test-server.py, which registers the software in
//! goosebit's database through goosebit's own models (its upload refuses
//! didymos bundles) and otherwise leaves the DDI conversation to goosebit.
//! The bundles are served by nginx and installed by URL.
//!
//! - an assigned distribution is installed, the device "reboots" and is
//!   marked good, and only then goosebit shows the action closed with
//!   success;
//! - a bad bundle (signed by keys the device does not trust) shows failure
//!   with didymos's error text;
//! - a deployment withdrawn during the install (goosebit has no
//!   cancelAction) stops the install cleanly: the installer's Cancel, the
//!   old slot stays primary.

#[path = "common/agent.rs"]
mod agent;
#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent::{Fleet, Nginx, publish};
use sha2::Digest as _;

/// The virtualenv with goosebit, made once (keyed by the requirements).
fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let req = common_dbus::repo_file("tests/ddi/requirements.txt");
        let key = hex::encode(&sha2::Sha256::digest(std::fs::read(&req).unwrap())[..8]);
        let dir = common_dbus::repo_file(&format!("tests/ddi/cache/venv-{key}"));
        if dir.join("ok").exists() {
            return dir;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let run = |cmd: &mut Command, what: &str| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what} failed (tests/deps.sh installs python3-venv): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            "python3 -m venv",
        );
        run(
            Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", "-r"])
                .arg(&req),
            "pip install -r tests/ddi/requirements.txt",
        );
        std::fs::write(dir.join("ok"), "").unwrap();
        dir
    })
    .clone()
}

/// goosebit on 127.0.0.1 with its control channel.
struct Goosebit {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Goosebit {
    fn start() -> Self {
        let python = venv().join("bin/python");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(python)
            .arg(common_dbus::repo_file("tests/ddi/goosebit-test-server.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("goosebit.log")).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.contains("ready"),
            "goosebit did not start: {line} {}",
            std::fs::read_to_string(dir.path().join("goosebit.log")).unwrap_or_default()
        );
        Goosebit {
            child,
            stdin,
            stdout,
            port,
            _dir: dir,
        }
    }

    fn control(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "goosebit control {cmd}: {v}");
        v
    }

    /// Registers `bundle` (served at `url`) and assigns it to `device`.
    fn assign(&mut self, device: &str, bundle: &Path, url: &str, version: &str) {
        let bytes = std::fs::read(bundle).unwrap();
        let sha1 = hex::encode(openssl::sha::sha1(&bytes));
        let id = self.control(
            serde_json::json!({"op": "software", "uri": url, "version": version,
            "size": bytes.len(), "sha1": sha1, "model": "didymos-test"}),
        )["id"]
            .clone();
        self.control(serde_json::json!({"op": "assign", "device": device, "software": id}));
    }

    fn show(&mut self, device: &str) -> serde_json::Value {
        self.control(serde_json::json!({"op": "show", "device": device}))
    }
}

impl Drop for Goosebit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn device(pki: &didymos::bundle::devpki::DevPki, first: &Path, gb: &Goosebit, id: &str) -> Fleet {
    Fleet::new(
        pki,
        first,
        &format!(
            "[updates.hawkbit]\nserver = \"http://127.0.0.1:{}\"\ntenant = \"DEFAULT\"\n\
             controller-id = \"{id}\"\n",
            gb.port
        ),
    )
}

const NOW: &str = "2030-06-01T00:00:00Z";

#[test]
fn hawkbit_ddi_against_goosebit() {
    let host = common_dbus::Device::new("");
    let pki = dbus_bundles::keys(&host);
    let v1 = dbus_bundles::bundle(&host, &pki, "didymos-test", "1.0", 3);
    let v2 = dbus_bundles::bundle(&host, &pki, "didymos-test", "2.0", 3);
    let refused = dbus_bundles::refused(&host, &pki);
    let big = dbus_bundles::bundle(&host, &pki, "didymos-test", "3.0", 4000);
    let web = host.path("web");
    std::fs::create_dir_all(&web).unwrap();
    for (b, name) in [
        (&v2, "v2.raucb"),
        (&refused.untrusted, "untrusted.raucb"),
        (&big, "big.raucb"),
    ] {
        publish(b, &web.join(name));
    }
    // The big bundle comes slowly, so that the install is still running
    // when the deployment is withdrawn.
    let nginx = Nginx::start(agent::nginx::Options {
        root: Some(web.clone()),
        locations: "location = /big.raucb { limit_rate 64k; }".into(),
        ..Default::default()
    });
    let mut gb = Goosebit::start();

    // Registration: the first poll asks for config data.
    let mut d = device(&pki, &v1, &gb, "dev-1");
    let out = d.step(NOW);
    assert!(out.contains("no deployment for this device"), "{out}");
    let s = gb.show("dev-1");
    assert_eq!(s["state"], "Registered", "{s}");
    assert_eq!(s["sw_version"], "1.0", "{s}");
    assert_eq!(s["hardware"], "didymos-test", "{s}");

    // An assigned distribution: installed, rebooted, marked good, then success.
    gb.assign("dev-1", &v2, &nginx.url("v2.raucb"), "2.0");
    let out = d.step(NOW);
    assert!(out.contains("rebooting into 2.0"), "{out}");
    assert!(out.contains("hawkBit action"), "{out}");
    let s = gb.show("dev-1");
    assert_eq!(
        s["state"], "Running",
        "the action is not closed before the reboot: {s}"
    );
    assert_eq!(s["sw_version"], "1.0", "{s}");
    d.reboot(false);
    let out = d.step(NOW);
    assert!(out.contains("updated to 2.0"), "{out}");
    let s = gb.show("dev-1");
    assert_eq!(s["state"], "Finished", "{s}");
    assert_eq!(s["sw_version"], "2.0", "{s}");
    assert!(s["log"].as_str().unwrap().contains("marked it good"), "{s}");
    let out = d.step(NOW);
    assert!(out.contains("no deployment for this device"), "{out}");

    // A bad bundle: failure, with the installer's own message.
    gb.assign(
        "dev-1",
        &refused.untrusted,
        &nginx.url("untrusted.raucb"),
        "2.1",
    );
    let out = d.step(NOW);
    assert!(out.contains("the install of 2.1 failed"), "{out}");
    let s = gb.show("dev-1");
    assert_eq!(s["state"], "Error", "{s}");
    let log = s["log"].as_str().unwrap();
    assert!(log.contains("is not trusted by keyring"), "{s}");
    assert_eq!(d.version(), "2.0");
    assert_eq!(d.reboots(), 1);

    // Withdrawn during the install: cancelled cleanly.
    let e = device(&pki, &v1, &gb, "dev-2");
    e.step(NOW);
    gb.assign("dev-2", &big, &nginx.url("big.raucb"), "3.0");
    let run = e
        .agent_command(&["run", "--once", "--now", NOW])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while gb.show("dev-2")["state"] != "Running" {
        assert!(Instant::now() < deadline, "the install did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    gb.control(serde_json::json!({"op": "withdraw", "device": "dev-2"}));
    let out = run.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("the install of 3.0 was cancelled"), "{text}");
    assert!(text.contains("withdrew action"), "{text}");
    let last = e.bus.busctl(&[
        "get-property",
        common_dbus::NAME,
        "/",
        common_dbus::IFACE,
        "LastErrorName",
    ]);
    assert!(
        String::from_utf8_lossy(&last.stdout).contains("Cancelled"),
        "{last:?}"
    );
    assert_eq!(e.status_value("DIDYMOS_BOOT_PRIMARY"), "rootfs.0");
    assert_eq!(e.reboots(), 0);
    assert_eq!(e.version(), "1.0");
}
