//! ELF (+ DWARF) files on disk, through blazesym.

use std::path::Path;

use blazesym::symbolize::{source, Input, Symbolized};

use crate::{Error, Frame, Symbol};

/// Reads the GNU build ID of the ELF file at `path` (`Ok(None)` when it has none).
pub fn read_build_id(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    blazesym::helper::read_elf_build_id(path)
        .map(|id| id.map(|b| b.into_owned()))
        .map_err(|source| Error::Elf {
            path: path.into(),
            source,
        })
}

/// Resolves sorted, unique file offsets of the ELF at `path`.
pub(crate) fn resolve(
    blaze: &blazesym::symbolize::Symbolizer,
    path: &Path,
    file_offsets: &[u64],
) -> Result<Vec<Symbol>, Error> {
    let src = source::Source::Elf(source::Elf::new(path));
    let out = blaze
        .symbolize(&src, Input::FileOffset(file_offsets))
        .map_err(|source| Error::Elf {
            path: path.into(),
            source,
        })?;
    Ok(out.into_iter().map(convert).collect())
}

fn code_file(info: &blazesym::symbolize::CodeInfo<'_>) -> String {
    match &info.dir {
        Some(dir) if !dir.as_os_str().is_empty() => {
            dir.join(&info.file).to_string_lossy().into_owned()
        }
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
            function: f.name.to_string(),
            file: f.code_info.as_ref().map(code_file),
            line: f.code_info.as_ref().and_then(|c| c.line),
            inlined: true,
        });
    }
    frames.push(Frame {
        function: sym.name.to_string(),
        file: sym.code_info.as_deref().map(code_file),
        line: sym.code_info.as_ref().and_then(|c| c.line),
        inlined: false,
    });
    Symbol::new(frames)
}
