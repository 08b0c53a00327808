//! MATH and MATH-500: `{"problem", "solution", "answer"?, "unique_id"?, ...}`. The gold answer is the
//! `answer` field when present, else the last `\boxed{...}` (or `\fbox{...}`) of the solution, nested
//! braces included. Solution paragraphs are the reference steps.

use super::{Row, content_id, problem};
use crate::dataset::{Problem, Step};
use crate::error::Result;

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
        None => solution.as_deref().and_then(last_boxed).filter(|b| !b.is_empty()).map(str::to_string),
    };
    let id = match row.opt_scalar("unique_id")? {
        Some(id) => id,
        None => content_id(&prompt, gold.as_deref()),
    };
    let mut p = problem(id, "math", prompt, gold);
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

/// The content of the last `\boxed{...}` or `\fbox{...}` in `text` (balanced braces; `\{` `\}` do not
/// count), or of `\boxed 5` without braces.
pub fn last_boxed(text: &str) -> Option<&str> {
    let starts = text.match_indices("\\boxed").chain(text.match_indices("\\fbox")).map(|(i, m)| i + m.len());
    let mut best: Option<(usize, &str)> = None;
    for start in starts {
        if let Some(content) = boxed_at(text, start)
            && best.is_none_or(|(b, _)| start > b)
        {
            best = Some((start, content));
        }
    }
    best.map(|(_, c)| c)
}

fn boxed_at(text: &str, start: usize) -> Option<&str> {
    let rest = &text[start..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut depth = 1usize;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(body[..i].trim());
                    }
                }
                _ => {}
            }
        }
        None
    } else if rest.starts_with(' ') {
        let token = rest.trim_start().split(|c: char| c.is_whitespace() || c == '$').next()?;
        (!token.is_empty()).then_some(token)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::last_boxed;

    #[test]
    fn last_box_with_nested_braces_wins() {
        assert_eq!(last_boxed("so $\\boxed{1}$ or $\\boxed{\\frac{1}{2}}$."), Some("\\frac{1}{2}"));
        assert_eq!(last_boxed("\\boxed{\\{1,2\\}}"), Some("\\{1,2\\}"));
        assert_eq!(last_boxed("is $\\boxed 5$"), Some("5"));
        assert_eq!(last_boxed("$\\fbox{204}$ minutes"), Some("204"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        assert_eq!(last_boxed("no box"), None);
    }
}
