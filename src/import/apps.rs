//! APPS and TACO (one layout): `question`, `input_output` (JSON text: `inputs`, `outputs`, and `fn_name`
//! for call-based problems), `solutions` (JSON text: a list of programs), `starter_code`, `problem_id`
//! (APPS; TACO rows get a content id). Standard-input problems get one `{"stdin", "stdout"}` test per case;
//! call-based ones a Python snippet per case that calls the function (a method of `Solution` when the
//! program defines that class) and compares its JSON form with the expected one.

use serde_json::Value;

use super::{Row, content_id, problem};
use crate::dataset::{Problem, Step};
use crate::error::Result;
use crate::formats::domain::Domain;

pub fn convert(row: &Row) -> Result<Problem> {
    let question = row.text("question")?;
    let io = row.json("input_output")?;
    let cases = |key: &str| -> Result<Vec<Value>> {
        match &io[key] {
            Value::Array(items) => Ok(items.clone()),
            _ => Err(row.error("input_output", format!("expected a JSON object with a list `{key}`"))),
        }
    };
    let (inputs, outputs) = (cases("inputs")?, cases("outputs")?);
    if inputs.len() != outputs.len() {
        return Err(row.error("input_output", format!("{} inputs but {} outputs", inputs.len(), outputs.len())));
    }
    let starter = row.opt_text("starter_code")?.unwrap_or_default();
    let (tests, how) = match io["fn_name"].as_str() {
        Some(name) => (
            inputs.iter().zip(&outputs).map(|(i, o)| call_test(name, &i.to_string(), &o.to_string())).collect(),
            format!("Write the function `{name}`."),
        ),
        None => (
            inputs.iter().zip(&outputs).map(|(i, o)| io_test(&lines(i), &lines(o))).collect(),
            "Read the input from standard input and write the answer to standard output.".to_string(),
        ),
    };
    let prompt = if starter.trim().is_empty() {
        format!("{question}\n\n{how}")
    } else {
        format!("{question}\n\n{how} Start from:\n\n```python\n{starter}\n```")
    };
    let id = row.opt_scalar("problem_id")?.unwrap_or_else(|| content_id(&prompt, None));
    let mut p = problem(id, Domain::Code, prompt, None);
    p.tests = Some(tests);
    let solutions = if row.has("solutions") { row.json("solutions")? } else { Value::Null };
    p.steps = solutions.get(0).and_then(Value::as_str).map(|code| vec![Step { text: code.into(), calcs: vec![] }]);
    p.metadata = row.metadata(&["problem_id", "question", "input_output", "solutions", "starter_code"]);
    Ok(p)
}

/// A case's text: a string as is, a list of lines joined (some APPS outputs are lists).
fn lines(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(lines).collect::<Vec<_>>().join("\n"),
        other => other.to_string(),
    }
}

/// A standard-input test as the code verifier reads it.
pub(super) fn io_test(stdin: &str, stdout: &str) -> String {
    serde_json::json!({ "stdin": stdin, "stdout": stdout }).to_string()
}

/// A call-based test: `args` a JSON list of arguments, `expected` the JSON result (APPS wraps it in a list).
pub(super) fn call_test(name: &str, args: &str, expected: &str) -> String {
    // JSON string literals are Python string literals too
    let (args, expected) = (Value::from(args).to_string(), Value::from(expected).to_string());
    format!(
        "import json as _json\n\
         _f = globals()['Solution']().{name} if 'Solution' in globals() else {name}\n\
         _got = _json.loads(_json.dumps(_f(*_json.loads({args}))))\n\
         _want = _json.loads({expected})\n\
         assert _got == _want or [_got] == _want, f'got {{_got!r}}, expected {{_want!r}}'\n"
    )
}
