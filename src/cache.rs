//! forge's cache directory, for everything kept between runs: the object-storage mirrors, the HTTP
//! teacher's request journal, sentence embeddings. `$FORGE_CACHE` (`$FORGE_CACHE_DIR`, its older name,
//! also works), else `$XDG_CACHE_HOME/forge`, else `~/.cache/forge`; `None` when none of them is set.

use std::path::PathBuf;

/// The cache directory (not created here).
pub fn dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("FORGE_CACHE")
        .or_else(|| var("FORGE_CACHE_DIR"))
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("forge")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/forge")))
}
