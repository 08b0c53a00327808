//! forge's cache directory, for everything kept between runs: the object-storage mirrors, the HTTP
//! teacher's request journal, sentence embeddings. `$FORGE_CACHE` (`$FORGE_CACHE_DIR`, its older name,
//! also works), else `$XDG_CACHE_HOME/forge`, else `~/.cache/forge`; `None` when none of them is set.

use std::path::{Path, PathBuf};

/// The cache directory (not created here).
pub fn dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("FORGE_CACHE")
        .or_else(|| var("FORGE_CACHE_DIR"))
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("forge")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/forge")))
}

/// The files of `dir` named `*.EXTENSION`, sorted by name (the segments of a cache directory: the request
/// journal's, the embeddings'); `dir` is created when missing.
pub fn files(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    fs_err::create_dir_all(dir)?;
    let mut names: Vec<PathBuf> = fs_err::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    names.sort();
    Ok(names)
}
