//! forge's integration tests: one binary (every extra test binary re-links arrow and parquet).
//! Tests that read `../shared/data` are `#[ignore = "needs ../shared/data"]`; `.ci/run` runs them too.

#![allow(clippy::disallowed_methods)] // tests and benches may use std::fs: a failure names its test

mod util;

/// Bad input: every kind gets a located one-line cause, exit status 2 and no output left behind.
mod bad_input;
/// Reading and writing datasets: formats, casts, shards, atomic writes, kill and resume.
mod dataset;
/// `forge train-distill`: offline top-k against online, resume after a kill, LoRA, tokenizer check.
mod distill;
/// The sentence encoder against sentence-transformers on the real all-MiniLM-L6-v2.
mod encoder;
/// `forge eval`: its scores recomputed from the traces it keeps.
mod eval;
/// `forge export`: every format loads in datasets, pyarrow, polars and DuckDB.
mod export;
/// `forge filter`: every rejection reason, sharded = one process, kill and resume, real-data accuracy.
mod filter;
/// `forge generate` with tiny random teachers: provenance, batching, resume, bad input.
mod generate;
/// `forge import`: presets on small fixtures and on every file in `../shared/data`.
mod import;
/// `forge journey`: the guarantees on every task, the knobs, GSM8K's annotations.
mod journey;
/// The layer rule of README's Layout section holds in `src/`.
mod layers;
/// Models: chat templates against transformers' rendering.
mod model;
/// `forge run`: pipelines skip what is up to date and rerun what changed.
mod pipeline;
/// Datasets on object storage: import, filter, journey and export on a real S3 API (moto's server).
mod remote;
/// `forge train-rl`: rollouts, rewards and advantages, resume after a kill, LoRA with KL.
mod rl;
/// The code sandbox against hostile programs.
mod sandbox;
/// `schemas/*.md` match the code's Arrow schemas.
mod schemas;
/// `forge serve`: forge's HTTP teacher and the official `openai` client against it, continuous batching.
mod serve;
/// `forge run --executor slurm` on a real one-node Slurm: equal to a local run, resumes after scancel.
mod slurm;
/// `forge stats`.
mod stats;
/// `forge synth`: determinism, sharding, checkable steps.
mod synth;
/// The HTTP teacher against a real llama-server, a fault-injecting proxy, kills.
mod teacher_http;
/// `forge train-sft`: learning, resume after a kill, loss masks.
mod train;
/// `forge verify`: pair and file modes, and agreement with labelled real data.
mod verify;
