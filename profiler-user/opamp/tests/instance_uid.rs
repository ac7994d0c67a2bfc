//! The instance UID file.

use std::os::unix::fs::PermissionsExt;

use otelprof_opamp::instance_uid;

#[test]
fn created_stored_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/opamp");
    let uid = instance_uid::load_or_create(&dir).unwrap();
    let file = dir.join(instance_uid::FILE_NAME);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.trim().len(), 32, "hex: {text:?}");
    assert_eq!(instance_uid::load_or_create(&dir).unwrap(), uid, "reused");

    let assigned = instance_uid::new_v7();
    assert_ne!(assigned, uid);
    instance_uid::store(&dir, assigned).unwrap();
    assert_eq!(instance_uid::load_or_create(&dir).unwrap(), assigned);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn raw_bytes_accepted_garbage_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(instance_uid::FILE_NAME);
    std::fs::write(&file, [5u8; 16]).unwrap();
    assert_eq!(instance_uid::load_or_create(tmp.path()).unwrap(), [5u8; 16]);
    std::fs::write(&file, "not a uid").unwrap();
    let err = instance_uid::load_or_create(tmp.path()).unwrap_err();
    assert!(matches!(err, otelprof_opamp::Error::InvalidInstanceUid { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a uid", "not replaced");
}
