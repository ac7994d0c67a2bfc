//! Parsing `/proc/PID/maps`.

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    /// Offset into the file of `start`.
    pub offset: u64,
    /// `st_dev` of the backing file (`makedev(major, minor)`).
    pub dev: u64,
    pub inode: u64,
    /// Path or pseudo-name (`[vdso]`, `[stack]`), empty for anonymous memory. A deleted file keeps
    /// its path with the kernel's ` (deleted)` suffix removed.
    pub path: String,
    pub deleted: bool,
}

impl MapEntry {
    /// Backed by a regular file (not anonymous memory or a `[pseudo]` region).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Parses one maps line; `None` for lines that do not have the kernel's shape.
pub fn parse_line(line: &str) -> Option<MapEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = it.next()?;
    let dev = it.next()?;
    let inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let perms = perms.as_bytes();
    if perms.len() < 4 {
        return None;
    }
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms[0] == b'r',
        executable: perms[2] == b'x',
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: libc::makedev(u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?),
        inode: inode.parse().ok()?,
        path: path.to_string(),
        deleted,
    })
}

/// Parses a whole maps file, skipping malformed lines.
pub fn parse(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anon_and_deleted_entries() {
        let text = "\
55d4c1a00000-55d4c1a28000 r--p 00000000 fd:01 1316 /usr/bin/bash\n\
55d4c1a28000-55d4c1af5000 r-xp 00028000 fd:01 1316 /usr/bin/bash\n\
7f0e3c000000-7f0e3c021000 rw-p 00000000 00:00 0 \n\
7f0e3d000000-7f0e3d100000 r-xp 00001000 08:02 77 /tmp/my lib.so (deleted)\n\
7ffd5a1f0000-7ffd5a1f2000 r-xp 00000000 00:00 0                          [vdso]\n\
garbage\n";
        let e = parse(text);
        assert_eq!(e.len(), 5);
        assert_eq!(e[1].start, 0x55d4c1a28000);
        assert_eq!(e[1].offset, 0x28000);
        assert!(e[1].executable && e[1].is_file());
        assert_eq!(e[1].dev, libc::makedev(0xfd, 1));
        assert!(!e[2].is_file());
        assert_eq!(e[3].path, "/tmp/my lib.so");
        assert!(e[3].deleted);
        assert_eq!(e[4].path, "[vdso]");
        assert!(!e[4].is_file());
    }
}
