//! LiveCodeBench (`code_generation_lite`): `question_id`, `question_content`, `starter_code`,
//! `public_test_cases` (JSON text: `[{input, output, testtype}]`), `private_test_cases` (the same JSON, or
//! as the release ships it: base64 of zlib of a pickled string), `metadata` (JSON text with `func_name` for
//! LeetCode's functional problems). `stdin` cases become `{"stdin", "stdout"}` tests; `functional` ones a
//! Python snippet calling `Solution().<func_name>` with the input's lines as JSON arguments.

use base64::Engine;
use serde_json::Value;

use super::apps::{call_test, io_test};
use super::{Row, problem};
use crate::dataset::Problem;
use crate::error::Result;
use crate::formats::domain::Domain;

pub fn convert(row: &Row) -> Result<Problem> {
    let content = row.text("question_content")?;
    let func = match row.opt_text("metadata")? {
        Some(m) => serde_json::from_str::<Value>(&m).ok().and_then(|m| m["func_name"].as_str().map(str::to_string)),
        None => None,
    };
    let mut tests = Vec::new();
    for column in ["public_test_cases", "private_test_cases"] {
        let Some(text) = row.opt_text(column)? else { continue };
        let cases = decode_cases(&text).ok_or_else(|| {
            row.error(column, "expected a JSON list of test cases, or its base64 zlib pickle as the release ships")
        })?;
        for case in cases.as_array().into_iter().flatten() {
            let (Some(input), Some(output)) = (case["input"].as_str(), case["output"].as_str()) else {
                return Err(row.error(column, "a test case needs `input` and `output` strings"));
            };
            tests.push(match (case["testtype"].as_str(), &func) {
                (Some("functional"), Some(name)) => {
                    let args: Vec<Value> = input
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect();
                    call_test(name, &Value::Array(args).to_string(), output.trim())
                }
                (Some("functional"), None) => return Err(row.error("metadata", "a functional test needs `func_name`")),
                _ => io_test(input, output),
            });
        }
    }
    let starter = row.opt_text("starter_code")?.unwrap_or_default();
    let prompt = if starter.trim().is_empty() {
        format!("{content}\n\nRead the input from standard input and write the answer to standard output.")
    } else {
        format!("{content}\n\nComplete this code:\n\n```python\n{starter}\n```")
    };
    let mut p = problem(row.scalar("question_id")?, Domain::Code, prompt, None);
    p.tests = Some(tests);
    p.metadata =
        row.metadata(&["question_id", "question_content", "starter_code", "public_test_cases", "private_test_cases"]);
    Ok(p)
}

/// The cases as JSON, from plain JSON text or from base64(zlib(pickle(str))).
fn decode_cases(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    let packed = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
    let mut pickled = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&packed[..]), &mut pickled).ok()?;
    serde_json::from_str(&pickled_str(&pickled)?).ok()
}

/// The string a pickle of one `str` holds (protocols 2 to 5), read without running any pickle opcode.
fn pickled_str(b: &[u8]) -> Option<String> {
    let mut at = if b.first() == Some(&0x80) { 2 } else { 0 }; // PROTO n
    if b.get(at) == Some(&0x95) {
        at += 9; // FRAME, 8-byte length
    }
    let (len, start) = match *b.get(at)? {
        0x8c => (usize::from(*b.get(at + 1)?), at + 2), // SHORT_BINUNICODE
        b'X' => (u32::from_le_bytes(b.get(at + 1..at + 5)?.try_into().ok()?) as usize, at + 5), // BINUNICODE
        0x8d => (u64::from_le_bytes(b.get(at + 1..at + 9)?.try_into().ok()?) as usize, at + 9), // BINUNICODE8
        _ => return None,
    };
    String::from_utf8(b.get(start..start.checked_add(len)?)?.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes Python 3.11 writes for `pickle.dumps('[1, 2]')` and, protocol 2, `pickle.dumps('ab', 2)`.
    #[test]
    fn pickled_strings_are_read() {
        let p5 = b"\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00\x8c\x06[1, 2]\x94.";
        assert_eq!(pickled_str(p5).as_deref(), Some("[1, 2]"));
        let p2 = b"\x80\x02X\x02\x00\x00\x00abq\x00.";
        assert_eq!(pickled_str(p2).as_deref(), Some("ab"));
        assert_eq!(pickled_str(b"\x80\x04N."), None);
    }
}
