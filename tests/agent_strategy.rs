//! Reboot strategies and holds, with the real agent binary against real
//! installers on private buses:
//!
//! - `fleet-lock` against the tests' FleetLock server
//!   (tests/fleetlock/fleetlock-test-server.py, written from the published
//!   protocol): two devices in one group with one slot reboot one after the
//!   other, and each gives its slot back only once its new slot is good;
//! - a vendor application's `Inhibit` (org.didymos.Agent1, held while its
//!   descriptor is open) delays the reboot until it is released, and until
//!   `max-deferral` at most (time injected through a clock file, nothing
//!   sleeps). logind's block inhibitors are tested in the e2e guest, where
//!   logind runs.

#[path = "common/agent.rs"]
mod agent;
#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use agent::{Fleet, Nginx, didymos, s};

const NOW: &str = "2030-06-01T00:00:00Z";

struct Channel {
    _host: common_dbus::Device,
    pki: didymos::bundle::devpki::DevPki,
    bundles: Vec<std::path::PathBuf>,
    nginx: Nginx,
}

/// 1.0 → 2.0 → 3.0, signed, on nginx.
fn channel() -> Channel {
    let host = common_dbus::Device::new("");
    let pki = dbus_bundles::keys(&host);
    let bundles: Vec<_> = ["1.0", "2.0", "3.0"]
        .iter()
        .map(|v| dbus_bundles::bundle(&host, &pki, "didymos-test", v, 3))
        .collect();
    let web = host.path("web");
    std::fs::create_dir_all(&web).unwrap();
    let ch = s(&web.join("stable.toml"));
    didymos(&["channel", "new", &ch, "--name", "stable"]);
    // A chain: each release only from the one before.
    for (i, b) in bundles.iter().enumerate() {
        let name = b.file_name().unwrap().to_str().unwrap().to_owned();
        agent::publish(b, &web.join(&name));
        let (kr, bs, url) = (s(&pki.keyring), s(b), name);
        let mut args = vec![
            "channel",
            "add",
            &ch,
            "--keyring",
            &kr,
            "--bundle",
            &bs,
            "--url",
            &url,
        ];
        let from = ["1.0", "2.0"];
        if i > 0 {
            args.extend(["--from", from[i - 1]]);
        }
        didymos(&args);
    }
    agent::sign_channel(&web.join("stable.toml"), &pki, &web.join("stable.channel"));
    let nginx = Nginx::serving(&web);
    Channel {
        _host: host,
        pki,
        bundles,
        nginx,
    }
}

struct LockServer {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LockServer {
    fn start(slots: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("requests.log");
        let child = Command::new("python3")
            .arg(common_dbus::repo_file(
                "tests/fleetlock/fleetlock-test-server.py",
            ))
            .args([
                "--port",
                &port.to_string(),
                "--slots",
                &slots.to_string(),
                "--log",
            ])
            .arg(&log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the FleetLock test server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LockServer {
            child,
            port,
            log,
            _dir: dir,
        }
    }
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for LockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fleet_lock_lets_one_device_of_the_group_reboot_at_a_time() {
    let c = channel();
    let lock = LockServer::start(1);
    let dev = |id: &str| {
        Fleet::new(
            &c.pki,
            &c.bundles[0],
            &format!(
                "channel = \"{}\"\nstrategy = \"fleet-lock\"\n[updates.fleet-lock]\n\
                 base-url = \"http://127.0.0.1:{}\"\ngroup = \"canary\"\nid = \"{id}\"\n",
                c.nginx.url("stable.channel"),
                lock.port
            ),
        )
    };
    let mut a = dev("device-a");
    let mut b = dev("device-b");
    let out = a.step(NOW);
    assert!(out.contains("rebooting into 2.0"), "{out}");
    let out = b.step(NOW);
    assert!(
        out.contains("2.0 is installed; waiting for the fleet lock"),
        "{out}"
    );
    assert!(
        out.contains("group canary is full: held by device-a"),
        "{out}"
    );
    assert_eq!((a.reboots(), b.reboots()), (1, 0));
    // Still refused while a's new slot is not yet marked good.
    let out = b.step(NOW);
    assert!(out.contains("waiting for the fleet lock"), "{out}");
    a.reboot(false);
    let out = a.step(NOW);
    assert!(out.contains("updated to 2.0"), "{out}");
    let out = b.step(NOW);
    assert!(out.contains("rebooting into 2.0"), "{out}");
    assert_eq!(b.reboots(), 1);
    b.reboot(false);
    let out = b.step(NOW);
    assert!(out.contains("updated to 2.0"), "{out}");
    let r = lock.requests();
    let order: Vec<&str> = r.iter().map(String::as_str).collect();
    // The last time each line appears (an idle agent on a good slot gives
    // back a lock it might hold, so steady-state also comes first).
    let pos = |line: &str| {
        order
            .iter()
            .rposition(|l| *l == line)
            .unwrap_or_else(|| panic!("{line:?} not in {order:?}"))
    };
    assert!(
        pos("pre-reboot canary device-a 200") < pos("pre-reboot canary device-b 409"),
        "{order:?}"
    );
    assert!(
        pos("pre-reboot canary device-b 409") < pos("steady-state canary device-a 200"),
        "{order:?}"
    );
    assert!(
        pos("steady-state canary device-a 200") < pos("pre-reboot canary device-b 200"),
        "{order:?}"
    );
    assert!(
        order
            .last()
            .unwrap()
            .starts_with("steady-state canary device-b 200"),
        "{order:?}"
    );
}

/// The agent as a service, with its clock in a file.
struct Daemon {
    child: Child,
    clock: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn last_check(d: &Fleet) -> (String, String) {
    let text = std::fs::read_to_string(d.device.path("agent/state.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let r = &v["last-check"];
    (
        r["at"].as_str().unwrap_or_default().to_owned(),
        format!(
            "{} | {} | {}",
            r["outcome"].as_str().unwrap_or_default(),
            r["next-step"].as_str().unwrap_or_default(),
            r["reason"].as_str().unwrap_or_default()
        ),
    )
}

/// Sets the agent's clock, asks it to check now, and waits for its report.
async fn check_at(d: &Fleet, daemon: &Daemon, agent: &zbus::Proxy<'_>, now: &str) -> String {
    std::fs::write(&daemon.clock, now).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _: () = agent.call("CheckNow", &()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (at, text) = last_check(d);
        if !at.is_empty() && at.parse::<jiff::Timestamp>().ok() == now.parse().ok() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not check at {now}: {at} {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inhibitor_delays_the_reboot_until_released_or_until_the_maximum_deferral() {
    let c = channel();
    // A daily window that is closed from 00:00 to 00:30, so that the
    // install happens before the test holds the reboot back.
    let mut d = Fleet::new(
        &c.pki,
        &c.bundles[0],
        &format!(
            "channel = \"{}\"\nmax-deferral = \"24h\"\nstrategy = \"periodic\"\n\
             [updates.periodic]\nwindows = [\"Mon-Sun 00:30 for 23h30m\"]\n",
            c.nginx.url("stable.channel")
        ),
    );
    let clock = d.device.path("clock");
    std::fs::write(&clock, NOW).unwrap();
    let start = |d: &Fleet| {
        let child = Command::new(env!("CARGO_BIN_EXE_didymos"))
            .arg("--conf")
            .arg(&d.device.conf)
            .args(["agent", "run", "--now-file"])
            .arg(&clock)
            .envs(d.bus.env())
            .stderr(std::fs::File::create(d.device.path("agent.log")).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            clock: clock.clone(),
        }
    };
    let conn = zbus::connection::Builder::address(d.bus.address.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let agent_proxy = || async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = zbus::Proxy::new(&conn, "org.didymos.Agent1", "/", "org.didymos.Agent1")
                .await
                .unwrap();
            if p.get_property::<String>("NextStep").await.is_ok() {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not take org.didymos.Agent1"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let daemon = start(&d);
    let agent = agent_proxy().await;
    let out = check_at(&d, &daemon, &agent, NOW).await;
    assert!(out.contains("2.0 is installed; the reboot waits"), "{out}");
    // A vendor application holds the reboot back.
    let fd: zbus::zvariant::OwnedFd = agent
        .call("Inhibit", &("vendor-app", "recording a video"))
        .await
        .unwrap();
    let out = check_at(&d, &daemon, &agent, "2030-06-01T00:30:00Z").await;
    assert!(
        out.contains("2.0 is installed; the reboot is held back"),
        "{out}"
    );
    assert!(
        out.contains("vendor-app") && out.contains("recording a video"),
        "{out}"
    );
    assert!(
        out.contains("at the latest at 2030-06-02T00:30:00Z"),
        "{out}"
    );
    let out = check_at(&d, &daemon, &agent, "2030-06-02T00:29:00Z").await;
    assert!(out.contains("the reboot waits"), "{out}"); // the window is closed
    let out = check_at(&d, &daemon, &agent, "2030-06-01T23:59:00Z").await;
    assert!(out.contains("held back"), "{out}");
    assert_eq!(d.reboots(), 0);
    // Past the maximum deferral the reboot goes ahead, inhibitor or not.
    let out = check_at(&d, &daemon, &agent, "2030-06-02T00:30:00Z").await;
    assert!(out.contains("rebooting into 2.0"), "{out}");
    assert!(
        out.contains("the maximum deferral (1day) since 2030-06-01T00:30:00Z is over"),
        "{out}"
    );
    assert_eq!(d.reboots(), 1);
    drop(fd);
    drop(daemon);
    d.reboot(false);

    // The next release: held while inhibited, rebooted as soon as released.
    std::fs::write(&clock, "2030-06-03T00:00:00Z").unwrap();
    let daemon = start(&d);
    let agent = agent_proxy().await;
    let out = check_at(&d, &daemon, &agent, "2030-06-03T00:01:00Z").await;
    assert!(out.contains("3.0 is installed; the reboot waits"), "{out}");
    assert!(
        std::fs::read_to_string(d.device.path("agent/state.json"))
            .unwrap()
            .contains("\"version\": \"2.0\",\n    \"success\": true"),
    );
    let fd: zbus::zvariant::OwnedFd = agent
        .call("Inhibit", &("vendor-app", "firmware flashing"))
        .await
        .unwrap();
    let out = check_at(&d, &daemon, &agent, "2030-06-03T00:31:00Z").await;
    assert!(
        out.contains("3.0 is installed; the reboot is held back"),
        "{out}"
    );
    // Defer holds it too, after the inhibitor is gone, until its time.
    drop(fd);
    let until: String = agent
        .call("Defer", &(600u64, "a call in progress"))
        .await
        .unwrap();
    assert_eq!(until, "2030-06-03T00:41:00Z");
    let out = check_at(&d, &daemon, &agent, "2030-06-03T00:32:00Z").await;
    assert!(
        out.contains("a call in progress (until 2030-06-03T00:41:00Z)"),
        "{out}"
    );
    let out = check_at(&d, &daemon, &agent, "2030-06-03T00:41:00Z").await;
    assert!(out.contains("rebooting into 3.0"), "{out}");
    assert!(!out.contains("maximum deferral"), "{out}");
    assert_eq!(d.reboots(), 2);
}
