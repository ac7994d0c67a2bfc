//! A file that rotates by size, named as the Collector's file exporter names its backups
//! (lumberjack's scheme): `data.json` becomes `data-2022-09-14T05-02-14.173.json` (UTC unless
//! `localtime`) and a new `data.json` starts. At most `max_backups` backups are kept (0: all),
//! and none older than `max_days` (by modification time; 0: any age).

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// When and how to rotate.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub max_bytes: u64,
    pub max_backups: usize,
    pub max_age: Option<Duration>,
    pub localtime: bool,
}

/// An open output file and what rotating it needs.
pub struct RotatingFile {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    policy: Option<Policy>,
    /// Milliseconds since the epoch of the last backup's name, so two rotations within one
    /// millisecond still get distinct names.
    last_stamp_ms: u64,
}

impl RotatingFile {
    /// Opens `path` (truncated unless `append`), creating missing parent directories.
    pub fn open(path: &Path, append: bool, policy: Option<Policy>) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open(path, append)?;
        let size = if append { file.metadata()?.len() } else { 0 };
        Ok(Self { path: path.to_path_buf(), file: BufWriter::new(file), size, policy, last_stamp_ms: 0 })
    }

    /// Writes one record whole, rotating first when it would push the file past its limit.
    pub fn write_record(&mut self, record: &[u8]) -> std::io::Result<()> {
        if let Some(p) = &self.policy {
            if self.size > 0 && self.size + record.len() as u64 > p.max_bytes {
                self.rotate()?;
            }
        }
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(policy) = self.policy.clone() else { return Ok(()) };
        self.file.flush()?;
        let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let stamp_ms = now_ms.max(self.last_stamp_ms + 1);
        self.last_stamp_ms = stamp_ms;
        let backup = backup_path(&self.path, stamp_ms, policy.localtime);
        std::fs::rename(&self.path, &backup)?;
        self.file = BufWriter::new(open(&self.path, false)?);
        self.size = 0;
        if let Err(e) = prune(&self.path, &policy) {
            tracing::warn!("removing old backups of {}: {e}", self.path.display());
        }
        Ok(())
    }
}

fn open(path: &Path, append: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.open(path)
}

/// `dir/name` and the extension the timestamp goes before (`.json`; empty when none).
fn split_name(path: &Path) -> (PathBuf, String, String) {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (dir, name[..i].to_string(), name[i..].to_string()),
        _ => (dir, name, String::new()),
    }
}

/// The seconds east of UTC of local time at `secs` since the epoch.
fn local_offset_secs(secs: i64) -> i64 {
    let t = secs as libc::time_t;
    // SAFETY: `tm` is a plain C struct that localtime_r fills; both pointers are valid for
    // the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}

/// `2022-09-14T05-02-14.173`: RFC 3339 with `-` for `:`, in UTC or local wall-clock time.
pub fn stamp(ms: u64, localtime: bool) -> String {
    let mut t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    if localtime {
        let off = local_offset_secs((ms / 1000) as i64);
        t = if off >= 0 { t + Duration::from_secs(off as u64) } else { t - Duration::from_secs(off.unsigned_abs()) };
    }
    humantime::format_rfc3339_millis(t).to_string().trim_end_matches('Z').replace(':', "-")
}

fn backup_path(path: &Path, ms: u64, localtime: bool) -> PathBuf {
    let (dir, stem, ext) = split_name(path);
    dir.join(format!("{stem}-{}{ext}", stamp(ms, localtime)))
}

/// Whether `name` is a backup of `stem…ext` (the stamp is exactly where and as long as ours).
fn is_backup(name: &str, stem: &str, ext: &str) -> bool {
    let Some(mid) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('-')).and_then(|r| r.strip_suffix(ext)) else {
        return false;
    };
    let b = mid.as_bytes();
    b.len() == 23 && b[10] == b'T' && b[19] == b'.' && b.iter().all(|c| c.is_ascii_digit() || b"-T.".contains(c))
}

/// The backups of `path`, newest first (the stamps sort as text).
pub fn backups(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (dir, stem, ext) = split_name(path);
    let listing = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
    let mut found: Vec<PathBuf> = std::fs::read_dir(listing)?
        .filter_map(Result::ok)
        .filter(|e| is_backup(&e.file_name().to_string_lossy(), &stem, &ext))
        .map(|e| dir.join(e.file_name()))
        .collect();
    found.sort();
    found.reverse();
    Ok(found)
}

fn prune(path: &Path, policy: &Policy) -> std::io::Result<()> {
    let now = SystemTime::now();
    for (i, b) in backups(path)?.into_iter().enumerate() {
        let too_many = policy.max_backups > 0 && i >= policy.max_backups;
        let too_old = policy.max_age.is_some_and(|age| {
            let modified = std::fs::metadata(&b).and_then(|m| m.modified()).unwrap_or(now);
            now.duration_since(modified).unwrap_or_default() > age
        });
        if too_many || too_old {
            std::fs::remove_file(&b)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_follow_the_collector() {
        let ms = 1_663_131_734_173; // 2022-09-14T05:02:14.173Z
        assert_eq!(
            backup_path(Path::new("/d/data.json"), ms, false),
            Path::new("/d/data-2022-09-14T05-02-14.173.json")
        );
        assert_eq!(backup_path(Path::new("file"), ms, false), Path::new("file-2022-09-14T05-02-14.173"));
        assert!(is_backup("data-2022-09-14T05-02-14.173.json", "data", ".json"));
        assert!(!is_backup("data-old.json", "data", ".json"));
        assert!(!is_backup("data.json", "data", ".json"));
    }
}
