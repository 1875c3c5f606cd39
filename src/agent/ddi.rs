//! Eclipse hawkBit's Direct Device Integration API (DDI), the device side:
//! poll the controller resource, send config data, take a deployment, send
//! feedback, honour cancellation. Tested against goosebit (docs/fleet.md).
//!
//! Every body from the server is read with a limit before it is parsed.

use serde::Deserialize;
use serde_json::json;

use super::config::{HawkbitConfig, Token};
use super::http::{Http, HttpError};

/// Largest DDI answer accepted (a deployment with many chunks is a few KiB).
const MAX_DDI_BODY: u64 = 256 * 1024;
/// Largest token file.
const MAX_TOKEN: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DdiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what} {url}: the server answered {status}: {body}")]
    Status {
        what: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: the server's answer is not what DDI defines: {detail}")]
    Malformed { url: String, detail: String },
    #[error("cannot read the DDI token from {path}: {detail}")]
    Token { path: String, detail: String },
}

/// The controller resource's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Poll {
    /// The server's polling interval.
    pub sleep: Option<std::time::Duration>,
    pub config_data: bool,
    /// `(action id, href)`
    pub deployment: Option<(String, String)>,
    pub cancel: Option<(String, String)>,
}

/// What a deployment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub action_id: String,
    pub version: String,
    pub url: String,
    /// `skip`, `attempt` or `forced` (hawkBit's `update`).
    pub update: String,
    /// `false` when hawkBit's maintenance window says `unavailable`.
    pub window_open: bool,
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

#[derive(Deserialize)]
struct PollBody {
    #[serde(default)]
    config: Option<PollConfig>,
    #[serde(default, rename = "_links")]
    links: std::collections::BTreeMap<String, Href>,
}
#[derive(Deserialize)]
struct PollConfig {
    #[serde(default)]
    polling: Option<Polling>,
}
#[derive(Deserialize)]
struct Polling {
    sleep: Option<String>,
}

/// `HH:MM:SS` as DDI writes the polling interval.
pub fn parse_sleep(text: &str) -> Option<std::time::Duration> {
    let parts: Vec<u64> = text
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = parts[..] else { return None };
    if m >= 60 || s >= 60 {
        return None;
    }
    // The hours come from the server: a huge number is refused, not wrapped.
    let secs = h.checked_mul(3600)?.checked_add(m * 60 + s)?;
    Some(std::time::Duration::from_secs(secs))
}

/// The action id at the end of a DDI link (`…/deploymentBase/42?c=…`).
fn action_id(href: &str) -> String {
    let path = href.split(['?', '#']).next().unwrap_or(href);
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Parses the controller resource (pure, for tests).
pub fn parse_poll(body: &[u8], url: &str) -> Result<Poll, DdiError> {
    let b: PollBody = serde_json::from_slice(body).map_err(|e| DdiError::Malformed {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    let link = |name: &str| {
        b.links
            .get(name)
            .map(|h| (action_id(&h.href), h.href.clone()))
    };
    Ok(Poll {
        sleep: b
            .config
            .and_then(|c| c.polling)
            .and_then(|p| p.sleep)
            .and_then(|s| parse_sleep(&s)),
        config_data: b.links.contains_key("configData"),
        deployment: link("deploymentBase"),
        cancel: link("cancelAction"),
    })
}

/// Parses a `deploymentBase` resource (pure, for tests): the first artifact
/// of the first chunk, by its HTTPS link, else its HTTP link.
pub fn parse_deployment(body: &[u8], url: &str) -> Result<Deployment, DdiError> {
    let malformed = |detail: String| DdiError::Malformed {
        url: url.to_owned(),
        detail,
    };
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let id = match &v["id"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(malformed("no action \"id\"".into())),
    };
    let d = &v["deployment"];
    let chunk = d["chunks"]
        .as_array()
        .and_then(|c| c.first())
        .ok_or_else(|| malformed("the deployment has no chunks".into()))?;
    let artifact = chunk["artifacts"]
        .as_array()
        .and_then(|a| a.first())
        .ok_or_else(|| malformed("the chunk has no artifacts".into()))?;
    let links = &artifact["_links"];
    let href = ["download", "download-http"]
        .iter()
        .find_map(|k| links[*k]["href"].as_str())
        .ok_or_else(|| malformed("the artifact has no download link".into()))?;
    Ok(Deployment {
        action_id: id,
        version: chunk["version"].as_str().unwrap_or_default().to_owned(),
        url: href.to_owned(),
        update: d["update"].as_str().unwrap_or("forced").to_owned(),
        window_open: d["maintenanceWindow"].as_str() != Some("unavailable"),
    })
}

/// A DDI session with one server as one controller.
pub struct Ddi {
    http: Http,
    base: String,
    token: Option<Token>,
}

/// How an action ended, or how it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    Proceeding(u8),
    Success,
    Failure,
    /// A `cancelAction` was carried out.
    Canceled,
}

impl Ddi {
    pub fn new(http: Http, cfg: &HawkbitConfig, controller_id: &str) -> Self {
        Self {
            http,
            base: format!(
                "{}/{}/controller/v1/{}",
                cfg.server, cfg.tenant, controller_id
            ),
            token: cfg.token.clone(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The `Authorization` header value, read from its file each time (so a
    /// rotated token is picked up), or `None`.
    pub fn authorization(&self) -> Result<Option<String>, DdiError> {
        let (kind, path) = match &self.token {
            None => return Ok(None),
            Some(Token::Target(p)) => ("TargetToken", p),
            Some(Token::Gateway(p)) => ("GatewayToken", p),
        };
        let text =
            crate::util::read_bounded_to_string(path, MAX_TOKEN).map_err(|e| DdiError::Token {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        let token = text.trim();
        if token.is_empty() || token.chars().any(|c| c.is_control()) {
            return Err(DdiError::Token {
                path: path.display().to_string(),
                detail: "the file must hold one line with the token".into(),
            });
        }
        Ok(Some(format!("{kind} {token}")))
    }

    fn headers(&self) -> Result<Vec<(&'static str, String)>, DdiError> {
        let mut h = vec![("Accept", "application/hal+json".to_owned())];
        if let Some(a) = self.authorization()? {
            h.push(("Authorization", a));
        }
        Ok(h)
    }

    fn get(&self, what: &'static str, url: &str) -> Result<Vec<u8>, DdiError> {
        let headers = self.headers()?;
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = self.http.get(url, &refs, MAX_DDI_BODY)?;
        if !r.ok() {
            return Err(DdiError::Status {
                what,
                url: url.to_owned(),
                status: r.status,
                body: r.snippet(),
            });
        }
        Ok(r.body)
    }

    fn send(
        &self,
        what: &'static str,
        method: &'static str,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<(), DdiError> {
        let headers = self.headers()?;
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = self
            .http
            .send_json(method, url, &refs, body, MAX_DDI_BODY)?;
        if !r.ok() {
            return Err(DdiError::Status {
                what,
                url: url.to_owned(),
                status: r.status,
                body: r.snippet(),
            });
        }
        Ok(())
    }

    /// `GET {base}`: what the server wants from this controller.
    pub fn poll(&self) -> Result<Poll, DdiError> {
        let body = self.get("polling", &self.base)?;
        parse_poll(&body, &self.base)
    }

    /// `PUT {base}/configData` with the device's attributes.
    pub fn config_data(&self, attributes: &[(&str, &str)]) -> Result<(), DdiError> {
        let data: serde_json::Map<String, serde_json::Value> = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let url = format!("{}/configData", self.base);
        self.send(
            "config data",
            "PUT",
            &url,
            &json!({"mode": "merge", "data": data}),
        )
    }

    pub fn deployment(&self, href: &str) -> Result<Deployment, DdiError> {
        let body = self.get("deployment", href)?;
        parse_deployment(&body, href)
    }

    /// Feedback on a deployment (or, for [`Feedback::Canceled`], on a
    /// `cancelAction`), with `details` lines the server shows.
    pub fn feedback(
        &self,
        action: &str,
        feedback: Feedback,
        details: &[String],
    ) -> Result<(), DdiError> {
        let (resource, execution, finished, progress) = match feedback {
            Feedback::Proceeding(p) => ("deploymentBase", "proceeding", "none", Some(p)),
            Feedback::Success => ("deploymentBase", "closed", "success", None),
            Feedback::Failure => ("deploymentBase", "closed", "failure", None),
            Feedback::Canceled => ("cancelAction", "closed", "success", None),
        };
        let mut result = json!({ "finished": finished });
        if let Some(p) = progress {
            result["progress"] = json!({"cnt": p, "of": 100});
        }
        let body = json!({
            "id": action,
            "status": { "execution": execution, "result": result, "details": details },
        });
        let url = format!("{}/{resource}/{action}/feedback", self.base);
        self.send("feedback", "POST", &url, &body)
    }

    /// The action a `cancelAction` resource names.
    pub fn cancel_target(&self, href: &str) -> Result<String, DdiError> {
        let body = self.get("cancel action", href)?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| DdiError::Malformed {
                url: href.to_owned(),
                detail: e.to_string(),
            })?;
        match &v["cancelAction"]["stopId"] {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            _ => Err(DdiError::Malformed {
                url: href.to_owned(),
                detail: "no cancelAction.stopId".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_polling_interval_is_read_without_overflow() {
        assert_eq!(
            parse_sleep("01:02:03"),
            Some(std::time::Duration::from_secs(3723))
        );
        assert_eq!(parse_sleep("00:60:00"), None);
        assert_eq!(parse_sleep("1:2"), None);
        // Hours a hostile server sends that do not fit in seconds.
        assert_eq!(parse_sleep("18446744073709551615:00:00"), None);
        assert_eq!(parse_sleep("5124095576030432:00:00"), None);
        let poll = br#"{"config":{"polling":{"sleep":"5124095576030432:59:59"}}}"#;
        assert_eq!(parse_poll(poll, "u").unwrap().sleep, None);
    }

    #[test]
    fn parses_hawkbit_answers() {
        let poll = br#"{"config":{"polling":{"sleep":"00:05:00"}},"_links":{
            "deploymentBase":{"href":"https://h/DEFAULT/controller/v1/dev1/deploymentBase/42?c=-2129030598"},
            "configData":{"href":"https://h/DEFAULT/controller/v1/dev1/configData"}}}"#;
        let p = parse_poll(poll, "u").unwrap();
        assert_eq!(p.sleep, Some(std::time::Duration::from_secs(300)));
        assert!(p.config_data);
        assert_eq!(p.deployment.as_ref().unwrap().0, "42");
        assert_eq!(p.cancel, None);

        let dep = br#"{"id":"42","deployment":{"download":"forced","update":"attempt",
            "maintenanceWindow":"unavailable","chunks":[{"part":"os","version":"2.0","name":"acme",
            "artifacts":[{"filename":"acme-2.0.raucb","hashes":{"sha1":"x"},"size":10,
            "_links":{"download-http":{"href":"http://h/a.raucb"},"download":{"href":"https://h/a.raucb"}}}]}]}}"#;
        let d = parse_deployment(dep, "u").unwrap();
        assert_eq!(d.url, "https://h/a.raucb");
        assert_eq!(d.version, "2.0");
        assert!(!d.window_open);
        assert_eq!(d.update, "attempt");

        assert!(
            parse_deployment(br#"{"id":1,"deployment":{"chunks":[]}}"#, "u")
                .unwrap_err()
                .to_string()
                .contains("no chunks")
        );
        assert!(
            parse_poll(b"<html>", "u")
                .unwrap_err()
                .to_string()
                .contains("not what DDI")
        );
        assert_eq!(
            parse_sleep("12:00:01"),
            Some(std::time::Duration::from_secs(43201))
        );
        assert_eq!(parse_sleep("00:61:00"), None);
    }
}
