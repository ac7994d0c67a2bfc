//! `.eh_frame` / `.debug_frame` → sorted [`UnwindRow`]s, with gimli.
//!
//! Every FDE's table is evaluated row by row; each row becomes one [`UnwindRow`] (consecutive
//! rows with the same rules merge), and the end of an FDE that is not followed directly by
//! another one gets a `cfa::NONE` row, so a lookup never borrows the rule of an unrelated
//! function. Rules the BPF unwinder cannot evaluate become `cfa::UNSUPPORTED` (fall back to frame
//! pointers there) rather than errors: one odd function must not cost the whole file.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection,
};
use object::{Object, ObjectSection};
use profiler_common::{cfa, rbp, UnwindRow};

/// DWARF register numbers on x86_64.
const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// Why a file has no table. Logged once per file; the file then falls back to frame pointers.
#[derive(Debug, thiserror::Error)]
pub enum UnwindError {
    #[error("not an ELF file: {0}")]
    Elf(#[from] object::Error),
    #[error("no .eh_frame or .debug_frame section")]
    NoCfi,
    #[error("malformed call frame information: {0}")]
    Dwarf(#[from] gimli::Error),
    #[error("unsupported architecture {0:?} (x86_64 only for now)")]
    Arch(object::Architecture),
}

/// A compiled table: rows sorted by `pc`, plus counts that say how good it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    pub rows: Vec<UnwindRow>,
    /// FDEs evaluated.
    pub fdes: usize,
    /// Rows whose CFA rule the unwinder cannot evaluate.
    pub unsupported: usize,
}

impl UnwindTable {
    /// The row that applies at `pc` (file-relative), if any.
    pub fn lookup(&self, pc: u64) -> Option<&UnwindRow> {
        let i = self.rows.partition_point(|r| r.pc <= pc).checked_sub(1)?;
        let row = &self.rows[i];
        (row.cfa != cfa::NONE).then_some(row)
    }

    /// Bytes the rows take (what the BPF map holds).
    pub fn bytes(&self) -> usize {
        self.rows.len() * size_of::<UnwindRow>()
    }
}

/// glibc's PLT CFA expression: `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and;
/// DW_OP_lit{10,11}; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`. Returns the threshold.
fn plt_threshold(expr: &[u8]) -> Option<i32> {
    match expr {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit, 0x2a, 0x33, 0x24, 0x22] if (0x30..=0x3f).contains(lit) => {
            Some((*lit - 0x30) as i32)
        }
        _ => None,
    }
}

/// The unwinder's view of one CFI row: (cfa kind, cfa offset, rbp kind, rbp offset).
fn convert<S: gimli::UnwindContextStorage<usize>>(
    row: &gimli::UnwindTableRow<usize, S>,
    section: &[u8],
    signal: bool,
) -> (u8, i32, u8, i16) {
    let (rbp_kind, rbp_offset) = match row.register(RBP) {
        Some(RegisterRule::Offset(o)) if i16::try_from(o).is_ok() => (rbp::AT_CFA, o as i16),
        _ => (rbp::UNCHANGED, 0),
    };
    if signal {
        // `__restore_rt`: the registers come from the ucontext, not from these rules.
        return (cfa::SIGNAL, 0, rbp::UNCHANGED, 0);
    }
    match row.register(RA) {
        Some(RegisterRule::Offset(-8)) => {}
        // The outermost frame (`_start`, thread start) marks its return address undefined.
        Some(RegisterRule::Undefined) => return (cfa::END, 0, rbp_kind, rbp_offset),
        _ => return (cfa::UNSUPPORTED, 0, rbp_kind, rbp_offset),
    }
    match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => match (*register, i32::try_from(*offset)) {
            (RSP, Ok(o)) => (cfa::RSP, o, rbp_kind, rbp_offset),
            (RBP, Ok(o)) => (cfa::RBP, o, rbp_kind, rbp_offset),
            _ => (cfa::UNSUPPORTED, 0, rbp_kind, rbp_offset),
        },
        CfaRule::Expression(e) => {
            let bytes = section.get(e.offset..e.offset.saturating_add(e.length)).unwrap_or_default();
            match plt_threshold(bytes) {
                Some(t) => (cfa::PLT, t, rbp_kind, rbp_offset),
                None => (cfa::UNSUPPORTED, 0, rbp_kind, rbp_offset),
            }
        }
    }
}

/// One FDE's range and rows.
type Fde = (u64, u64, Vec<UnwindRow>);

/// Evaluates every FDE of one CFI section into `out`.
fn fdes<'a, Section: UnwindSection<EndianSlice<'a, LittleEndian>>>(
    section: &Section,
    raw: &'a [u8],
    bases: &BaseAddresses,
    out: &mut Vec<Fde>,
    unsupported: &mut usize,
) -> Result<(), gimli::Error> {
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else { continue };
        // A bad FDE costs only itself.
        let Ok(fde) = partial.parse(Section::cie_from_offset) else { continue };
        let signal = fde.cie().is_signal_trampoline();
        let (start, end) = (fde.initial_address(), fde.end_address());
        if end <= start {
            continue;
        }
        let mut rows: Vec<UnwindRow> = Vec::new();
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else { continue };
        while let Ok(Some(row)) = table.next_row() {
            // Instructions may advance to (or past) the FDE's end; such rows describe nothing of
            // this FDE and would shadow the next one's first row.
            if row.start_address() >= end {
                break;
            }
            let (c, off, r, roff) = convert(row, raw, signal);
            if c == cfa::UNSUPPORTED {
                *unsupported += 1;
            }
            match rows.last() {
                Some(last) if (last.cfa, last.cfa_offset, last.rbp, last.rbp_offset) == (c, off, r, roff) => {}
                _ => {
                    rows.push(UnwindRow { pc: row.start_address(), cfa_offset: off, rbp_offset: roff, cfa: c, rbp: r })
                }
            }
        }
        out.push((start, end, rows));
    }
    Ok(())
}

/// Compiles the CFI of the ELF file `data` (x86_64) into a table. `.eh_frame` wins over
/// `.debug_frame` where both describe a pc.
pub fn compile(data: &[u8]) -> Result<UnwindTable, UnwindError> {
    let file = object::File::parse(data)?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(UnwindError::Arch(file.architecture()));
    }
    let text = file.section_by_name(".text").map(|s| s.address()).unwrap_or(0);
    let eh = file.section_by_name(".eh_frame");
    let dbg = file.section_by_name(".debug_frame");
    if eh.is_none() && dbg.is_none() {
        return Err(UnwindError::NoCfi);
    }
    let mut all: Vec<Fde> = Vec::new();
    let mut unsupported = 0;
    if let Some(s) = &eh {
        let raw = s.uncompressed_data()?;
        let bases = BaseAddresses::default().set_eh_frame(s.address()).set_text(text);
        fdes(&EhFrame::new(&raw, LittleEndian), &raw, &bases, &mut all, &mut unsupported)?;
    }
    if let Some(s) = &dbg {
        let raw = s.uncompressed_data()?;
        let mut section = DebugFrame::new(&raw, LittleEndian);
        section.set_address_size(8);
        let mut debug = Vec::new();
        fdes(&section, &raw, &BaseAddresses::default(), &mut debug, &mut unsupported)?;
        // Only where .eh_frame says nothing. Its FDEs do not overlap each other, so the last one
        // starting before `e` is the only one that can overlap [s, e).
        let mut covered: Vec<(u64, u64)> = all.iter().map(|(s, e, _)| (*s, *e)).collect();
        covered.sort_unstable();
        let overlaps = |s: u64, e: u64| {
            let i = covered.partition_point(|(cs, _)| *cs < e);
            i > 0 && covered[i - 1].1 > s
        };
        all.extend(debug.into_iter().filter(|(s, e, _)| !overlaps(*s, *e)));
    }
    all.sort_by_key(|(s, _, _)| *s);
    // FDEs that overlap an earlier one (broken or hostile files) would interleave their rows and
    // break the sorted order the BPF binary search relies on: the first one wins.
    let mut covered_until = 0u64;
    all.retain(|(start, end, _)| {
        let keep = *start >= covered_until;
        if keep {
            covered_until = *end;
        }
        keep
    });
    let fde_count = all.len();
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(all.iter().map(|(_, _, r)| r.len() + 1).sum());
    for (i, (_, end, fde_rows)) in all.iter().enumerate() {
        rows.extend(fde_rows.iter().copied());
        if all.get(i + 1).map(|(s, _, _)| *s) != Some(*end) {
            rows.push(UnwindRow { pc: *end, ..Default::default() });
        }
    }
    // An FDE's first row may sit where the previous one's closing `NONE` row is.
    rows.dedup_by_key(|r| r.pc);
    Ok(UnwindTable { rows, fdes: fde_count, unsupported })
}

#[cfg(test)]
pub(super) mod tests {
    use std::{collections::HashMap, path::Path, process::Command};

    use super::*;

    /// Expected rules per pc, from binutils' `readelf --debug-dump=frames-interp` (independent of
    /// gimli): (pc, cfa column, rbp column, ra column, signal frame).
    fn readelf_rows(path: &Path, section: &str) -> Vec<(u64, String, String, String, bool)> {
        let out =
            Command::new("readelf").arg("--debug-dump=frames-interp").arg(path).output().expect("readelf (binutils)");
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.split("Contents of the ").find(|t| t.starts_with(section)).unwrap_or("");
        let mut rows = Vec::new();
        // CIE offset -> (signal frame, initial cfa, rbp, ra)
        let mut cies: HashMap<String, (bool, String, String, String)> = HashMap::new();
        let mut current_cie: Option<String> = None;
        let mut columns: Vec<String> = Vec::new();
        // (start, end, cie, rows so far)
        type Open = Option<(u64, u64, String, usize)>;
        let mut fde: Open = None;
        let close = |fde: &mut Open, rows: &mut Vec<_>, cies: &HashMap<_, (bool, String, String, String)>| {
            if let Some((start, _, cie, 0)) = fde.take() {
                // No rows printed: the CIE's initial rules apply.
                let (signal, c, r, ra) = cies[&cie].clone();
                rows.push((start, c, r, ra, signal));
            }
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 4 && f[3] == "CIE" {
                close(&mut fde, &mut rows, &cies);
                let signal = f.get(4).is_some_and(|a| a.trim_matches('"').contains('S'));
                cies.insert(f[0].to_string(), (signal, "rsp+8".into(), "u".into(), "c-8".into()));
                current_cie = Some(f[0].to_string());
            } else if f.len() >= 6 && f[3] == "FDE" {
                close(&mut fde, &mut rows, &cies);
                current_cie = None;
                let cie = f[4].trim_start_matches("cie=").to_string();
                let (start, end) = f[5].trim_start_matches("pc=").split_once("..").unwrap();
                let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
                fde = Some((start, end, cie, 0));
            } else if f.first() == Some(&"LOC") {
                columns = f.iter().map(|c| c.to_string()).collect();
            } else if !f.is_empty()
                && f.len() == columns.len()
                && f[0].len() == 16
                && u64::from_str_radix(f[0], 16).is_ok()
            {
                let col =
                    |name: &str| columns.iter().position(|c| c == name).map(|i| f[i].to_string()).unwrap_or("u".into());
                let pc = u64::from_str_radix(f[0], 16).unwrap();
                if let Some(cie) = &current_cie {
                    let e = cies.get_mut(cie).unwrap();
                    (e.1, e.2, e.3) = (col("CFA"), col("rbp"), col("ra"));
                } else if let Some(fd) = fde.as_mut().filter(|fd| pc < fd.1) {
                    // (readelf also prints rows the instructions place at or past the FDE's end.)
                    rows.push((pc, col("CFA"), col("rbp"), col("ra"), cies[&fd.2].0));
                    fd.3 += 1;
                }
            }
        }
        close(&mut fde, &mut rows, &cies);
        rows
    }

    fn check_against_readelf(path: &Path, section: &str) -> (usize, UnwindTable) {
        let table = compile(&std::fs::read(path).unwrap()).unwrap();
        let expected = readelf_rows(path, section);
        assert!(!expected.is_empty(), "readelf printed no rows for {}", path.display());
        for (pc, cfa_col, rbp_col, ra_col, signal) in &expected {
            let row = table.lookup(*pc).unwrap_or_else(|| panic!("{}: no row at {pc:#x}", path.display()));
            let what =
                format!("{} at {pc:#x}: readelf {cfa_col} rbp={rbp_col} ra={ra_col}, ours {row:?}", path.display());
            if *signal {
                assert_eq!(row.cfa, cfa::SIGNAL, "{what}");
                continue;
            }
            if ra_col == "u" {
                assert_eq!(row.cfa, cfa::END, "{what}");
                continue;
            }
            match cfa_col.split_once('+') {
                Some(("rsp", o)) => assert_eq!((row.cfa, row.cfa_offset), (cfa::RSP, o.parse().unwrap()), "{what}"),
                Some(("rbp", o)) => assert_eq!((row.cfa, row.cfa_offset), (cfa::RBP, o.parse().unwrap()), "{what}"),
                _ if cfa_col == "exp" => assert!(row.cfa == cfa::PLT || row.cfa == cfa::UNSUPPORTED, "{what}"),
                _ => assert_eq!(row.cfa, cfa::UNSUPPORTED, "{what}"),
            }
            match rbp_col.strip_prefix("c") {
                Some(o) if o.starts_with('-') || o.starts_with('+') => {
                    assert_eq!((row.rbp, row.rbp_offset as i64), (rbp::AT_CFA, o.parse::<i64>().unwrap()), "{what}")
                }
                _ => assert_eq!(row.rbp, rbp::UNCHANGED, "{what}"),
            }
        }
        (expected.len(), table)
    }

    /// The libc this test binary maps (also used by the cache's tests).
    pub(in crate::unwind) fn libc_path() -> String {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("libc is mapped")
            .to_string()
    }

    fn build_c(name: &str, flags: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("otelprof-unwind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join(format!("{name}.c"));
        std::fs::write(
            &src,
            "#include <stdlib.h>\nvolatile long sink;\n\
             __attribute__((noinline)) long leaf(long n) { long a[64]; for (long i = 0; i < 64; i++) a[i] = i * n; return a[n & 63]; }\n\
             __attribute__((noinline)) long rec(long d) { return d == 0 ? leaf(d) : rec(d - 1) + 1; }\n\
             __attribute__((noinline)) long with_alloca(long n) { volatile char *p = __builtin_alloca(n); for (long i = 0; i < n; i++) p[i] = (char)i; return leaf(p[n / 2]); }\n\
             int main(int c, char **v) { (void)v; sink = rec(c * 40) + with_alloca(c * 100); return 0; }\n",
        )
        .unwrap();
        let exe = dir.join(name);
        let out = Command::new("cc").args(flags).arg(&src).arg("-o").arg(&exe).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        exe
    }

    #[test]
    fn debian_libc_matches_readelf() {
        let (rows, table) = check_against_readelf(Path::new(&libc_path()), ".eh_frame");
        assert!(rows > 10_000, "libc has many CFI rows: {rows}");
        assert!(table.rows.iter().any(|r| r.cfa == cfa::SIGNAL), "__restore_rt is a signal frame");
        assert!(table.rows.iter().any(|r| r.cfa == cfa::PLT && r.cfa_offset == 11), "the PLT has its expression rule");
        assert!(
            table.unsupported * 100 < table.rows.len(),
            "few unsupported rules: {} of {}",
            table.unsupported,
            table.rows.len()
        );
        assert_eq!(table.bytes(), table.rows.len() * 16);
    }

    #[test]
    fn frame_pointer_less_binary_matches_readelf() {
        let exe = build_c("nofp", &["-O2", "-fomit-frame-pointer"]);
        let (_, table) = check_against_readelf(&exe, ".eh_frame");
        assert!(table.rows.iter().any(|r| r.cfa == cfa::RBP), "alloca makes a function use rbp for its CFA");
        assert!(table.rows.iter().any(|r| r.cfa == cfa::END), "_start ends the stack");
    }

    #[test]
    fn debug_frame_only_binary_matches_readelf() {
        let exe = build_c("dbgframe", &["-O2", "-g", "-fno-asynchronous-unwind-tables", "-fomit-frame-pointer"]);
        let (rows, _) = check_against_readelf(&exe, ".debug_frame");
        assert!(rows > 0);
    }

    #[test]
    fn overlapping_fdes_keep_the_table_sorted() {
        // Found by the fuzzer (fuzz/fuzz_targets/unwind_compile.rs): a corrupted FDE covering
        // 0x1020..0x20001060 overlaps every later one.
        let table = compile(include_bytes!("testdata/overlapping-fdes.elf")).unwrap();
        assert!(table.rows.windows(2).all(|w| w[0].pc < w[1].pc), "{:?}", &table.rows[..table.rows.len().min(8)]);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        assert!(matches!(compile(b"definitely not an ELF"), Err(UnwindError::Elf(_))));
        let libc = std::fs::read(libc_path()).unwrap();
        // Truncated files.
        for len in [0, 16, 64, 4096, libc.len() / 3, libc.len() / 2, libc.len() - 1] {
            let _ = compile(&libc[..len]);
        }
        // Corrupted call frame information.
        let file = object::File::parse(&*libc).unwrap();
        let (off, size) = file.section_by_name(".eh_frame").unwrap().file_range().unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20 {
            let mut bad = libc.clone();
            for _ in 0..64 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                bad[(off + rng % size) as usize] = rng as u8;
            }
            let _ = compile(&bad);
        }
    }
}
