//! Curation (`forge filter`, issue #6). The stage itself is not built yet; its parts land here first:
//! [`decontam`], the benchmark-contamination index, [`exact_dup`], normalised exact duplicates, and
//! [`near_dup`], MinHash LSH clustering.

pub mod decontam;
pub mod exact_dup;
pub mod near_dup;
mod text;
