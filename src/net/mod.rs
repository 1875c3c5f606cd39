//! Bundles over HTTP(S): a [`crate::bundle::ReadAt`] that fetches byte
//! ranges, so the bundle reader — and with it the whole trust chain — works
//! on a URL exactly as on a file. Only the bundle reader uses this module.
//!
//! - [`HttpSource::open`] asks for the file's first 64 KiB (header,
//!   manifest, signature, usually the index) and learns its size and version;
//! - small reads (the head, the index, the image in pieces) are served from a
//!   64 KiB read-ahead window;
//! - [`crate::bundle::ReadAt::prefetch`] hands over the byte ranges the
//!   install will read next (the objects the device lacks, in file order):
//!   ranges closer than 64 KiB are merged into one request, and up to
//!   `[streaming] parallel` requests of at most 1 MiB run ahead of the reader,
//!   with at most two per worker held in memory;
//! - every request is checked and retried as [`range`] describes.
//!
//! Nothing fetched is trusted: the reader checks the signature, the index
//! hash, the image digest and every object's digest, as for a local file.

mod client;
mod error;
mod limit;
mod prefetch;
mod range;

pub use client::{Client, parse_headers};
pub use error::NetError;
pub use range::Stats;

use std::sync::{Arc, Mutex};

use crate::config::StreamingSection;

/// The read-ahead for small reads, and the size of the first request.
const READAHEAD: u64 = 64 * 1024;

/// Whether `s` names a bundle on a server rather than a file.
pub fn is_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The URL as messages show it: scheme, host and path, without user info,
/// and `?…` for a query (which may hold a token, as pre-signed URLs do).
pub fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.chars().take(200).collect();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (path, query) = match path.split_once('?') {
        Some((p, _)) => (p, "?…"),
        None => (path, ""),
    };
    let mut s = format!("{scheme}://{host}{path}{query}");
    if s.len() > 300 {
        s.truncate(300);
        s.push('…');
    }
    s
}

/// A bundle on an HTTP(S) server.
pub struct HttpSource {
    client: Client,
    target: range::Target,
    stats: Arc<Stats>,
    /// The last read-ahead window: (offset, bytes).
    window: Mutex<(u64, Vec<u8>)>,
    plan: Mutex<Option<Arc<prefetch::Prefetch>>>,
}

impl HttpSource {
    /// Opens `url`: one request for the first 64 KiB, which must be
    /// answered with 206 (range support) and tells the file's size.
    pub fn open(url: &str, streaming: &StreamingSection) -> Result<Self, NetError> {
        if !is_url(url) {
            return Err(NetError::BadUrl {
                url: shown(url),
                detail: "expected http:// or https://".into(),
            });
        }
        let client = Client::new(streaming)?;
        let stats = Arc::new(Stats::default());
        let shown = shown(url);
        let (head, first) = range::open(&client, url, &shown, READAHEAD, &stats)?;
        log::info!(
            "{shown}: {} bytes{}",
            head.size,
            head.etag
                .as_deref()
                .map(|e| format!(", ETag {e}"))
                .unwrap_or_default()
        );
        Ok(Self {
            client,
            target: range::Target {
                url: url.to_owned(),
                shown,
                size: head.size,
                etag: head.etag,
                last_modified: head.last_modified,
            },
            stats,
            window: Mutex::new((0, first)),
            plan: Mutex::new(None),
        })
    }

    /// Bytes and requests so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The URL as messages show it.
    pub fn shown_url(&self) -> &str {
        &self.target.shown
    }

    fn fetch_into(&self, buf: &mut [u8], offset: u64) -> Result<(), NetError> {
        let mut at = 0usize;
        range::fetch(
            &self.client,
            &self.target,
            offset,
            buf.len() as u64,
            &self.stats,
            &mut |b| {
                buf[at..at + b.len()].copy_from_slice(b);
                at += b.len();
                Ok(())
            },
        )
    }
}

impl crate::bundle::ReadAt for HttpSource {
    fn size(&self) -> u64 {
        self.target.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let size = self.target.size;
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= size)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} is beyond the end of the {size}-byte bundle",
                        buf.len()
                    ),
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        {
            let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            let (start, bytes) = (&w.0, &w.1);
            if offset >= *start && end <= start + bytes.len() as u64 {
                let from = (offset - start) as usize;
                buf.copy_from_slice(&bytes[from..from + buf.len()]);
                return Ok(());
            }
        }
        let plan = self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(plan) = plan
            && plan.read(buf, offset)?
        {
            return Ok(());
        }
        if (buf.len() as u64) < READAHEAD {
            let len = READAHEAD.min(size - offset);
            let mut bytes = vec![0u8; len as usize];
            self.fetch_into(&mut bytes, offset)?;
            buf.copy_from_slice(&bytes[..buf.len()]);
            *self.window.lock().unwrap_or_else(|p| p.into_inner()) = (offset, bytes);
            return Ok(());
        }
        Ok(self.fetch_into(buf, offset)?)
    }

    fn prefetch(&self, ranges: &[(u64, u64)]) {
        let plan = prefetch::Prefetch::start(
            self.client.clone(),
            self.target.clone(),
            self.stats.clone(),
            ranges,
        );
        let old = self
            .plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(plan);
        if let Some(old) = old {
            old.stop();
        }
    }

    fn transferred(&self) -> Option<u64> {
        Some(self.stats.bytes.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn origin(&self) -> Option<String> {
        Some(self.target.shown.clone())
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        if let Some(plan) = self.plan.lock().unwrap_or_else(|p| p.into_inner()).take() {
            plan.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_hide_credentials() {
        let table = [
            ("https://h.example/b/x.raucb", "https://h.example/b/x.raucb"),
            ("http://user:pw@h:8080/x.raucb", "http://h:8080/x.raucb"),
            (
                "https://s3.example/b/x.raucb?X-Amz-Signature=secret",
                "https://s3.example/b/x.raucb?…",
            ),
            ("https://h", "https://h"),
        ];
        for (url, want) in table {
            assert_eq!(shown(url), want);
        }
        assert!(is_url("HTTPS://x/y"));
        assert!(!is_url("/tmp/x.raucb"));
        assert!(!is_url("file:///x"));
    }
}
