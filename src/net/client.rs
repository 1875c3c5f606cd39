//! The HTTP client, configured from `[streaming]`: one TLS stack (OpenSSL,
//! through `native-tls`), the trust anchors and client certificate, the
//! proxy, timeouts, and the extra headers.

use std::path::Path;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::NetError;
use crate::config::StreamingSection;

/// Largest file of extra headers, and of a certificate or key file.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;
/// How many redirects a request may follow.
const MAX_REDIRECTS: u32 = 5;

/// An agent (keep-alive connection pool) and the headers every request carries.
#[derive(Clone)]
pub struct Client {
    pub(crate) agent: ureq::Agent,
    /// `Name: value` pairs from `header-file`. Never logged.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) max_retries: u32,
    pub(crate) retry_delay: std::time::Duration,
    pub(crate) read_timeout: std::time::Duration,
    pub(crate) parallel: usize,
    pub(crate) limiter: Option<std::sync::Arc<super::limit::RateLimiter>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, NetError> {
    crate::util::read_bounded(path, MAX_CONFIG_FILE)
        .map_err(|e| NetError::Config(format!("{what} {}: {e}", path.display())))
}

/// The certificates of a PEM file (at least one).
fn pem_certs(what: &str, path: &Path) -> Result<Vec<Certificate<'static>>, NetError> {
    let bad = |detail: String| NetError::Config(format!("{what} {}: {detail}", path.display()));
    let pem = read_file(what, path)?;
    let certs = openssl::x509::X509::stack_from_pem(&pem)
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    certs
        .iter()
        .map(|c| c.to_der().map(|d| Certificate::from_der(&d).to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// Parses a header file: `Name: value` per line; blank lines and lines
/// starting with `#` are skipped. Values are secret: messages name the line,
/// never its value.
pub fn parse_headers(text: &str, origin: &Path) -> Result<Vec<(String, String)>, NetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            NetError::Config(format!(
                "header-file {}:{}: {why}; write `Name: value`",
                origin.display(),
                i + 1
            ))
        };
        let (name, value) = line.split_once(':').ok_or_else(|| bad("no `:`"))?;
        let name = name.trim();
        let value = value.trim();
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            return Err(bad("the header name is not a valid token"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("the value contains a control character"));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "range" | "if-match" | "if-range" | "host" | "content-length" | "transfer-encoding"
        ) {
            return Err(bad(&format!("{name} is set by didymos itself")));
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

impl Client {
    pub fn new(s: &StreamingSection) -> Result<Self, NetError> {
        let root_certs = match &s.tls_ca {
            Some(path) => RootCerts::new_with_certs(&pem_certs("tls-ca", path)?),
            None => RootCerts::PlatformVerifier,
        };
        let client_cert = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(client_cert(cert, key)?),
            _ => None,
        };
        if s.tls_no_verify {
            log::warn!(
                "[streaming] tls-no-verify is set: server certificates are not checked (the \
                 bundle's own signature still is)"
            );
        }
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(root_certs)
            .client_cert(client_cert)
            .disable_verification(s.tls_no_verify)
            .build();
        let proxy =
            match &s.proxy {
                Some(p) => Some(ureq::Proxy::new(p).map_err(|e| {
                    NetError::Config(format!("proxy {p:?} is not a proxy URL ({e})"))
                })?),
                None => ureq::Proxy::try_from_env(),
            };
        let parallel = s.parallel.max(1) as usize;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .proxy(proxy)
            .http_status_as_error(false)
            .max_redirects(MAX_REDIRECTS)
            .max_idle_connections_per_host(parallel + 1)
            .timeout_connect(Some(s.connect_timeout))
            .timeout_per_read(Some(s.read_timeout))
            .timeout_per_write(Some(s.read_timeout))
            .timeout_recv_response(Some(s.read_timeout))
            .user_agent(concat!("didymos/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let headers = match &s.header_file {
            Some(path) => {
                let bytes = read_file("header-file", path)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    NetError::Config(format!("header-file {}: not UTF-8 text", path.display()))
                })?;
                parse_headers(&text, path)?
            }
            None => Vec::new(),
        };
        Ok(Self {
            agent,
            headers,
            max_retries: s.max_retries,
            retry_delay: s.retry_delay,
            read_timeout: s.read_timeout,
            parallel,
            limiter: (s.bandwidth_limit > 0)
                .then(|| std::sync::Arc::new(super::limit::RateLimiter::new(s.bandwidth_limit))),
        })
    }
}

/// The client certificate and key, the key converted to PKCS#8 (what the
/// TLS library takes) whatever PEM form it is in.
fn client_cert(cert: &Path, key: &Path) -> Result<ClientCert, NetError> {
    let ders = pem_certs("tls-cert", cert)?;
    let key_pem = read_file("tls-key", key)?;
    let pkey = openssl::pkey::PKey::private_key_from_pem(&key_pem).map_err(|e| {
        NetError::Config(format!(
            "tls-key {}: not a PEM private key (an encrypted key cannot be used): {e}",
            key.display()
        ))
    })?;
    let pkcs8 = pkey
        .private_key_to_pem_pkcs8()
        .map_err(|e| NetError::Config(format!("tls-key {}: {e}", key.display())))?;
    let key = PrivateKey::from_pem(&pkcs8)
        .map_err(|e| NetError::Config(format!("tls-key {}: {e}", key.display())))?;
    Ok(ClientCert::new_with_certs(&ders, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_file() {
        let p = Path::new("h");
        let got = parse_headers(
            "# token\nAuthorization: Bearer abc\r\n\nX-Serial:  42 \n",
            p,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("Authorization".into(), "Bearer abc".into()),
                ("X-Serial".into(), "42".into())
            ]
        );
        for (text, want) in [
            ("no colon\n", "h:1: no `:`"),
            ("Bad Name: x\n", "not a valid token"),
            ("Range: bytes=0-1\n", "set by didymos"),
            ("X: a\u{1}b\n", "control character"),
        ] {
            let err = parse_headers(text, p).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(
                !err.contains("bytes=0-1") && !err.contains("a\u{1}b"),
                "{err}"
            );
        }
    }
}
