//! Fetching a signed channel from where `[updates] channel` says (an
//! `http(s)://` URL, a `file://` URL or a path), and resolving its bundle
//! locations, which may be relative to the channel's own location.

use std::path::{Path, PathBuf};

use super::channel::document::MAX_CHANNEL_SIZE;
use super::http::Http;
use super::installer::Location;

/// The signature block's share of a channel file's limit.
const MAX_FILE: u64 = MAX_CHANNEL_SIZE + 64 * 1024;

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn file_path(s: &str) -> Option<PathBuf> {
    s.strip_prefix("file://").map(PathBuf::from)
}

/// The channel file's bytes.
pub fn fetch(http: &Http, location: &str) -> Result<Vec<u8>, String> {
    if is_url(location) {
        let r = http
            .get(location, &[], MAX_FILE)
            .map_err(|e| e.to_string())?;
        if !r.ok() {
            return Err(format!(
                "GET {location}: the server answered {}; check [updates] channel",
                r.status
            ));
        }
        return Ok(r.body);
    }
    let path = file_path(location).unwrap_or_else(|| PathBuf::from(location));
    crate::util::read_bounded(&path, MAX_FILE)
        .map_err(|e| format!("cannot read the channel {}: {e}", path.display()))
}

/// Resolves a release's bundle location against the channel's location.
pub fn resolve(channel: &str, bundle: &str) -> Location {
    if is_url(bundle) {
        return Location::Url(bundle.to_owned());
    }
    if let Some(p) = file_path(bundle) {
        return Location::Path(p);
    }
    if is_url(channel) {
        let url = if bundle.starts_with('/') {
            // Absolute path on the same server.
            let scheme_end = channel.find("://").map_or(0, |i| i + 3);
            let host_end = channel[scheme_end..]
                .find('/')
                .map_or(channel.len(), |i| scheme_end + i);
            format!("{}{bundle}", &channel[..host_end])
        } else {
            let dir = channel.rsplit_once('/').map_or(channel, |(d, _)| d);
            format!("{dir}/{bundle}")
        };
        return Location::Url(url);
    }
    let bundle_path = Path::new(bundle);
    if bundle_path.is_absolute() {
        return Location::Path(bundle_path.to_owned());
    }
    let channel_path = file_path(channel).unwrap_or_else(|| PathBuf::from(channel));
    Location::Path(
        channel_path
            .parent()
            .unwrap_or(Path::new("/"))
            .join(bundle_path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_locations_resolve_against_the_channel() {
        let c = "https://cdn.example.com/acme/stable.channel";
        assert_eq!(
            resolve(c, "bundles/2.0.raucb"),
            Location::Url("https://cdn.example.com/acme/bundles/2.0.raucb".into())
        );
        assert_eq!(
            resolve(c, "/mirror/2.0.raucb"),
            Location::Url("https://cdn.example.com/mirror/2.0.raucb".into())
        );
        assert_eq!(
            resolve(c, "http://other/2.0.raucb"),
            Location::Url("http://other/2.0.raucb".into())
        );
        assert_eq!(
            resolve("/media/usb/stable.channel", "2.0.raucb"),
            Location::Path("/media/usb/2.0.raucb".into())
        );
        assert_eq!(
            resolve("file:///media/usb/stable.channel", "file:///data/2.0.raucb"),
            Location::Path("/data/2.0.raucb".into())
        );
        assert_eq!(
            resolve(c, "/data/local.raucb"),
            Location::Url("https://cdn.example.com/data/local.raucb".into())
        );
    }
}
