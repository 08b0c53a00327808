//! Curation (`forge filter`, issue #6). The stage itself is not built yet; its parts land here first:
//! [`decontam`], the benchmark-contamination index, [`exact_dup`], normalised exact duplicates,
//! [`near_dup`], MinHash LSH clustering, and [`select`], majority vote and the pass-rate window.

pub mod decontam;
pub mod exact_dup;
pub mod near_dup;
pub mod select;
mod text;
