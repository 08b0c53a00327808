//! MATH and MATH-500: `{"problem", "solution", "answer"?, "unique_id"?, ...}`. The gold answer is the
//! `answer` field when present, else the solution's boxed answer as the verifier extracts it: the last
//! `\boxed{...}` (or `\fbox{...}`), nested braces included, joined with the boxes before it when only `,`
//! or `and` separate them ("the points are $\boxed{(-2,18)}$ and $\boxed{(8,38)}$" is both points, where
//! the MATH convention of the last box keeps only one). Solution paragraphs are the reference steps.

use super::{Row, content_id, problem};
use crate::dataset::{Problem, Step};
use crate::error::Result;
use crate::formats::domain::Domain;
use crate::verify::extract::boxed_answer;

pub fn convert(row: &Row) -> Result<Problem> {
    let prompt = row.text("problem")?;
    let solution = row.opt_text("solution")?;
    if solution.is_none() && !row.has("answer") {
        return Err(row.error("solution", "no `answer` and no `solution` column"));
    }
    // A solution whose box is empty (two rows of MATH train) leaves the gold null; `import` counts and
    // reports such rows instead of inventing an answer or dropping the problem.
    let gold = match row.opt_scalar("answer")? {
        Some(answer) => Some(answer),
        None => solution.as_deref().and_then(boxed_answer).filter(|b| !b.is_empty()),
    };
    let id = match row.opt_scalar("unique_id")? {
        Some(id) => id,
        None => content_id(&prompt, gold.as_deref()),
    };
    let mut p = problem(id, Domain::Math, prompt, gold);
    p.steps = solution.map(|s| {
        s.split("\n\n")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Step { text: t.to_string(), calcs: vec![] })
            .collect()
    });
    p.metadata = row.metadata(&["problem", "solution", "answer", "unique_id"]);
    Ok(p)
}
