//! GSM8K: `{"question", "answer"}` where the answer's last line is `#### N`. Each line before it is a
//! step; its calculator annotations `<<48/2=24>>` become checkable calcs and are removed from the text.

use super::{Row, content_id, problem};
use crate::dataset::{Calc, Problem, Step};
use crate::error::Result;

pub fn convert(row: &Row) -> Result<Problem> {
    let question = row.text("question")?;
    let answer = row.text("answer")?;
    let (work, gold) = answer.rsplit_once("####").ok_or_else(|| row.error("answer", "no `#### <answer>` line"))?;
    let gold = gold.trim().replace(',', "");
    if gold.is_empty() {
        return Err(row.error("answer", "nothing after `####`"));
    }
    let steps = work.lines().filter(|l| !l.trim().is_empty()).map(step).collect();
    let mut p = problem(content_id(&question, Some(&gold)), "math", question, Some(gold));
    p.steps = Some(steps);
    p.metadata = row.metadata(&["question", "answer"]);
    Ok(p)
}

/// One line of a GSM8K solution: text without annotations, plus the annotations as calcs.
pub fn step(line: &str) -> Step {
    let mut text = String::with_capacity(line.len());
    let mut calcs = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("<<") {
        let Some(len) = rest[start..].find(">>") else { break };
        text.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        if let Some((expr, result)) = inner.rsplit_once('=') {
            calcs.push(Calc { expr: expr.trim().to_string(), result: result.trim().to_string() });
        }
        rest = &rest[start + len + 2..];
    }
    text.push_str(rest);
    Step { text: text.trim().to_string(), calcs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_calcs() {
        let s = step("Natalia sold 48/2 = <<48/2=24>>24 clips in May.");
        assert_eq!(s.text, "Natalia sold 48/2 = 24 clips in May.");
        assert_eq!(s.calcs, vec![Calc { expr: "48/2".into(), result: "24".into() }]);
        let s = step("He pays 2*3=<<2*3=6>>6 and 6+1=<<6+1=7>>7 in all");
        assert_eq!(s.calcs.len(), 2);
        assert_eq!(s.text, "He pays 2*3=6 and 6+1=7 in all");
    }
}
