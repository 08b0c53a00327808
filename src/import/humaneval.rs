//! HumanEval: `{"task_id", "prompt", "canonical_solution", "test", "entry_point"}`. The test becomes one
//! runnable snippet, `test` followed by `check(entry_point)`.

use super::{Row, problem};
use crate::dataset::{Problem, Step};
use crate::error::Result;
use crate::formats::domain::Domain;

pub fn convert(row: &Row) -> Result<Problem> {
    let entry = row.text("entry_point")?;
    let test = row.text("test")?;
    let mut p = problem(row.scalar("task_id")?, Domain::Code, row.text("prompt")?, None);
    p.tests = Some(vec![format!("{test}\n\ncheck({entry})\n")]);
    p.steps = row.opt_text("canonical_solution")?.map(|code| vec![Step { text: code, calcs: vec![] }]);
    p.metadata = row.metadata(&["task_id", "prompt", "canonical_solution", "test"]);
    Ok(p)
}
