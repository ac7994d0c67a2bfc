//! ELF (+ DWARF) files on disk, through blazesym.

use std::path::{Path, PathBuf};

use blazesym::{
    helper::ElfResolver,
    symbolize::{source, Input, Symbolized, TranslateFileOffset as _},
};

use crate::{Error, FileKey, Frame, Symbol};

/// Reads the GNU build ID of the ELF file at `path` (`Ok(None)` when it has none).
pub fn read_build_id(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    blazesym::helper::read_elf_build_id(path)
        .map(|id| id.map(|b| b.into_owned()))
        .map_err(|source| Error::Elf { path: path.into(), source })
}

/// `DIR/.build-id/xx/yyyy.debug` for the first debug directory that has the file's debug file.
fn build_id_debug_file(key: &FileKey, debug_dirs: &[PathBuf]) -> Option<PathBuf> {
    let id = key.build_id().filter(|id| id.len() >= 2)?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    debug_dirs
        .iter()
        .map(|d| d.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..])))
        .find(|p| p.is_file())
}

/// Resolves sorted, unique file offsets of the ELF at `path`.
///
/// A debug file found by build ID in `debug_dirs` is used directly. blazesym itself looks there
/// only while following a `.gnu_debuglink`, so a binary with a build ID but no debug link would
/// otherwise lose its file/line information. The debug file has the binary's virtual layout but
/// not its file layout, so offsets are translated through the binary's program headers first.
pub(crate) fn resolve(
    blaze: &blazesym::symbolize::Symbolizer,
    path: &Path,
    key: &FileKey,
    debug_dirs: &[PathBuf],
    file_offsets: &[u64],
) -> Result<Vec<Symbol>, Error> {
    let err = |source| Error::Elf { path: path.into(), source };
    let out = match build_id_debug_file(key, debug_dirs) {
        Some(debug) => {
            let binary = ElfResolver::open(path).map_err(err)?;
            let virt = file_offsets
                .iter()
                .map(|&o| binary.file_offset_to_virt_offset(o).map(|v| v.unwrap_or(u64::MAX)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let src = source::Source::Elf(source::Elf::new(&debug));
            blaze
                .symbolize(&src, Input::VirtOffset(&virt))
                .map_err(|source| Error::Elf { path: debug.clone(), source })?
        }
        None => {
            let src = source::Source::Elf(source::Elf::new(path));
            blaze.symbolize(&src, Input::FileOffset(file_offsets)).map_err(err)?
        }
    };
    Ok(out.into_iter().map(convert).collect())
}

/// Demangles Rust (`_R…`, legacy `_ZN…17h…E`) and C++ (`_Z…`) names; anything else is a plain
/// C or assembly name and stays as it is. GCC's `.localalias` suffix (an alias of the same
/// function, used for calls within the file) is dropped.
pub fn demangle(name: &str) -> String {
    let name = name.strip_suffix(".localalias").unwrap_or(name);
    if name.starts_with("_R") || name.starts_with("_ZN") {
        if let Ok(d) = rustc_demangle::try_demangle(name) {
            return format!("{d:#}");
        }
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle() {
                return d;
            }
        }
    }
    name.to_string()
}

fn code_file(info: &blazesym::symbolize::CodeInfo<'_>) -> String {
    match &info.dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(&info.file).to_string_lossy().into_owned(),
        _ => info.file.to_string_lossy().into_owned(),
    }
}

/// Turns blazesym's answer into frames, innermost first.
///
/// blazesym lists inlined functions outermost first and gives each function the code location
/// *inside* it (the symbol's own `code_info` is where it calls the first inlined function).
pub(crate) fn convert(s: Symbolized<'_>) -> Symbol {
    let Symbolized::Sym(sym) = s else {
        return Symbol::unknown();
    };
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    for f in sym.inlined.iter().rev() {
        frames.push(Frame {
            function: demangle(&f.name),
            file: f.code_info.as_ref().map(code_file),
            line: f.code_info.as_ref().and_then(|c| c.line),
            inlined: true,
        });
    }
    frames.push(Frame {
        function: demangle(&sym.name),
        file: sym.code_info.as_deref().map(code_file),
        line: sym.code_info.as_ref().and_then(|c| c.line),
        inlined: false,
    });
    Symbol::new(frames)
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn demangles_only_mangled_names() {
        assert_eq!(demangle("a"), "a", "not the C++ type code for signed char");
        assert_eq!(demangle("b"), "b");
        assert_eq!(demangle("rec.localalias"), "rec");
        assert_eq!(demangle("hot_leaf.cold"), "hot_leaf.cold");
        assert_eq!(demangle("_ZN3std2rt10lang_start17h0123456789abcdefE"), "std::rt::lang_start");
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi"),
            "std::vector<int, std::allocator<int> >::push_back(int const&)"
        );
        assert_eq!(demangle("_Z3fooi"), "foo(int)");
    }
}
