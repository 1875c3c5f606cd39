//! One range request, checked, resumed and retried.
//!
//! Every answer must be `206 Partial Content` for exactly the bytes asked
//! (`Content-Range`, `Content-Length`), of a file of the size and version
//! (`ETag`, else `Last-Modified`) the install started with: each request
//! carries `If-Match` so a server whose file was replaced answers 412
//! instead of other bytes. Transient failures (connection lost or refused,
//! a stalled server, 5xx, 429) are retried with exponential backoff, and a
//! body cut short resumes from the first byte not yet received, so a
//! dropped link costs at most the bytes in flight.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::NetError;
use super::client::Client;

/// The file being fetched, as the first answer described it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL requested (may hold a token in its query).
    pub url: String,
    /// The URL for messages: no user info, no query.
    pub shown: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Bytes and requests, for progress and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
}

const CHUNK: usize = 64 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the first answer said about the file.
pub(crate) struct Head {
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Fetches `len` bytes at `offset` into `sink`, retrying transient
/// failures. Attempts that received bytes reset the retry count: a slow or
/// lossy link that keeps delivering is not a dead server.
pub(crate) fn fetch(
    client: &Client,
    target: &Target,
    offset: u64,
    len: u64,
    stats: &Stats,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), NetError> {
    let mut got = 0u64;
    let mut failures = 0u32;
    loop {
        let before = got;
        let result = fetch_once(client, target, offset + got, len - got, stats, &mut |b| {
            sink(b)?;
            got += b.len() as u64;
            Ok(())
        });
        match result {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => {
                if got > before {
                    failures = 0;
                }
                if failures >= client.max_retries {
                    return Err(e.retried(failures + 1));
                }
                let delay = backoff(client, failures);
                failures += 1;
                log::warn!(
                    "{e}; retrying bytes {}-{} in {delay:.1?} (attempt {} of {})",
                    offset + got,
                    offset + len - 1,
                    failures + 1,
                    client.max_retries + 1
                );
                std::thread::sleep(delay);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The first request: the file's first `len` bytes (fewer for a smaller
/// file), and what the answer says about the file (its size from
/// `Content-Range`, its version).
pub(crate) fn open(
    client: &Client,
    url: &str,
    shown: &str,
    len: u64,
    stats: &Stats,
) -> Result<(Head, Vec<u8>), NetError> {
    let target = Target {
        url: url.to_owned(),
        shown: shown.to_owned(),
        size: 0,
        etag: None,
        last_modified: None,
    };
    let mut failures = 0u32;
    loop {
        let mut first = Vec::new();
        let result = fetch_once(client, &target, 0, len, stats, &mut |b| {
            first.extend_from_slice(b);
            Ok(())
        });
        match result {
            Ok(Some(head)) => return Ok((head, first)),
            Ok(None) => unreachable!("the first request always describes the file"),
            Err(e) if e.is_transient() && failures < client.max_retries => {
                let delay = backoff(client, failures);
                failures += 1;
                log::warn!("{e}; retrying in {delay:.1?}");
                std::thread::sleep(delay);
            }
            Err(e) if e.is_transient() => return Err(e.retried(failures + 1)),
            Err(e) => return Err(e),
        }
    }
}

/// The delay before the attempt after `failures` failed ones: doubling from
/// `retry-delay`, at most a minute.
fn backoff(client: &Client, failures: u32) -> Duration {
    client
        .retry_delay
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF)
}

/// One request. With `target.size == 0` it is the opening request: it may
/// get fewer bytes than asked (a small file) and returns what the answer
/// says about the file.
fn fetch_once(
    client: &Client,
    target: &Target,
    offset: u64,
    len: u64,
    stats: &Stats,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<Option<Head>, NetError> {
    let opening = target.size == 0;
    let end = offset + len - 1;
    let range = format!("{offset}-{end}");
    let mut req = client
        .agent
        .get(&target.url)
        .header("Range", format!("bytes={range}"));
    if let Some(etag) = &target.etag {
        req = req.header("If-Match", etag);
    } else if let Some(lm) = &target.last_modified {
        req = req.header("If-Unmodified-Since", lm);
    }
    for (n, v) in &client.headers {
        req = req.header(n, v);
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let resp = req.call().map_err(|e| map_error(e, target, client))?;
    let status = resp.status().as_u16();
    let url = || target.shown.clone();
    match status {
        206 => {}
        200 => {
            return Err(NetError::NoRangeSupport {
                url: url(),
                status,
                range,
            });
        }
        404 | 410 => return Err(NetError::NotFound { url: url() }),
        401 | 403 | 407 => return Err(NetError::Forbidden { url: url(), status }),
        412 => {
            return Err(NetError::Changed {
                url: url(),
                detail: "the server's ETag no longer matches (412 Precondition Failed)".into(),
            });
        }
        416 => {
            return Err(NetError::Changed {
                url: url(),
                detail: format!(
                    "the server cannot serve bytes {range} of a {}-byte file any more (416)",
                    target.size
                ),
            });
        }
        _ => {
            return Err(NetError::Status {
                url: url(),
                status,
                retried: String::new(),
            });
        }
    }
    let bad = |detail: String| NetError::BadResponse {
        url: url(),
        range: range.clone(),
        detail,
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_range =
        header("content-range").ok_or_else(|| bad("206 without a Content-Range header".into()))?;
    let (start, last, total) = parse_content_range(&content_range).ok_or_else(|| {
        bad(format!(
            "Content-Range {content_range:?} is not `bytes a-b/size`"
        ))
    })?;
    let etag = header("etag");
    let last_modified = header("last-modified");
    let expected_last = if opening {
        end.min(total.saturating_sub(1))
    } else {
        end
    };
    if !opening && total != target.size {
        return Err(NetError::Changed {
            url: url(),
            detail: format!("the file is now {total} bytes, it was {}", target.size),
        });
    }
    if !opening && target.etag.is_some() && etag.is_some() && etag != target.etag {
        return Err(NetError::Changed {
            url: url(),
            detail: format!(
                "its ETag is now {}, it was {}",
                etag.as_deref().unwrap_or(""),
                target.etag.as_deref().unwrap_or("")
            ),
        });
    }
    if start != offset || last != expected_last || total == 0 {
        return Err(bad(format!(
            "Content-Range says bytes {start}-{last}/{total}, expected {offset}-{expected_last}"
        )));
    }
    let body_len = last - start + 1;
    if let Some(cl) = header("content-length")
        && cl.trim().parse::<u64>().ok() != Some(body_len)
    {
        return Err(bad(format!(
            "Content-Length {cl} for a {body_len}-byte range"
        )));
    }
    let mut reader = resp.into_body().into_with_config().limit(body_len).reader();
    let mut buf = vec![0u8; CHUNK.min(body_len as usize).max(1)];
    let mut left = body_len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(NetError::Connection {
                    url: url(),
                    detail: format!(
                        "the response to bytes {range} ended after {} of {body_len} bytes",
                        body_len - left
                    ),
                    retried: String::new(),
                });
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(map_io(e, target, client)),
        };
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(l) = &client.limiter {
            l.take(n);
        }
        sink(&buf[..n]).map_err(|e| NetError::Connection {
            url: url(),
            detail: format!("cannot keep the received bytes: {e}"),
            retried: String::new(),
        })?;
        left -= n as u64;
    }
    // A server that sends more than the range it announced is broken.
    let mut one = [0u8; 1];
    match reader.read(&mut one) {
        Ok(0) => {}
        Ok(_) => {
            return Err(bad(format!(
                "the body is longer than the {body_len} bytes announced"
            )));
        }
        Err(e) if is_limit(&e) => {
            return Err(bad(format!(
                "the body is longer than the {body_len} bytes announced"
            )));
        }
        Err(_) => {}
    }
    Ok(opening.then_some(Head {
        size: total,
        etag,
        last_modified,
    }))
}

fn is_limit(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::BodyExceedsLimit(_)))
}

/// `bytes a-b/total` → (a, b, total).
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b && b < total).then_some((a, b, total))
}

fn map_io(e: std::io::Error, target: &Target, client: &Client) -> NetError {
    if let Some(ureq::Error::Timeout(_)) = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>())
    {
        return stalled(target, client);
    }
    if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock {
        return stalled(target, client);
    }
    NetError::Connection {
        url: target.shown.clone(),
        detail: format!("the connection failed while receiving: {e}"),
        retried: String::new(),
    }
}

fn stalled(target: &Target, client: &Client) -> NetError {
    NetError::Stalled {
        url: target.shown.clone(),
        seconds: client.read_timeout.as_secs(),
        retried: String::new(),
    }
}

fn map_error(e: ureq::Error, target: &Target, client: &Client) -> NetError {
    let url = target.shown.clone();
    let connection = |detail: String| NetError::Connection {
        url: url.clone(),
        detail,
        retried: String::new(),
    };
    match e {
        ureq::Error::Timeout(_) => stalled(target, client),
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => NetError::Redirects { url },
        ureq::Error::HostNotFound => connection("cannot resolve the host name".into()),
        ureq::Error::ConnectionFailed => connection("cannot connect".into()),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                stalled(target, client)
            }
            _ => connection(format!("the connection failed: {io}")),
        },
        ureq::Error::BadUri(d) => NetError::BadUrl { url, detail: d },
        ureq::Error::NativeTls(t) => tls_error(url, &t.to_string()),
        ureq::Error::Tls(t) => tls_error(url, t),
        other => connection(other.to_string()),
    }
}

/// Words a TLS failure by what the user can do about it.
fn tls_error(url: String, text: &str) -> NetError {
    let detail = text.to_owned();
    let has = |s: &str| text.contains(s);
    if has("certificate has expired") || has("certificate is not yet valid") {
        NetError::TlsTime { url, detail }
    } else if has("Hostname mismatch") || has("hostname mismatch") || has("IP address mismatch") {
        NetError::TlsName { url, detail }
    } else if has("unable to get local issuer certificate")
        || has("self-signed certificate")
        || has("self signed certificate")
        || has("unable to get issuer certificate")
        || has("certificate verify failed")
    {
        NetError::TlsUntrusted { url, detail }
    } else {
        NetError::Tls { url, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(parse_content_range(" bytes 5-5/6 "), Some((5, 5, 6)));
        for bad in [
            "bytes 0-99/99",
            "bytes 10-5/100",
            "bytes */100",
            "0-9/10",
            "bytes 0-9",
            "bytes a-9/10",
            "bytes 0-99/-1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }
}
