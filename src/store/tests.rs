use std::collections::BTreeSet;

use super::*;
use crate::config::VerityPolicy;

fn insert(store: &Store, data: &[u8]) -> Digest {
    let d = image::digest_bytes(data);
    store
        .insert_object(&d, |w| {
            w.write_all(data)
                .map_err(|e| StoreError::Source(e.to_string()))
        })
        .unwrap();
    d
}

#[test]
fn insert_is_atomic_and_named_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_for_writing(dir.path(), VerityPolicy::Auto).unwrap();
    let d = insert(&store, b"hello objects");
    assert_eq!(
        std::fs::read(store.object_path(&d)).unwrap(),
        b"hello objects"
    );
    assert_eq!(store.list_objects().unwrap(), BTreeSet::from([d]));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn failed_fill_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_for_writing(dir.path(), VerityPolicy::Auto).unwrap();
    let d = Digest([1; 32]);
    let err = store
        .insert_object(&d, |w| {
            w.write_all(b"partial").unwrap();
            Err(StoreError::Source("digest mismatch".into()))
        })
        .unwrap_err();
    assert!(err.to_string().contains("digest mismatch"));
    assert!(!store.has_object(&d));
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn image_must_match_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_for_writing(dir.path(), VerityPolicy::Off).unwrap();
    let err = store.insert_image(&Digest([2; 32]), b"not it").unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(store.list_images().unwrap().is_empty());
}

#[test]
fn require_policy_refuses_a_store_without_verity() {
    // The development machines' kernels and tmpfs have no fs-verity; where a
    // filesystem has it, `require` opens fine, which the VM tier covers.
    let dir = tempfile::tempdir().unwrap();
    match Store::open_for_writing(dir.path(), VerityPolicy::Require) {
        Err(StoreError::VerityUnsupported { .. }) => {}
        Ok(s) => assert!(s.uses_verity()),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn fsck_names_a_corrupt_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_for_writing(dir.path(), VerityPolicy::Off).unwrap();
    let good = insert(&store, b"good object");
    let bad = insert(&store, b"object to corrupt");
    std::fs::write(store.object_path(&bad), b"object to corrupT").unwrap();
    let report = store.fsck(&[]).unwrap();
    assert_eq!(report.objects_checked, 2);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let msg = report.problems[0].to_string();
    assert!(
        msg.contains(&bad.to_hex()) && !msg.contains(&good.to_hex()),
        "{msg}"
    );
}

#[test]
fn clean_tmp_removes_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_for_writing(dir.path(), VerityPolicy::Off).unwrap();
    std::fs::write(dir.path().join("tmp/half-written"), b"x").unwrap();
    assert_eq!(store.clean_tmp().unwrap(), 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
