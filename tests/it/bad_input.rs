use crate::util::{Scratch, ok, run};

/// Run an import that must fail: exit status 2, nothing written, and the first stderr line (with the
/// scratch path shown as `<dir>`) returned.
fn fails(s: &Scratch, args: &[&str]) -> String {
    let out = s.path("out");
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"import"];
    for a in args {
        all.push(a);
    }
    all.push(&"-o");
    all.push(&out);
    let (code, _, stderr) = run(&all);
    assert_eq!(code, 2, "expected exit status 2, stderr:\n{stderr}");
    assert!(!out.exists(), "a failed import left `{}` behind", out.display());
    let dir = s.path("").display().to_string();
    stderr.lines().next().unwrap_or_default().replace(&dir, "<dir>/").replace("<dir>//", "<dir>/")
}

#[test]
fn json_syntax_error_names_the_line() {
    let s = Scratch::new();
    let f = s.write(
        "bad.jsonl",
        "{\"question\": \"a\", \"answer\": \"#### 1\"}\n{\"question\": \"b\", \"answer\" \"#### 2\"}\n",
    );
    let err = fails(&s, &["--preset", "gsm8k", f.to_str().unwrap()]);
    assert_eq!(err, "error: <dir>/bad.jsonl:2: JSON syntax error at character 28: expected `:` at line 1 column 28");
}

#[test]
fn invalid_utf8_names_the_line() {
    let s = Scratch::new();
    let mut bytes = b"{\"question\": \"a\", \"answer\": \"#### 1\"}\n\n".to_vec();
    bytes.extend_from_slice(b"{\"question\": \"caf\xe9\", \"answer\": \"#### 2\"}\n");
    let f = s.write("latin1.jsonl", bytes);
    let err = fails(&s, &["--preset", "gsm8k", f.to_str().unwrap()]);
    assert_eq!(err, "error: <dir>/latin1.jsonl:3: invalid UTF-8 at byte 18 of the line");
}

#[test]
fn missing_column_names_it_and_hints_at_the_mapping() {
    let s = Scratch::new();
    let f = s.write("other.jsonl", "{\"q\": \"a\", \"a\": \"1\"}\n");
    let err = fails(&s, &["--preset", "gsm8k", f.to_str().unwrap()]);
    assert_eq!(err, "error: <dir>/other.jsonl:1, column `question`: required column is missing");
    let (_, _, stderr) = run(&[&"import", &"--preset", &"gsm8k", &f, &"-o", &s.path("out")]);
    assert!(stderr.contains("hint: the row has columns `q`, `a`"), "{stderr}");
}

#[test]
fn wrong_type_names_the_column() {
    let s = Scratch::new();
    let f = s.write("typed.jsonl", "{\"question\": 5, \"answer\": \"#### 1\"}\n");
    let err = fails(&s, &["--preset", "gsm8k", f.to_str().unwrap()]);
    assert_eq!(err, "error: <dir>/typed.jsonl:1, column `question`: expected a string, found a number");
}

#[test]
fn empty_file_is_an_error() {
    let s = Scratch::new();
    let f = s.write("empty.jsonl", "\n\n");
    let err = fails(&s, &["--preset", "gsm8k", f.to_str().unwrap()]);
    assert_eq!(err, "error: <dir>/empty.jsonl: the file has no rows");
}

#[test]
fn truncated_parquet_is_an_error() {
    let s = Scratch::new();
    let d = s.path("made");
    ok(&[&"synth", &"arith", &"--n", &"500", &"-o", &d, &"-q"]);
    let bytes = std::fs::read(d.join("part-00000.parquet")).unwrap();
    let f = s.write("cut.parquet", &bytes[..bytes.len() / 2]);
    let err = fails(&s, &["--prompt-col", "prompt", f.to_str().unwrap()]);
    assert!(err.starts_with("error: <dir>/cut.parquet: not a readable Parquet file: "), "{err}");
    let (code, _, stderr) = run(&[&"stats", &f]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cut.parquet: not a readable Parquet file"), "{stderr}");
}

#[test]
fn unknown_preset_lists_the_known_ones() {
    let s = Scratch::new();
    let f = s.write("x.jsonl", "{\"question\": \"a\", \"answer\": \"#### 1\"}\n");
    let (code, _, stderr) = run(&[&"import", &"--preset", &"gsm9k", &f, &"-o", &s.path("out")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'gsm9k' for '--preset <PRESET>'"), "{stderr}");
    assert!(stderr.contains("gsm8k"), "{stderr}");
    assert!(!s.path("out").exists());
}

#[test]
fn neither_preset_nor_mapping_is_an_error_with_a_hint() {
    let s = Scratch::new();
    let f = s.write("x.jsonl", "{\"question\": \"a\"}\n");
    let (code, _, stderr) = run(&[&"import", &f, &"-o", &s.path("out")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("hint: pass `--preset NAME`"), "{stderr}");
}

/// Bad input found after several shards were written still leaves no output behind.
#[test]
fn late_bad_row_removes_the_shards_already_written() {
    let s = Scratch::new();
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!("{{\"question\": \"q{i}\", \"answer\": \"#### {i}\"}}\n"));
    }
    text.push_str("{\"question\": \"last\"}\n");
    let f = s.write("late.jsonl", text);
    let err = fails(&s, &["--preset", "gsm8k", "--rows-per-shard", "1000", f.to_str().unwrap()]);
    assert_eq!(err, "error: <dir>/late.jsonl:5001, column `answer`: required column is missing");
}
