//! The update agent following a signed channel served by Debian's nginx:
//! two directory-backed devices, each with its own installer on a private
//! bus, walk a four-release graph (a barrier, a phased rollout) with the
//! time injected, and end on the right versions. Also: `agent check` says
//! what it would do, an expired or forged channel on the server is refused
//! with what to do, and a release whose slot does not come up is reported
//! as failed and not tried again.
//!
//! The bundles come over HTTP from the same nginx: the channel names them
//! relative to itself, and the installer fetches them (`InstallBundle` with
//! a URL), pinned to the channel's manifest hash. One release lists a dead
//! mirror first, so the agent falls back to the next location.

#[path = "common/agent.rs"]
mod agent;
#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;

use agent::{Fleet, Nginx, didymos, s};

/// The rollout of 4.0 starts at T0 (0 %) and reaches everybody at T0 + 10 h.
const T0: &str = "2030-06-01T00:00:00Z";
const BEFORE: &str = "2030-05-31T23:00:00Z";
const T0_3H: &str = "2030-06-01T03:00:00Z";
const T0_9H: &str = "2030-06-01T09:00:00Z";

struct Setup {
    _work: tempfile::TempDir,
    pki: didymos::bundle::devpki::DevPki,
    bundles: Vec<std::path::PathBuf>,
    web: std::path::PathBuf,
    nginx: Nginx,
}

/// Four releases 1.0 → 2.0 (barrier) → 3.0 → 4.0 (rollout), and a
/// publisher's mistake: an edge 1.0 → 4.0 straight over the barrier.
fn setup() -> Setup {
    let work = tempfile::tempdir().unwrap();
    let host = common_dbus::Device::new("");
    let pki = dbus_bundles::keys(&host);
    let bundles: Vec<_> = ["1.0", "2.0", "3.0", "4.0"]
        .iter()
        .map(|v| dbus_bundles::bundle(&host, &pki, "didymos-test", v, 4))
        .collect();
    let web = work.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    let ch = s(&web.join("stable.toml"));
    let kr = s(&pki.keyring);
    didymos(&["channel", "new", &ch, "--name", "stable"]);
    for (i, b) in bundles.iter().enumerate() {
        let mut args = vec!["channel", "add", &ch, "--keyring", &kr];
        let bs = s(b);
        let name = b.file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::create_dir_all(web.join("bundles")).unwrap();
        agent::publish(b, &web.join("bundles").join(&name));
        let url = format!("bundles/{name}");
        if i == 2 {
            // A mirror that does not have it, tried first.
            args.extend(["--url", "missing/3.0.raucb"]);
        }
        args.extend(["--bundle", &bs, "--url", &url]);
        if i == 3 {
            args.extend(["--from", "1.0", "--from", "2.0", "--from", "3.0"]);
        }
        let out = didymos(&args);
        assert!(out.contains("manifest"), "{out}");
        if i == 1 {
            let out = didymos(&["channel", "barrier", &ch, "2.0"]);
            assert!(out.contains("2.0 is a barrier"), "{out}");
        }
    }
    didymos(&[
        "channel",
        "rollout",
        &ch,
        "4.0",
        "--start",
        T0,
        "--start-percentage",
        "0",
        "--duration",
        "10h",
    ]);
    let out = agent::sign_channel(&web.join("stable.toml"), &pki, &web.join("stable.channel"));
    assert!(out.contains("sequence 1"), "{out}");
    let shown = didymos(&[
        "channel",
        "show",
        &s(&web.join("stable.channel")),
        "--keyring",
        &kr,
    ]);
    assert!(
        shown.contains("release 2.0 (didymos-test)") && shown.contains("  barrier"),
        "{shown}"
    );
    assert!(
        shown.contains("rollout from 2030-06-01T00:00:00Z at 0 %"),
        "{shown}"
    );
    let nginx = Nginx::serving(&web);
    Setup {
        _work: work,
        pki,
        bundles,
        web,
        nginx,
        // The host device only made the bundles and keys.
    }
    .keep(host)
}

impl Setup {
    fn keep(self, host: common_dbus::Device) -> Self {
        // The bundles live in the host device's directory.
        std::mem::forget(host);
        self
    }
}

fn device(setup: &Setup, wariness: f64) -> Fleet {
    Fleet::new(
        &setup.pki,
        &setup.bundles[0],
        &format!(
            "channel = \"{}\"\nwariness = {wariness}\n",
            setup.nginx.url("stable.channel")
        ),
    )
}

/// One hop: a step installs and asks for a reboot, the device reboots, the
/// next step reports success.
fn hop(d: &mut Fleet, now: &str, to: &str) {
    let before = d.reboots();
    let out = d.step(now);
    assert!(out.contains(&format!("rebooting into {to}")), "{out}");
    assert_eq!(d.reboots(), before + 1);
    d.reboot(false);
    let out = d.step(now);
    assert!(out.contains(&format!("updated to {to}")), "{out}");
    assert_eq!(d.version(), to);
}

#[test]
fn two_devices_follow_the_graph_through_a_barrier_and_a_rollout() {
    let setup = setup();
    let mut eager = device(&setup, 0.2);
    let mut wary = device(&setup, 0.8);

    // `agent check` says what it would do, and does nothing.
    let out = eager.agent(&["check", "--now", BEFORE]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("update available: 1.0 -> 2.0"), "{text}");
    assert!(text.contains("crosses barrier 2.0"), "{text}");
    assert_eq!(eager.reboots(), 0);
    assert_eq!(eager.version(), "1.0");

    for d in [&mut eager, &mut wary] {
        // The barrier first, although the channel has an edge 1.0 -> 4.0.
        hop(d, BEFORE, "2.0");
        hop(d, BEFORE, "3.0");
        // 4.0's rollout has not started.
        let out = d.step(BEFORE);
        assert!(out.contains("3.0 -> 4.0 is rolling out"), "{out}");
    }
    // Three hours in, 30 % of the fleet may update: the eager device, not the wary one.
    hop(&mut eager, T0_3H, "4.0");
    let out = wary.step(T0_3H);
    assert!(out.contains("not this device's turn yet"), "{out}");
    assert!(out.contains("from 2030-06-01T08:00:00Z on"), "{out}");
    assert_eq!(wary.version(), "3.0");
    hop(&mut wary, T0_9H, "4.0");

    for d in [&eager, &wary] {
        let out = d.step(T0_9H);
        assert!(out.contains("up to date: 4.0"), "{out}");
        // didymos status shows the agent's last check, next step and reason.
        let st = d.status();
        assert!(
            st.contains("DIDYMOS_AGENT_OUTCOME='up to date: 4.0"),
            "{st}"
        );
        assert!(
            st.contains("DIDYMOS_AGENT_NEXT_STEP='check again at"),
            "{st}"
        );
        assert!(
            st.contains("DIDYMOS_AGENT_LAST_UPDATE='4.0 success"),
            "{st}"
        );
    }
    // The bundles came from nginx (ranges of them), 3.0 after the dead mirror.
    let log = setup.nginx.requests();
    assert!(
        log.iter()
            .any(|r| r.request.contains("GET /bundles/didymos-test-4.0-4.raucb")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|r| r.request.contains("GET /missing/3.0.raucb") && r.status == 404),
        "{log:?}"
    );
    assert_eq!(eager.reboots(), 3);
    assert_eq!(wary.reboots(), 3);
}

#[test]
fn a_release_that_does_not_come_up_is_reported_and_not_retried() {
    let setup = setup();
    let mut d = device(&setup, 0.5);
    let out = d.step(BEFORE);
    assert!(out.contains("rebooting into 2.0"), "{out}");
    // The slot with 2.0 never gets marked good: the bootloader falls back.
    d.reboot(true);
    let out = d.step(BEFORE);
    assert!(out.contains("the update to 2.0 failed"), "{out}");
    assert!(out.contains("did not come up healthy"), "{out}");
    assert_eq!(d.version(), "1.0");
    let out = d.step(BEFORE);
    assert!(out.contains("failed on this device before"), "{out}");
    assert!(out.contains("up to date: 1.0"), "{out}");
    assert_eq!(d.reboots(), 1);
    let st = d.status();
    assert!(
        st.contains("DIDYMOS_AGENT_LAST_UPDATE='2.0 failure"),
        "{st}"
    );
}

#[test]
fn expired_forged_and_replayed_channels_are_refused() {
    let setup = setup();
    let mut d = device(&setup, 0.5);
    let path = setup.web.join("stable.channel");
    let sign = |pki: &didymos::bundle::devpki::DevPki| {
        agent::sign_channel(&setup.web.join("stable.toml"), pki, &path)
    };
    // A replay: the device accepts sequence 2, then the server serves 1 again.
    std::fs::copy(&path, setup.web.join("old.channel")).unwrap();
    assert!(sign(&setup.pki).contains("sequence 2"));
    hop(&mut d, BEFORE, "2.0");
    std::fs::copy(setup.web.join("old.channel"), &path).unwrap();
    let out = d.step(BEFORE);
    assert!(
        out.contains("has sequence 1, older than sequence 2"),
        "{out}"
    );
    assert!(out.contains("replays an old channel"), "{out}");
    assert!(sign(&setup.pki).contains("sequence 3"));

    let check = |now: &str| {
        let out = d.agent(&["check", "--now", now]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(check(BEFORE).contains("update available: 2.0 -> 3.0"));
    // After its expiry (ten years from now).
    let out = check("2099-01-01T00:00:00Z");
    assert!(out.contains("expired at"), "{out}");
    assert!(out.contains("didymos channel sign --expires"), "{out}");

    // One byte changed on the server.
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replacen("version = \"4.0\"", "version = \"4.1\"", 1),
    )
    .unwrap();
    let out = check(BEFORE);
    assert!(
        out.contains("the channel's signature does not verify"),
        "{out}"
    );
    assert!(out.contains("modified"), "{out}");

    // Signed by a key the device does not trust.
    let other = didymos::bundle::devpki::generate(&setup.web.join("other-pki")).unwrap();
    sign(&other);
    let out = check(BEFORE);
    assert!(out.contains("is not trusted by keyring"), "{out}");
    // A hostile server: an answer far larger than a channel may be.
    std::fs::write(&path, vec![b'#'; 8 * 1024 * 1024]).unwrap();
    let out = check(BEFORE);
    assert!(out.contains("the answer is larger than"), "{out}");
    assert!(out.contains("misconfigured or hostile"), "{out}");
    // Nothing was installed from any of them.
    assert_eq!(d.version(), "2.0");
    // The server is down.
    drop(setup.nginx);
    let out = check(BEFORE);
    assert!(out.contains("GET http://127.0.0.1:"), "{out}");
    assert!(
        out.contains("check that the server runs and is reachable"),
        "{out}"
    );
}
