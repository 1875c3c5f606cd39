//! The agent's one HTTP client (channels, hawkBit DDI, FleetLock): `ureq`
//! over the OpenSSL the project already links (native-tls), blocking, on
//! the agent's worker threads. Every body is read with a limit, so a hostile
//! server cannot make the agent allocate more than the caller allows.
//! Header values (tokens) are never logged.

use std::path::Path;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{method} {url}: {detail}; check that the server runs and is reachable from the device"
    )]
    Transport {
        method: &'static str,
        url: String,
        detail: String,
    },
    #[error(
        "{method} {url}: the answer is larger than {limit} bytes, more than this request may \
         return; the server is misconfigured or hostile"
    )]
    TooLarge {
        method: &'static str,
        url: String,
        limit: u64,
    },
    #[error("cannot read the CA certificates in {path}: {detail}")]
    Ca { path: String, detail: String },
}

/// An answer: status and the (bounded) body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The start of the body as text, for error messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// A client with a timeout for every whole request, and the CA
    /// certificates in `tls_ca` (PEM) instead of the system's when given.
    pub fn new(timeout: Duration, tls_ca: Option<&Path>) -> Result<Self, HttpError> {
        let roots = match tls_ca {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let ca = |detail: String| HttpError::Ca {
                    path: path.display().to_string(),
                    detail,
                };
                let pem =
                    crate::util::read_bounded(path, 1024 * 1024).map_err(|e| ca(e.to_string()))?;
                let certs = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<Vec<Certificate<'static>>, _>>()
                    .map_err(|e| ca(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca("no certificate in the file".into()));
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(5)
            .user_agent(concat!("didymos-agent/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        Ok(Self { agent })
    }

    fn finish(
        method: &'static str,
        url: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<Response, HttpError> {
        let transport = |e: ureq::Error| HttpError::Transport {
            method,
            url: url.to_owned(),
            detail: e.to_string(),
        };
        let mut resp = result.map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => HttpError::TooLarge {
                    method,
                    url: url.to_owned(),
                    limit,
                },
                other => transport(other),
            })?;
        Ok(Response { status, body })
    }

    /// `GET url`, reading at most `limit` bytes of body.
    pub fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        limit: u64,
    ) -> Result<Response, HttpError> {
        let mut req = self.agent.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::finish("GET", url, req.call(), limit)
    }

    /// `POST` or `PUT` a JSON body.
    pub fn send_json(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
        limit: u64,
    ) -> Result<Response, HttpError> {
        let mut req = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = serde_json::to_vec(body).expect("JSON values serialize");
        let req = req.header("Content-Type", "application/json");
        Self::finish(method, url, req.send(&bytes[..]), limit)
    }
}
