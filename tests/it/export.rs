use forge::model::Arch;
use forge::model::tiny::{Size, write};

use crate::util::{Scratch, ok};

/// Each export format, from a journey `sft` table and from curated traces, loads with HF `datasets`,
/// pyarrow, polars and DuckDB, and its `messages` have TRL's conversational shape (`scripts/check_exports.py`);
/// the traces themselves, with top-k log-probabilities, read the same in all three (`scripts/check_readers.py`;
/// `.ci/run` installs the Python packages).
#[test]
#[ignore = "needs Python with datasets, pyarrow, polars and duckdb (.ci/run installs them)"]
fn exports_load_in_datasets_pyarrow_polars_and_duckdb() {
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[&"synth", &"igsm", &"--n", &"40", &"--seed", &"5", &"-o", &problems, &"-q"]);
    let journey = s.path("journey");
    ok(&[&"journey", &"--input", &problems, &"--error-rate", &"0.4", &"-o", &journey, &"-q"]);
    let teacher = s.path("teacher");
    write(&teacher, Arch::Qwen2, Size::default(), 2).unwrap();
    let traces = s.path("traces");
    let spec = format!("local:{}", teacher.display());
    ok(&[
        &"generate",
        &"--teacher",
        &spec,
        &"--problems",
        &problems,
        &"--max-tokens",
        &"16",
        &"-n",
        &"2",
        &"--prefill",
        &"<think>\\n",
        &"--top-logprobs",
        &"3",
        &"-o",
        &traces,
        &"-q",
    ]);
    // the traces themselves (log-probabilities in byte stream split encoding): every reader decodes the
    // same values
    let python = std::env::var("FORGE_PYTHON").unwrap_or_else(|_| "python3".into());
    let readers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_readers.py");
    let out = std::process::Command::new(&python).arg(readers).arg(&traces).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let curated = s.path("curated");
    ok(&[&"filter", &"--input", &traces, &"--keep-incorrect", &"--no-verify", &"-o", &curated, &"-q"]);
    let curated_rows = forge::dataset::Input::open(&curated).unwrap().rows();
    assert!(curated_rows > 0);
    for (input, rows, reasoning) in [(&journey, 40u64, "think"), (&curated, curated_rows, "thought")] {
        let mut dirs = Vec::new();
        for format in ["hf", "messages", "sharegpt", "jsonl"] {
            let out = s.path(&format!("{}-{format}", input.file_name().unwrap().to_string_lossy()));
            ok(&[&"export", input, &"--format", &format, &"--reasoning", &reasoning, &"-o", &out, &"-q"]);
            dirs.push(out);
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_exports.py");
        let out = std::process::Command::new(&python).arg(script).args(&dirs).arg(rows.to_string()).output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Journey rows spliced from samples that reason in `<think>`: exported with `think`, the reply has one
/// reasoning block (not one nested in another); with `none`, no delimiter at all. The same for the
/// teacher strategy's rows, whose reasoning is delimited in the text only.
#[test]
fn spliced_reasoning_is_delimited_once_or_not_at_all() {
    let s = Scratch::new();
    let t = |sample: u32, reasoning: &str, answer: &str| {
        let mut row = crate::util::trace("p1", sample, "What is (3 + 4) * 2?", Some("14"), "");
        let solution = format!("The answer is \\boxed{{{answer}}}.");
        row["completion"] = format!("<think>\n{reasoning}\n</think>\n\n{solution}").into();
        row["reasoning"] = format!("\n{reasoning}\n").into();
        row["solution"] = format!("\n\n{solution}").into();
        row
    };
    let traces = s.write(
        "traces.jsonl",
        crate::util::jsonl(&[t(0, "First, 3 + 4 = 8.\nThen 8 * 2 = 16.", "16"), t(1, "3 + 4 = 7.\n7 * 2 = 14.", "14")]),
    );
    let sft = s.path("sft");
    ok(&[&"journey", &"--input", &traces, &"--strategy", &"splice", &"-o", &sft, &"-q"]);
    // a teacher-strategy row: the reasoning delimited in the reply's text, no `final` segment
    let teacher_row = serde_json::json!({
        "id": "q-teacher", "segments": [{"kind": "error", "start": 0, "end": 20, "train": true}],
        "messages": [{"role": "user", "content": "What is 2 + 2?"},
                     {"role": "assistant", "content": "<think>\n2 + 2 = 5\nWait, 2 + 2 = 4.\n</think>\n\nThe answer is 4."}],
    });
    let teacher = s.write("teacher.jsonl", crate::util::jsonl(&[teacher_row]));
    for (input, name) in [(&sft, "splice"), (&teacher, "teacher")] {
        for (style, opens) in [("think", 1), ("none", 0)] {
            let out = s.path(&format!("{name}-{style}"));
            ok(&[&"export", input, &"--format", &"jsonl", &"--reasoning", &style, &"-o", &out, &"-q"]);
            let text = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
            let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            let reply = row["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
            assert_eq!(reply.matches("<think>").count(), opens, "{name}, {style}: {reply}");
            assert_eq!(reply.matches("</think>").count(), opens, "{name}, {style}: {reply}");
            assert!(reply.ends_with("The answer is \\boxed{14}.") || reply.ends_with("The answer is 4."), "{reply}");
        }
    }
}
