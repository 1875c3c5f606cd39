//! Receiving the objects of a bundle on a server: what to fetch, ahead of
//! the writer, and how an interrupted download resumes.
//!
//! - Objects already in the store are the checkpoints: an install started
//!   again fetches only what is still missing. Objects are committed every
//!   [`COMMIT_BYTES`] (not every 256 MiB, as from a file), and what is
//!   complete is committed before an error or a cancel is reported, so a
//!   dropped link, a SIGKILL or a power cut costs at most the objects in
//!   flight.
//! - Objects of [`SPOOL_MIN`] stored bytes or more are received into
//!   `tmp/partial/<bundle>-<digest>` first (synced every
//!   [`SPOOL_SYNC`]), which survives a restart: the next attempt asks only
//!   for the bytes after what is there. The file is decoded and checked
//!   like bytes read from the bundle; one that does not check out is
//!   removed and fetched again.
//! - The byte ranges of everything still needed are handed to the source
//!   at once ([`ReadAt::prefetch`]), so it can merge and parallelise.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{CancelToken, InstallError};
use crate::bundle::{BundleError, FileSource, IndexEntry, ReadAt, Region, VerifiedBundle};
use crate::store::{ObjectBatch, Store, StoreError};

/// Commit objects received from a server this often.
pub const COMMIT_BYTES: u64 = 4 * 1024 * 1024;
/// Objects at least this large are received into `tmp/partial/` first.
pub const SPOOL_MIN: u64 = 4 * 1024 * 1024;
/// A partial object is synced this often.
const SPOOL_SYNC: u64 = 8 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

/// Writes `stored bytes → store` given a source and the offset there.
pub type Decode<'d> = dyn FnMut(&dyn ReadAt, u64, &mut dyn Write) -> Result<(), StoreError> + 'd;

pub struct Fetch<'a> {
    store: &'a Store,
    source: &'a dyn ReadAt,
    remote: bool,
    /// Names this bundle's partial objects (the start of its index hash).
    key: String,
    total: u64,
    start: u64,
}

impl<'a> Fetch<'a> {
    /// For a remote bundle: drops partial objects of other bundles, finds
    /// what was received already, and hands the rest to the source.
    pub fn plan(
        store: &'a Store,
        bundle: &'a VerifiedBundle,
        to_write: &[IndexEntry],
    ) -> Result<Self, InstallError> {
        let source = &**bundle.source();
        let key = bundle.manifest().objects.index_sha256[..16].to_ascii_lowercase();
        let remote = source.origin().is_some();
        let mut fetch = Self {
            store,
            source,
            remote,
            key,
            total: 0,
            start: source.transferred().unwrap_or(0),
        };
        if !remote {
            return Ok(fetch);
        }
        store.clean_partials(Some(&fetch.key))?;
        let mut resumed = 0u64;
        let mut ranges: Vec<(u64, u64)> = to_write
            .iter()
            .map(|e| {
                let have = if spooled(e) {
                    partial_len(&store.partial_path(&fetch.key, &e.digest)).min(e.stored_size)
                } else {
                    0
                };
                resumed += have;
                (e.offset + have, e.stored_size - have)
            })
            .collect();
        // The members of a pack share its bytes: fetched once.
        ranges.dedup();
        fetch.total = ranges.iter().map(|r| r.1).sum();
        if resumed > 0 {
            log::info!(
                "resuming: {} of partly received objects are already here",
                super::engine::human(resumed)
            );
        }
        source.prefetch(&ranges);
        Ok(fetch)
    }

    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The bytes still to fetch, for a remote bundle.
    pub fn total(&self) -> Option<u64> {
        self.remote.then_some(self.total)
    }

    /// "; fetched X of Y at Z/s" for progress messages (remote bundles).
    pub fn describe_progress(&self, elapsed: std::time::Duration) -> String {
        if !self.remote {
            return String::new();
        }
        let got = self
            .source
            .transferred()
            .unwrap_or(0)
            .saturating_sub(self.start);
        let rate = got as f64 / elapsed.as_secs_f64().max(0.001);
        format!(
            "; fetched {} of {} at {}/s",
            super::engine::human(got),
            super::engine::human(self.total),
            super::engine::human(rate as u64)
        )
    }

    /// Writes one object into `batch`, spooling it first when it is large
    /// and remote.
    pub fn write_object(
        &self,
        cancel: &CancelToken,
        entry: &IndexEntry,
        batch: &mut ObjectBatch<'_>,
        decode: &mut Decode<'_>,
    ) -> Result<u64, InstallError> {
        if !self.remote || !spooled(entry) {
            return Ok(batch.add(&entry.digest, |w| decode(self.source, entry.offset, w))?);
        }
        let path = self.store.partial_path(&self.key, &entry.digest);
        self.spool(cancel, entry, &path)?;
        let file = File::open(&path).map_err(|source| InstallError::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
        let spooled = FileSource::new(file).map_err(|source| InstallError::Io {
            context: format!("cannot open {}", path.display()),
            source,
        })?;
        let added = batch.add(&entry.digest, |w| decode(&spooled, 0, w));
        if added.is_err() {
            // Whatever is wrong with it (a power cut mid-write), it is not
            // kept: the next attempt fetches the object whole.
            let _ = std::fs::remove_file(&path);
        }
        Ok(added?)
    }

    /// Appends the stored bytes not received yet to `path`.
    fn spool(
        &self,
        cancel: &CancelToken,
        entry: &IndexEntry,
        path: &Path,
    ) -> Result<(), InstallError> {
        let io = |context: &str, source| InstallError::Io {
            context: format!("{context} {}", path.display()),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory of", e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("cannot open", e))?;
        let mut at = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        if at > entry.stored_size {
            file.set_len(0).map_err(|e| io("cannot truncate", e))?;
            at = 0;
        }
        let mut buf = vec![0u8; CHUNK];
        let mut unsynced = 0u64;
        while at < entry.stored_size {
            if cancel.is_cancelled() {
                let _ = file.sync_data();
                return Err(InstallError::Cancelled);
            }
            let n = (entry.stored_size - at).min(CHUNK as u64) as usize;
            self.source
                .read_exact_at(&mut buf[..n], entry.offset + at)
                .map_err(|source| {
                    let _ = file.sync_data();
                    InstallError::Bundle(BundleError::Read {
                        region: Region::Object(entry.digest),
                        source,
                    })
                })?;
            file.write_all_at(&buf[..n], at)
                .map_err(|e| InstallError::Store(StoreError::from_io(path, "cannot write", e)))?;
            at += n as u64;
            unsynced += n as u64;
            if unsynced >= SPOOL_SYNC {
                file.sync_data().map_err(|e| io("cannot sync", e))?;
                unsynced = 0;
            }
        }
        file.sync_data().map_err(|e| io("cannot sync", e))
    }

    /// Once every object is committed, the partial files are not needed.
    pub fn finish(&self) -> Result<(), InstallError> {
        if self.remote {
            self.store.clean_partials(None)?;
        }
        Ok(())
    }
}

/// Whether an object is received into `tmp/partial/` first: a large one,
/// not a pack member (a pack, at most 8 MiB, is fetched whole, and decoded
/// once for all its members the device lacks).
fn spooled(e: &IndexEntry) -> bool {
    e.stored_size >= SPOOL_MIN && e.encoding != crate::bundle::Encoding::Packed
}

fn partial_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
