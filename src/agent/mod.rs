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
pub mod http;
pub mod installer;
pub mod plan;
pub mod state;
