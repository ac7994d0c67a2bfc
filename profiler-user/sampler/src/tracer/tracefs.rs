//! tracefs: where tracepoint IDs and record layouts are published.
//!
//! aya finds tracepoints through tracefs, which some systems (this VM, minimal containers) do not
//! mount. Record layouts differ between kernels (`sched_process_fork` has `char[16]` comms before
//! 6.x and `__data_loc` strings since), so offsets are read from the event's `format` file.

use std::path::{Path, PathBuf};

const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

fn usable(p: &Path) -> bool {
    p.join("events").is_dir()
}

/// The tracefs mount point in use, if any.
pub fn mount_point() -> Option<PathBuf> {
    MOUNTS.iter().map(PathBuf::from).find(|p| usable(p))
}

/// Mounts tracefs at /sys/kernel/tracing when no usable mount exists.
pub fn ensure_mounted() -> Result<(), String> {
    if mount_point().is_some() {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; mount(2) has no other preconditions.
    let rc = unsafe { libc::mount(c"tracefs".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({err}); \
             run `mount -t tracefs tracefs /sys/kernel/tracing`"
        ));
    }
    tracing::info!("mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

/// Byte offset of `field` in the records of tracepoint `category/event`.
pub fn field_offset(category: &str, event: &str, field: &str) -> Result<u32, String> {
    let root = mount_point().ok_or("tracefs is not mounted")?;
    let path = root.join("events").join(category).join(event).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_field_offset(&text, field).ok_or_else(|| format!("{}: no field `{field}`", path.display()))
}

/// Finds `offset:N;` on the line declaring `field` in a tracefs `format` file.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.split(';').find_map(|kv| kv.trim().strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    #[test]
    fn parses_both_fork_layouts() {
        let new = "\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(new, "child_pid"), Some(20));
        let old = "\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(old, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(old, "child_comm"), Some(28));
        assert_eq!(parse_field_offset(old, "parent_pid"), None);
    }
}
