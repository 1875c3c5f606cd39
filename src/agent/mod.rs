//! `didymos agent`: the fleet update agent. It finds updates (a signed
//! channel, or a hawkBit DDI server), decides when to install and reboot,
//! and reports — as a *client* of the installer (`org.didymos.Installer1`),
//! the way Zincati drives rpm-ostree and rauc-hawkbit-updater drives RAUC.
//! The installer keeps owning verification, the store and the bootloader.
//!
//! - [`plan`]: pure decisions (upgrade graph, rollout, maintenance windows);
//! - [`channel`]: the signed channel format, its verification and the build
//!   host's verbs;
//! - [`config`]: `[updates]` in system.conf and its drop-in directory;
//! - [`state`]: what the agent remembers across restarts and reboots;
//! - [`http`]: the one HTTP client (bounded bodies, timeouts);
//! - [`ddi`]: Eclipse hawkBit's Direct Device Integration API;
//! - [`strategy`]: when to reboot (immediate, periodic, fleet_lock);
//! - [`reboot`]: inhibitors, deferrals and the reboot itself;
//! - [`daemon`]: the agent's loop and its D-Bus interface `org.didymos.Agent1`.
//!
//! The installer is reached only through [`crate::service::client`].
//! docs/fleet.md describes the whole.

pub mod channel;
pub mod config;
pub mod daemon;
pub mod ddi;
pub mod http;
pub mod installer;
pub mod plan;
pub mod reboot;
pub mod source;
pub mod state;
pub mod step;
pub mod strategy;

/// A report as the lines `agent check` and `didymos status` print.
pub fn status_lines(r: &state::Report) -> Vec<String> {
    let mut out = vec![
        format!("last check:  {}", r.at),
        format!("found:       {}", r.outcome),
        format!("next step:   {}", r.next_step),
        format!("reason:      {}", r.reason),
    ];
    if let Some(t) = r.next_check {
        out.push(format!("next check:  {t}"));
    }
    out
}

/// This device's id: `/etc/machine-id`, or a random one the agent made
/// once and keeps in its state.
pub fn device_id(state: &mut state::AgentState) -> String {
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        let id = id.trim();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return id.to_owned();
        }
    }
    if let Some(id) = &state.device_id {
        return id.clone();
    }
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).expect("OpenSSL's random generator");
    let id = hex::encode(b);
    state.device_id = Some(id.clone());
    id
}
