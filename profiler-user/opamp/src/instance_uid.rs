//! The agent's instance UID, kept in a file so it survives restarts: the spec wants it stable
//! for the life of the agent and the server keys its view of the agent on it.
//!
//! The file `instance_uid` in the given directory holds the UID as 32 lowercase hex digits and a
//! newline (readable with `cat`, greppable in server logs once hyphenated). Reading also accepts a
//! hyphenated UUID string and, for files written by other tools, exactly 16 raw bytes. The file is
//! written with mode 0600 through a temporary file and a rename, so a crash never leaves half a UID.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::Error;

/// The file name inside the directory.
pub const FILE_NAME: &str = "instance_uid";

/// A new UUID v7 (time-ordered, as the spec recommends).
pub fn new_v7() -> [u8; 16] {
    *uuid::Uuid::now_v7().as_bytes()
}

/// Reads the UID stored in `dir`, or creates `dir` (0700) and stores a new v7 UID there.
/// A file that exists but holds no valid UID is an error, not replaced: replacing it would
/// silently change the agent's identity.
pub fn load_or_create(dir: &Path) -> Result<[u8; 16], Error> {
    let path = dir.join(FILE_NAME);
    match fs::read(&path) {
        Ok(bytes) => parse(&bytes).map_err(|reason| Error::InvalidInstanceUid { path, reason }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let uid = new_v7();
            store(dir, uid)?;
            Ok(uid)
        }
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// Stores `uid` in `dir` (created with 0700 if missing), replacing any previous UID, e.g. the
/// one the server assigned with `new_instance_uid`.
pub fn store(dir: &Path, uid: [u8; 16]) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(format!("{}\n", uuid::Uuid::from_bytes(uid).simple()).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    let path = dir.join(FILE_NAME);
    fs::rename(&tmp, &path).map_err(io(&path))
}

fn parse(bytes: &[u8]) -> Result<[u8; 16], String> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let text = text.trim();
        if let Ok(u) = uuid::Uuid::try_parse(text) {
            return Ok(*u.as_bytes());
        }
    }
    if let Ok(raw) = <[u8; 16]>::try_from(bytes) {
        return Ok(raw);
    }
    Err(format!("{} bytes, expected 32 hex digits or 16 raw bytes", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_hyphenated_and_raw() {
        let uid = new_v7();
        let hex = uuid::Uuid::from_bytes(uid).simple().to_string();
        let hyph = uuid::Uuid::from_bytes(uid).hyphenated().to_string();
        assert_eq!(parse(format!("{hex}\n").as_bytes()), Ok(uid));
        assert_eq!(parse(hyph.as_bytes()), Ok(uid));
        assert_eq!(parse(&uid), Ok(uid));
        assert!(parse(b"nope").is_err());
    }

    #[test]
    fn v7_has_version_7() {
        assert_eq!(uuid::Uuid::from_bytes(new_v7()).get_version_num(), 7);
    }
}
