//! The generic mapping: `--prompt-col`, `--answer-col`, `--id-col`; every other column goes to metadata.

use super::{ImportConfig, Row, content_id, problem};
use crate::dataset::Problem;
use crate::error::Result;

pub fn convert(row: &Row, cfg: &ImportConfig) -> Result<Problem> {
    let prompt_col = cfg.prompt_col.as_deref().expect("checked by import::run");
    let prompt = row.text(prompt_col)?;
    let gold = match &cfg.answer_col {
        Some(col) => Some(row.scalar(col)?),
        None => None,
    };
    let id = match &cfg.id_col {
        Some(col) => row.scalar(col)?,
        None => content_id(&prompt, gold.as_deref()),
    };
    let used: Vec<&str> =
        [Some(prompt_col), cfg.answer_col.as_deref(), cfg.id_col.as_deref()].into_iter().flatten().collect();
    let mut p = problem(id, cfg.domain, prompt, gold);
    p.metadata = row.metadata(&used);
    Ok(p)
}
