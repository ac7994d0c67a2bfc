//! The vDSO: code the kernel maps into every process (`clock_gettime`, `gettimeofday`, …).
//!
//! It has no file, but every process of one kernel maps the same image, so an offset into any
//! process's `[vdso]` is the same offset into ours. Addresses are therefore symbolized against
//! this process's own copy, through blazesym's vDSO support, and stay valid after the sampled
//! process is gone.

use std::ops::Range;

use blazesym::{
    symbolize::{source, Input},
    Pid,
};

use crate::{elf::convert, Error, Symbol};

/// The address range of this process's `[vdso]` mapping, `None` when the kernel maps none
/// (`vdso=0`).
pub fn own_range() -> Option<Range<u64>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (s, e) = line.split_whitespace().next()?.split_once('-')?;
    Some(u64::from_str_radix(s, 16).ok()?..u64::from_str_radix(e, 16).ok()?)
}

/// This process's vDSO image, which is every process's (see the module docs).
pub fn own_image() -> Option<&'static [u8]> {
    let r = own_range()?;
    // SAFETY: the kernel maps [vdso] readable for the whole life of the process and never
    // moves or unmaps it (only a process's own mremap of it could, which this one does not do).
    Some(unsafe { std::slice::from_raw_parts(r.start as *const u8, (r.end - r.start) as usize) })
}

/// Resolves sorted, unique offsets into the vDSO.
pub(crate) fn resolve(blaze: &blazesym::symbolize::Symbolizer, offsets: &[u64]) -> Result<Vec<Symbol>, Error> {
    let Some(range) = own_range() else {
        return Err(Error::NoVdso);
    };
    let addrs: Vec<u64> =
        offsets.iter().map(|&o| if o < range.end - range.start { range.start + o } else { 0 }).collect();
    let mut process = source::Process::new(Pid::Slf);
    // Only the vDSO is asked about: nothing else of this process needs reading.
    process.debug_syms = false;
    process.perf_map = false;
    let src = source::Source::Process(process);
    let out = blaze.symbolize(&src, Input::AbsAddr(&addrs)).map_err(Error::Vdso)?;
    Ok(out.into_iter().map(convert).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_image_is_an_elf_file() {
        let image = own_image().expect("this kernel maps a vDSO");
        assert_eq!(&image[..4], b"\x7fELF");
    }

    /// Every exported vDSO function is named from an offset, as a sample inside it would be.
    #[test]
    fn exported_functions_are_named_from_offsets() {
        use object::{Object, ObjectSegment, ObjectSymbol};
        let image = own_image().expect("this kernel maps a vDSO");
        let elf = object::File::parse(image).expect("the vDSO parses");
        let file_offset = |vaddr: u64| {
            elf.segments().find_map(|s| {
                let (off, len) = s.file_range();
                (s.address() <= vaddr && vaddr < s.address() + len).then(|| vaddr - s.address() + off)
            })
        };
        let wanted: Vec<(String, u64)> = elf
            .dynamic_symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 1)
            .filter_map(|s| Some((s.name().ok()?.to_string(), file_offset(s.address())? + 1)))
            .collect();
        assert!(wanted.iter().any(|(n, _)| n.contains("clock_gettime")), "{wanted:?}");
        let mut sym = crate::Symbolizer::new(Default::default());
        let offsets: Vec<u64> = wanted.iter().map(|(_, o)| *o).collect();
        let got = sym.symbolize(&crate::Source::Vdso, &offsets).unwrap();
        for ((name, off), s) in wanted.iter().zip(&got) {
            let f = s.frames().first().unwrap_or_else(|| panic!("{name} at +{off:#x} unknown"));
            // Aliases (`clock_gettime`, `__vdso_clock_gettime`) share an address: either is right.
            let base = |n: &str| n.trim_start_matches("__vdso_").to_string();
            assert_eq!(base(&f.function), base(name), "+{off:#x}");
        }
    }
}
