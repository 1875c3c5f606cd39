//! What can go wrong fetching a bundle over HTTP(S), each with the URL and
//! what to do.

/// A failed range request (after its retries, where it is worth retrying).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{url}: not a URL didymos can fetch: {detail}")]
    BadUrl { url: String, detail: String },
    #[error(
        "{url}: the server answered 404 Not Found; check the URL (is the bundle published there?)"
    )]
    NotFound { url: String },
    #[error(
        "{url}: the server refused access ({status}); check the credentials: [streaming] \
         header-file (a token), tls-cert and tls-key (a client certificate)"
    )]
    Forbidden { url: String, status: u16 },
    #[error(
        "{url}: the server ignores range requests (it answered {status} with the whole file to \
         a request for bytes {range}); didymos fetches only what the device lacks and needs a \
         server with range support: nginx, Apache, S3-compatible storage or a CDN \
         (`python3 -m http.server` has none)"
    )]
    NoRangeSupport {
        url: String,
        status: u16,
        range: String,
    },
    #[error(
        "{url}: the bundle changed on the server during the install ({detail}); nothing of the \
         new file was used; start the install again to fetch the bundle now published"
    )]
    Changed { url: String, detail: String },
    #[error(
        "{url}: the server's answer to a request for bytes {range} is wrong: {detail}; the \
         server or a proxy on the way is broken"
    )]
    BadResponse {
        url: String,
        range: String,
        detail: String,
    },
    #[error("{url}: HTTP {status} from the server{retried}")]
    Status {
        url: String,
        status: u16,
        retried: String,
    },
    #[error(
        "{url}: the server's TLS certificate is not trusted: {detail}; set [streaming] tls-ca to \
         the CA that issued it"
    )]
    TlsUntrusted { url: String, detail: String },
    #[error(
        "{url}: the server's TLS certificate has expired or is not valid yet ({detail}); renew \
         the server's certificate (or check the device's clock)"
    )]
    TlsTime { url: String, detail: String },
    #[error(
        "{url}: the server's TLS certificate is for another name ({detail}); use the name the \
         certificate was issued for"
    )]
    TlsName { url: String, detail: String },
    #[error("{url}: TLS failed: {detail}")]
    Tls { url: String, detail: String },
    #[error("{url}: redirected too often (a redirect loop?); fix the server's redirects")]
    Redirects { url: String },
    #[error(
        "{url}: the server sent nothing for {seconds} s{retried}; [streaming] read-timeout sets \
         how long to wait"
    )]
    Stalled {
        url: String,
        seconds: u64,
        retried: String,
    },
    #[error("{url}: {detail}{retried}; check the network and the server")]
    Connection {
        url: String,
        detail: String,
        retried: String,
    },
    #[error("[streaming]: {0}")]
    Config(String),
    #[error("the install was cancelled")]
    Cancelled,
}

impl NetError {
    /// Whether a later attempt may succeed (network trouble, a server
    /// restarting), as opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            NetError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            NetError::Stalled { .. } | NetError::Connection { .. } => true,
            _ => false,
        }
    }

    /// Adds "after N attempts" to an error that was retried.
    pub(crate) fn retried(mut self, attempts: u32) -> Self {
        let note = format!(" (after {attempts} attempts)");
        match &mut self {
            NetError::Status { retried, .. }
            | NetError::Stalled { retried, .. }
            | NetError::Connection { retried, .. } => *retried = note,
            _ => {}
        }
        self
    }
}

impl From<NetError> for std::io::Error {
    fn from(e: NetError) -> Self {
        std::io::Error::other(e)
    }
}
