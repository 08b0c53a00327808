//! Curation (`forge filter`, issue #6). The stage itself is not built yet; its parts land here first:
//! [`decontam`], the benchmark-contamination index.

pub mod decontam;
