//! MBPP: `{"task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"}`. The prompt
//! carries the tests (as MBPP is usually posed, so the function name is known); each test becomes a
//! runnable snippet with the setup code in front.

use super::{Row, problem};
use crate::dataset::{Problem, Step};
use crate::error::Result;
use crate::formats::domain::Domain;

pub fn convert(row: &Row) -> Result<Problem> {
    let text = row.text("text")?;
    let asserts = row.text_list("test_list")?;
    let setup = row.opt_text("test_setup_code")?.unwrap_or_default();
    let prompt = format!("{text}\nYour code should pass these tests:\n\n{}", asserts.join("\n"));
    let mut p = problem(row.scalar("task_id")?, Domain::Code, prompt, None);
    p.tests = Some(
        asserts
            .iter()
            .map(|a| if setup.trim().is_empty() { format!("{a}\n") } else { format!("{setup}\n{a}\n") })
            .collect(),
    );
    p.steps = row.opt_text("code")?.map(|code| vec![Step { text: code.replace("\r\n", "\n"), calcs: vec![] }]);
    p.metadata = row.metadata(&["task_id", "text", "code", "test_list", "test_setup_code"]);
    Ok(p)
}
