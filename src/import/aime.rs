//! AIME: `{"id", "problem", "answer", ...}` (both the 1983–2024 compilation and the AIME 2024 file,
//! whose ids are numbers). The answer is kept as written.

use super::{Row, problem};
use crate::dataset::Problem;
use crate::error::Result;
use crate::formats::domain::Domain;

pub fn convert(row: &Row) -> Result<Problem> {
    let mut p = problem(row.scalar("id")?, Domain::Math, row.text("problem")?, Some(row.scalar("answer")?));
    p.metadata = row.metadata(&["id", "problem", "question", "answer"]);
    Ok(p)
}
