//! CodeContests (DeepMind): `name`, `description`, `public_tests` and `private_tests` (`{input: [...],
//! output: [...]}`), `solutions` (`{language: [...], solution: [...]}`; language 3 is Python 3). Every
//! public and private case becomes a `{"stdin", "stdout"}` test; `generated_tests` are left in `metadata`
//! (hundreds per problem: import them with a column mapping when wanted).

use serde_json::Value;

use super::apps::io_test;
use super::{Row, problem};
use crate::dataset::{Problem, Step};
use crate::error::Result;
use crate::formats::domain::Domain;

const PYTHON3: i64 = 3;

pub fn convert(row: &Row) -> Result<Problem> {
    let description = row.text("description")?;
    let mut tests = Vec::new();
    for column in ["public_tests", "private_tests"] {
        let set = if row.has(column) { row.json(column)? } else { continue };
        match (set["input"].as_array(), set["output"].as_array()) {
            (Some(inputs), Some(outputs)) if inputs.len() == outputs.len() => {
                for (i, o) in inputs.iter().zip(outputs) {
                    match (i.as_str(), o.as_str()) {
                        (Some(i), Some(o)) => tests.push(io_test(i, o)),
                        _ => return Err(row.error(column, "expected `input` and `output` lists of strings")),
                    }
                }
            }
            _ => return Err(row.error(column, "expected `input` and `output` lists of the same length")),
        }
    }
    let prompt =
        format!("{description}\n\nRead the input from standard input and write the answer to standard output.");
    let mut p = problem(row.scalar("name")?, Domain::Code, prompt, None);
    p.tests = Some(tests);
    let solutions = if row.has("solutions") { row.json("solutions")? } else { Value::Null };
    let python = solutions["language"]
        .as_array()
        .and_then(|langs| langs.iter().position(|l| l.as_i64() == Some(PYTHON3)))
        .and_then(|i| solutions["solution"][i].as_str());
    p.steps = python.map(|code| vec![Step { text: code.into(), calcs: vec![] }]);
    p.metadata = row.metadata(&["name", "description", "public_tests", "private_tests", "solutions"]);
    Ok(p)
}
