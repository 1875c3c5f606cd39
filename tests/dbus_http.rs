//! The service installing and inspecting bundles by URL, from real nginx:
//! `InstallBundle` and `InspectBundle` with an `http://` URL (and RAUC's
//! interface, as RAUC accepts URLs there), progress with the bytes fetched,
//! `download-size` for this device, the server's refusal as a typed error
//! from the call, and who may make the daemon fetch a URL.

#[path = "common/dbus.rs"]
mod common_dbus;
#[path = "common/dbus_bundles.rs"]
mod dbus_bundles;
#[path = "common/nginx.rs"]
mod nginx;

use std::collections::HashMap;
use std::time::Duration;

use common_dbus::*;
use didymos::service::Error;
use didymos::service::client::InstallerProxy;
use futures_lite::StreamExt;

fn number(d: &didymos::service::wire::Dict, key: &str) -> u64 {
    u64::try_from(d[key].try_clone().unwrap()).unwrap()
}

#[tokio::test]
async fn install_and_inspect_by_url() {
    let web = nginx::Nginx::start(Default::default());
    let bus = Bus::session();
    let device = Device::new("rauc-compat = true");
    let pki = dbus_bundles::keys(&device);
    dbus_bundles::populate(&device, &pki, false);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 300);
    web.publish(&v2, "v2.raucb");
    let mut service = Service::start(&bus, &device);
    service.wait_for_name(&bus, RAUC_NAME);
    let conn = bus.connect().await;
    let proxy = InstallerProxy::new(&conn).await.unwrap();
    let url = web.url("v2.raucb");

    // What an install would fetch on this device: the image and the objects
    // the store lacks (all 300 data files; the slot A has other ones).
    let info = proxy.inspect_bundle(&url, HashMap::new()).await.unwrap();
    let download = number(&info, "download-size");
    let k =
        didymos::keyring::Keyring::from_pem_file(&device.path("keyring.pem"), Default::default())
            .unwrap();
    let b = didymos::bundle::Bundle::open(&v2)
        .unwrap()
        .verify(&k)
        .unwrap();
    let objects = didymos::bundle::format::stored_total(b.index());
    assert!(
        download > objects && download <= objects + b.header().image.len,
        "download-size {download}, objects {objects}"
    );
    assert!(number(&info, "write-objects") >= 300);

    // The install, by URL, with the bytes fetched in the progress.
    let mut progress = proxy.receive_progress_changed().await;
    let mut completed = proxy.receive_completed().await.unwrap();
    proxy.install_bundle(&url, HashMap::new()).await.unwrap();
    let mut messages = Vec::new();
    let code = loop {
        tokio::select! {
            Some(p) = progress.next() => {
                messages.push(p.get().await.unwrap().1);
            }
            Some(c) = completed.next() => break c.args().unwrap().result,
            _ = tokio::time::sleep(Duration::from_secs(120)) => panic!("no Completed"),
        }
    };
    assert_eq!(code, 0, "{}", proxy.last_error().await.unwrap());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("fetched") && m.contains("/s")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("Fetching")),
        "{messages:?}"
    );
    assert_eq!(proxy.last_bundle().await.unwrap(), url);
    let slots = proxy.get_slot_status().await.unwrap();
    let (_, b) = slots.iter().find(|(n, _)| n == "rootfs.1").unwrap();
    assert_eq!(
        String::try_from(b["bundle.version"].try_clone().unwrap()).unwrap(),
        "2.0"
    );

    // A URL the server does not have: refused in the call, with a typed
    // error naming the URL.
    match proxy
        .install_bundle(&web.url("missing.raucb"), HashMap::new())
        .await
    {
        Err(Error::Network(m)) => assert!(m.contains("missing.raucb") && m.contains("404"), "{m}"),
        other => panic!("expected Network, got {other:?}"),
    }

    // RAUC's interface takes the URL too (and reports a failure RAUC's way).
    let out = ok(bus.gdbus_call(
        RAUC_NAME,
        &format!("{RAUC_IFACE}.InspectBundle"),
        &[&url, "{}"],
    ));
    assert!(out.contains("manifest-hash"), "{out}");
}

/// The daemon fetches with its own network identity and client
/// certificate, so only callers who may install can make it fetch a URL;
/// everyone else may still inspect a bundle they pass by descriptor.
#[test]
fn only_installers_make_the_daemon_fetch() {
    let (uid, gid) = unprivileged_user();
    let web = nginx::Nginx::start(Default::default());
    let bus = Bus::system(None);
    let device = Device::new("");
    let pki = dbus_bundles::keys(&device);
    let v2 = dbus_bundles::bundle(&device, &pki, "didymos-test", "2.0", 5);
    web.publish(&v2, "v2.raucb");
    let _service = Service::start(&bus, &device);
    let out = as_user(uid, gid, "gdbus")
        .args([
            "call",
            "--system",
            "--dest",
            NAME,
            "--object-path",
            "/",
            "--method",
        ])
        .arg(format!("{IFACE}.InspectBundle"))
        .arg(web.url("v2.raucb"))
        .arg("{}")
        .envs(bus.env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.didymos.Installer1.Error.PermissionDenied")
            && err.contains("may not make the service fetch a URL"),
        "{err}"
    );
    web.clear_log();
    assert!(web.requests().is_empty(), "nothing was fetched");
    // Root may.
    let out = ok(bus.gdbus_call(
        NAME,
        &format!("{IFACE}.InspectBundle"),
        &[&web.url("v2.raucb"), "{}"],
    ));
    assert!(out.contains("download-size"), "{out}");
}
