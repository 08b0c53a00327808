use forge::model::Arch;
use forge::model::tiny::{Size, write};

use crate::util::{Scratch, ok};

/// Each export format, from a journey `sft` table and from curated traces, loads with HF `datasets`,
/// pyarrow, polars and DuckDB, and its `messages` have TRL's conversational shape
/// (`scripts/check_exports.py`; `.ci/run` installs the Python packages).
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
        &"-o",
        &traces,
        &"-q",
    ]);
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
        let python = std::env::var("FORGE_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = std::process::Command::new(python).arg(script).args(&dirs).arg(rows.to_string()).output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
