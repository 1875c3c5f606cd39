//! When an installed update may reboot the device: `immediate`, `periodic`
//! (weekly maintenance windows) or `fleet-lock` (a lock server lets only so
//! many devices of a group reboot at once, Zincati's FleetLock protocol).

use jiff::Timestamp;
use serde_json::json;

use super::config::StrategyConfig;
use super::http::{Http, HttpError};

const MAX_LOCK_BODY: u64 = 64 * 1024;

/// The strategy's answer for a due reboot.
#[derive(Debug, Clone, PartialEq)]
pub enum Permit {
    Now(String),
    Later {
        until: Option<Timestamp>,
        reason: String,
    },
}

/// `immediate` and `periodic` (pure); `fleet-lock` is decided by the lock
/// server ([`FleetLock::pre_reboot`]) and answers `Now` here.
pub fn permit(strategy: &StrategyConfig, now: Timestamp) -> Permit {
    match strategy {
        StrategyConfig::Immediate => Permit::Now("strategy immediate".into()),
        StrategyConfig::FleetLock { .. } => Permit::Now("strategy fleet-lock".into()),
        StrategyConfig::Periodic(s) => match s.open_at(now) {
            Some((_, end)) => Permit::Now(format!("maintenance window open until {end}")),
            None => {
                let next = s.next_open(now);
                let windows = s
                    .windows
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                Permit::Later {
                    until: next,
                    reason: format!(
                        "outside the maintenance windows ({windows}, time zone {}); the next opens \
                         at {}",
                        s.tz.iana_name().unwrap_or("as configured"),
                        next.map_or("never".to_owned(), |t| t.to_string())
                    ),
                }
            }
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the lock server at {url} answered {status}: {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
}

/// A FleetLock client (protocol: `POST {base}/v1/pre-reboot` and
/// `/v1/steady-state` with `fleet-lock-protocol: true` and the client's
/// group and id).
pub struct FleetLock<'a> {
    pub http: &'a Http,
    pub base_url: &'a str,
    pub group: &'a str,
    pub id: &'a str,
}

impl FleetLock<'_> {
    fn call(&self, endpoint: &str) -> Result<(), LockError> {
        let url = format!("{}/v1/{endpoint}", self.base_url);
        let body = json!({"client_params": {"id": self.id, "group": self.group}});
        let r = self.http.send_json(
            "POST",
            &url,
            &[("fleet-lock-protocol", "true")],
            &body,
            MAX_LOCK_BODY,
        )?;
        if r.status == 200 {
            return Ok(());
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| {
                Some(format!(
                    "{}: {}",
                    v["kind"].as_str()?,
                    v["value"].as_str().unwrap_or_default()
                ))
            })
            .unwrap_or_else(|| r.snippet());
        Err(LockError::Refused {
            url,
            status: r.status,
            detail,
        })
    }

    /// Asks for a reboot slot in the group.
    pub fn pre_reboot(&self) -> Result<(), LockError> {
        self.call("pre-reboot")
    }

    /// Gives the slot back (after the new slot was marked good).
    pub fn steady_state(&self) -> Result<(), LockError> {
        self.call("steady-state")
    }
}
