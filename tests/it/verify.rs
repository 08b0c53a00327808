use serde_json::Value;

use crate::util::{Scratch, ok, run, shared_data};
use forge::verify::{VerifySettings, verify_answer};

#[test]
fn pair_mode_exits_0_when_equivalent_and_1_when_not() {
    let out = ok(&[&"verify", &"--gold", &"\\frac12", &"--pred", &"so the answer is \\boxed{0.5}"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["extracted"].as_str(), v["extraction_rule"].as_str(), v["correct"].as_bool()),
        (Some("0.5"), Some("boxed"), Some(true))
    );
    let (code, out, _) = run(&[&"verify", &"--gold", &"72", &"--pred", &"A: 27"]);
    assert_eq!(code, 1);
    assert!(out.contains("\"wrong_answer\""), "{out}");
}

#[test]
fn file_mode_writes_every_row_with_its_verdict() {
    let s = Scratch::new();
    let rows = [
        r#"{"id": 1, "answer": "72", "completion": "<think>48 + 24 = 72</think>The answer is $\\boxed{72}$."}"#,
        r#"{"id": 2, "answer": "\\frac{1}{2}", "completion": "<think>half of it... wait"}"#,
        r#"{"id": 3, "answer": "5", "completion": "It is 6.", "finish_reason": "length"}"#,
        r#"{"id": 5, "answer": "24", "prompt": "How many clips did Natalia sell in May, half of the 48 she sold in April?", "completion": "<think>She sold 48 in April. 等一下，我需要重新计算一下五月份卖出的数量，四十八的一半是二十四。</think>\\boxed{24}"}"#,
        r#"{"id": 4, "answer": "98", "domain": "countdown", "metadata": "{\"nums\": [44, 19, 35], \"target\": 98}", "completion": "<answer>35 + (44 + 19)</answer>"}"#,
    ];
    let input = s.write("in.jsonl", rows.join("\n"));
    for ext in ["jsonl", "parquet"] {
        let output = s.path(&format!("out.{ext}"));
        ok(&[&"verify", &"--input", &input, &"--output", &output, &"-q"]);
        let stats: Value = serde_json::from_str(&ok(&[&"stats", &output, &"--json"])).unwrap();
        assert_eq!(stats["rows"], 5, "{ext}");
    }
    let text = std::fs::read_to_string(s.path("out.jsonl")).unwrap();
    let verdicts: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let field = |i: usize, k: &str| verdicts[i][k].clone();
    assert_eq!(field(0, "correct"), true);
    assert_eq!(field(0, "id"), 1);
    assert_eq!(field(1, "truncated"), true);
    assert_eq!(field(1, "failed"), serde_json::json!(["unclosed_reasoning", "no_answer"]));
    assert_eq!(field(2, "truncated"), true);
    assert_eq!(field(2, "failed"), serde_json::json!(["wrong_answer", "truncated"]));
    assert_eq!(field(3, "correct"), true);
    assert_eq!(field(3, "language_ok"), false);
    assert_eq!(field(3, "failed"), serde_json::json!(["language"]));
    assert_eq!(field(4, "correct"), true);
    assert_eq!(field(4, "language_ok"), Value::Null);
}

/// Columns that are null in the first rows, or hold numbers where text came before, still fit Parquet.
#[test]
fn parquet_output_survives_columns_that_change_type() {
    let s = Scratch::new();
    let mut rows: Vec<String> =
        (0..1500).map(|_| r#"{"answer": "1", "completion": "1", "note": null}"#.to_string()).collect();
    rows.push(r#"{"answer": 2, "completion": "2", "note": "x"}"#.to_string());
    let input = s.write("in.jsonl", rows.join("\n"));
    let output = s.path("out.parquet");
    ok(&[&"verify", &"--input", &input, &"--output", &output, &"-q"]);
    let stats: Value = serde_json::from_str(&ok(&[&"stats", &output, &"--json"])).unwrap();
    assert_eq!(stats["rows"], 1501);
    let column = |name: &str| stats["columns"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(column("note")["nulls"], 1500);
    assert_eq!(column("language_ok")["nulls"], 1501);
    assert_eq!(column("correct")["types"]["boolean"], 1501);
}

/// A null gold answer is named as such, with its row, not reported as a missing column.
#[test]
fn null_gold_is_named_with_its_row() {
    let s = Scratch::new();
    let input =
        s.write("in.jsonl", "{\"answer\": \"1\", \"completion\": \"1\"}\n{\"answer\": null, \"completion\": \"2\"}\n");
    let (code, _, stderr) = run(&[&"verify", &"--input", &input, &"--output", &s.path("out.jsonl")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("in.jsonl:2, column `answer`: the value is null"), "{stderr}");
}

#[test]
fn missing_output_column_is_a_located_error() {
    let s = Scratch::new();
    let input = s.write("in.jsonl", "{\"answer\": \"1\", \"response\": \"1\"}\n");
    let output = s.path("out.jsonl");
    let (code, _, stderr) = run(&[&"verify", &"--input", &input, &"--output", &output]);
    assert_eq!(code, 2);
    assert!(stderr.contains("in.jsonl:1, column `completion`: required column is missing"), "{stderr}");
    assert!(stderr.contains("hint: name the columns with `--gold-col` and `--output-col`"), "{stderr}");
    assert!(!output.exists());
}

fn rows(file: &str) -> Vec<Value> {
    std::fs::read_to_string(shared_data(file)).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// forge's verdicts on the GSM8K model solutions agree with their human `is_correct` labels.
#[test]
#[ignore = "needs ../shared/data"]
fn gsm8k_model_solutions_agree_with_their_labels() {
    let settings = VerifySettings::default();
    let (mut total, mut agree) = (0, 0);
    let mut disagreements = Vec::new();
    for row in rows("gsm8k/example_model_solutions.jsonl") {
        let gold = forge::verify::extract::extract(row["ground_truth"].as_str().unwrap(), true).unwrap().0;
        for model in ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"] {
            let sample = &row[model];
            let verdict = verify_answer(&gold, sample["solution"].as_str().unwrap(), &settings);
            total += 1;
            if verdict.correct == sample["is_correct"].as_bool().unwrap() {
                agree += 1;
            } else {
                disagreements.push((gold.clone(), verdict.extracted.clone(), sample["is_correct"].clone()));
            }
        }
    }
    assert_eq!(total, 5276);
    assert!(
        agree * 100 >= total * 99,
        "{agree}/{total}; first disagreements: {:?}",
        &disagreements[..disagreements.len().min(10)]
    );
    assert!(disagreements.is_empty(), "{agree}/{total}: {disagreements:?}");
}

/// The answer extracted from every MATH reference solution is equivalent to the imported gold answer
/// (for MATH-500, the separate `answer` field).
#[test]
#[ignore = "needs ../shared/data"]
fn math_reference_solutions_match_their_gold_answers() {
    let settings = VerifySettings::default();
    let mut failures = Vec::new();
    let mut total = 0;
    for file in ["math/train.jsonl", "math/test.jsonl", "math500/test.jsonl"] {
        for row in rows(file) {
            let solution = row["solution"].as_str().unwrap();
            let gold = match row.get("answer").and_then(Value::as_str) {
                Some(a) => a.to_string(),
                None => match forge::verify::extract::boxed_answer(solution) {
                    Some(b) if !b.is_empty() => b,
                    _ => continue, // the two MATH train rows with an empty box have no gold
                },
            };
            total += 1;
            let verdict = verify_answer(&gold, solution, &settings);
            if !verdict.correct {
                failures.push((file, row["unique_id"].clone(), gold, verdict.extracted));
            }
        }
    }
    assert_eq!(total, 7498 + 5000 + 500);
    assert!(failures.is_empty(), "{} of {total} fail: {:?}", failures.len(), &failures[..failures.len().min(20)]);
}
