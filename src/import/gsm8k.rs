//! GSM8K: `{"question", "answer"}` where the answer's last line is `#### N`. Each line before it is a
//! step; its calculator annotations `<<48/2=24>>` become checkable calcs and are removed from the text.

use super::{Row, content_id, problem};
use crate::dataset::Problem;
use crate::error::Result;
use crate::formats::domain::Domain;
use crate::formats::steps::annotated_step;

pub fn convert(row: &Row) -> Result<Problem> {
    let question = row.text("question")?;
    let answer = row.text("answer")?;
    let (work, gold) = answer.rsplit_once("####").ok_or_else(|| row.error("answer", "no `#### <answer>` line"))?;
    let gold = gold.trim().replace(',', "");
    if gold.is_empty() {
        return Err(row.error("answer", "nothing after `####`"));
    }
    let steps = work.lines().filter(|l| !l.trim().is_empty()).map(annotated_step).collect();
    let mut p = problem(content_id(&question, Some(&gold)), Domain::Math, question, Some(gold));
    p.steps = Some(steps);
    p.metadata = row.metadata(&["question", "answer"]);
    Ok(p)
}
