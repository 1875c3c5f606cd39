//! Helpers for the setup-root mount tests: a store with objects and a
//! composefs image made with the composefs crate, and mount table lookups.
#![allow(dead_code)]

use std::path::Path;

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};

/// Mount tests need root; they fail (never skip) without it.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test mounts file systems and must run as root"
    );
}

/// One file of a test image: (path, content).
pub type TestFile = (&'static str, Vec<u8>);

/// Writes `files` as objects into `store/objects` and a composefs (V1)
/// image of them into `store/images/<digest>`; returns the image digest.
/// The image also has /etc, /var and /store directories.
pub fn make_store(store: &Path, files: &[TestFile]) -> didymos::Digest {
    let mut dump = String::from("/ 0 40755 2 0 0 0 1000.0 - - -\n");
    let mut dirs = vec!["/etc".to_owned(), "/var".to_owned(), "/store".to_owned()];
    for (path, _) in files {
        for d in Path::new(path).ancestors().skip(1) {
            let d = d.to_string_lossy().into_owned();
            if d != "/" && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    dirs.sort();
    for d in &dirs {
        dump.push_str(&format!("{d} 0 40755 2 0 0 0 1000.0 - - -\n"));
    }
    let mut lines = Vec::new();
    for (path, content) in files {
        let digest: Sha256HashValue = composefs::fsverity::compute_verity(content);
        let hex = digest.to_hex();
        let obj = store.join("objects").join(&hex[..2]).join(&hex[2..]);
        std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
        std::fs::write(&obj, content).unwrap();
        lines.push(format!(
            "{path} {} 100644 1 0 0 0 1000.0 {}/{} - {hex}\n",
            content.len(),
            &hex[..2],
            &hex[2..]
        ));
    }
    lines.sort();
    for l in lines {
        dump.push_str(&l);
    }
    let fs = composefs::dumpfile::dumpfile_to_validated_filesystem::<Sha256HashValue>(&dump)
        .unwrap_or_else(|e| panic!("dumpfile {dump}: {e:#}"));
    let image = composefs::erofs::writer::mkfs_erofs_versioned(
        &fs,
        composefs::erofs::format::FormatVersion::V1,
    );
    let digest: Sha256HashValue = composefs::fsverity::compute_verity(&image);
    let digest = didymos::Digest::from_hex(&digest.to_hex()).unwrap();
    std::fs::create_dir_all(store.join("images")).unwrap();
    std::fs::write(store.join("images").join(digest.to_hex()), &image).unwrap();
    digest
}

/// A file's content the tests recognise.
pub fn content(tag: &str, len: usize) -> Vec<u8> {
    tag.bytes().cycle().take(len).collect()
}

/// The mount at exactly `target`, from /proc/self/mountinfo:
/// (fstype, source, mount options, super options).
pub fn mount_at(target: &Path) -> Option<(String, String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.canonicalize().ok()?;
    let mut found = None;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if Path::new(l[4]) == target {
            // The last one listed is the one on top.
            found = Some((
                r[0].to_owned(),
                r[1].to_owned(),
                l[5].to_owned(),
                r.get(2).unwrap_or(&"").to_string(),
            ));
        }
    }
    found
}
