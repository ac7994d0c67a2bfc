//! Finding `otel_thread_ctx_v1` (OTEP 4947): which file defines it, and where each thread's copy
//! lives relative to its thread pointer.
//!
//! x86_64 uses TLS variant II: static TLS blocks sit below the thread pointer (the executable's
//! first, then the libraries loaded at start-up), dynamic blocks (`dlopen`) are reached through
//! the dynamic thread vector (DTV) at `tp + 8`. The executable's offset follows from its PT_TLS
//! segment; a library's comes from the relocation the dynamic linker already resolved in its GOT
//! (TLSDESC, initial-exec `TPOFF64` or general-dynamic `DTPMOD64`/`DTPOFF64`), read from the
//! process's memory.

use std::{fs::File, os::unix::fs::FileExt};

use object::{elf, read::elf::ElfFile64, Object, ObjectSymbol, RelocationFlags, RelocationTarget, SymbolKind};
use profiler_common::{tls_kind, TlsLocation};

/// The TLS variable's name in `.dynsym`.
pub const SYMBOL: &str = "otel_thread_ctx_v1";

/// How a file defines the variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSymbol {
    /// Offset of the variable inside the file's TLS block.
    pub value: u64,
    /// The file is an executable (static TLS at a fixed offset below the thread pointer).
    pub executable: bool,
    /// PT_TLS: memory size, alignment and virtual address (for the executable's offset).
    pub tls_memsz: u64,
    pub tls_align: u64,
    pub tls_vaddr: u64,
    /// Dynamic relocations the linker resolves for it: (type, GOT address in the file).
    pub relocs: Vec<(u32, u64)>,
}

/// The variable in an ELF file's `.dynsym`, if it defines it. Errors mean the file is not a
/// 64-bit ELF object this reader understands.
pub fn inspect(data: &[u8]) -> Result<Option<TlsSymbol>, object::Error> {
    let file = ElfFile64::<object::Endianness>::parse(data)?;
    let Some(sym) =
        file.dynamic_symbols().find(|s| s.kind() == SymbolKind::Tls && !s.is_undefined() && s.name() == Ok(SYMBOL))
    else {
        return Ok(None);
    };
    let header = file.elf_header();
    let endian = file.endian();
    let e_type = header.e_type.get(endian);
    let has_interp = file.elf_program_headers().iter().any(|p| {
        use object::read::elf::ProgramHeader;
        p.p_type(endian) == elf::PT_INTERP
    });
    let tls = file.elf_program_headers().iter().find(|p| {
        use object::read::elf::ProgramHeader;
        p.p_type(endian) == elf::PT_TLS
    });
    let (tls_memsz, tls_align, tls_vaddr) = tls
        .map(|p| {
            use object::read::elf::ProgramHeader;
            (p.p_memsz(endian), p.p_align(endian).max(1), p.p_vaddr(endian))
        })
        .unwrap_or((0, 1, 0));
    let mut relocs = Vec::new();
    for (offset, r) in file.dynamic_relocations().into_iter().flatten() {
        let RelocationFlags::Elf { r_type } = r.flags() else { continue };
        let tls_type = matches!(
            r_type,
            elf::R_X86_64_TLSDESC | elf::R_X86_64_TPOFF64 | elf::R_X86_64_DTPMOD64 | elf::R_X86_64_DTPOFF64
        );
        // Against the symbol, or (symbol bound locally) against the module with the variable's
        // offset as addend.
        let ours = match r.target() {
            RelocationTarget::Symbol(i) => i == sym.index() || (i.0 == 0 && r.addend() as u64 == sym.address()),
            RelocationTarget::Absolute => r.addend() as u64 == sym.address(),
            _ => false,
        };
        if tls_type && ours {
            relocs.push((r_type, offset));
        }
    }
    Ok(Some(TlsSymbol {
        value: sym.address(),
        executable: e_type == elf::ET_EXEC || (e_type == elf::ET_DYN && has_interp),
        tls_memsz,
        tls_align,
        tls_vaddr,
        relocs,
    }))
}

fn read_u64(mem: &File, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, addr).ok()?;
    Some(u64::from_ne_bytes(b))
}

/// Where a process's threads keep the variable, for a file loaded with `bias`. `None` when the
/// dynamic linker has not resolved it yet (try again later) or the file gives no way to find it.
pub fn locate(sym: &TlsSymbol, bias: u64, mem: &File) -> Option<TlsLocation> {
    if sym.executable {
        // The executable's block ends at the thread pointer (glibc and musl, x86_64): its offset
        // is the block size rounded up to the alignment, honouring a misaligned start.
        let align = sym.tls_align;
        let firstbyte = sym.tls_vaddr.wrapping_neg() & (align - 1);
        let off = (sym.tls_memsz.checked_sub(firstbyte)?).div_ceil(align) * align + firstbyte;
        return Some(TlsLocation { kind: tls_kind::STATIC, _pad: 0, offset: sym.value as i64 - off as i64, module: 0 });
    }
    let by_type = |t: u32| sym.relocs.iter().find(|(r, _)| *r == t).map(|(_, o)| bias.wrapping_add(*o));
    if let Some(got) = by_type(elf::R_X86_64_TLSDESC) {
        // {resolver, argument}: a negative argument is the static offset from the thread pointer;
        // otherwise it points at {module, offset, generation} for dynamic TLS.
        let arg = read_u64(mem, got + 8)?;
        if arg == 0 {
            return None;
        }
        if (arg as i64) < 0 {
            return Some(TlsLocation { kind: tls_kind::STATIC, _pad: 0, offset: arg as i64, module: 0 });
        }
        let (module, offset) = (read_u64(mem, arg)?, read_u64(mem, arg + 8)?);
        return (module != 0).then_some(TlsLocation { kind: tls_kind::DTV, _pad: 0, offset: offset as i64, module });
    }
    if let Some(got) = by_type(elf::R_X86_64_TPOFF64) {
        let off = read_u64(mem, got)? as i64;
        return (off < 0).then_some(TlsLocation { kind: tls_kind::STATIC, _pad: 0, offset: off, module: 0 });
    }
    if let Some(got) = by_type(elf::R_X86_64_DTPMOD64) {
        let module = read_u64(mem, got)?;
        let offset = read_u64(mem, got + 8)?;
        return (module != 0).then_some(TlsLocation { kind: tls_kind::DTV, _pad: 0, offset: offset as i64, module });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_the_symbol_and_garbage() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(inspect(&exe).unwrap(), None);
        assert!(inspect(b"not an elf file").is_err());
    }

    #[test]
    fn executable_offset_honours_alignment() {
        let mem = File::open("/proc/self/mem").unwrap();
        let sym = |memsz, align, vaddr| TlsSymbol {
            value: 8,
            executable: true,
            tls_memsz: memsz,
            tls_align: align,
            tls_vaddr: vaddr,
            relocs: vec![],
        };
        // 0x14 bytes aligned to 8: the block starts 0x18 below tp, the variable 8 bytes in.
        assert_eq!(locate(&sym(0x14, 8, 0x3de0), 0, &mem).unwrap().offset, 8 - 0x18);
        assert_eq!(locate(&sym(0x40, 64, 0x4000), 0, &mem).unwrap().offset, 8 - 0x40);
    }
}
