use crate::util::{Scratch, ok, problems, shared_data};

#[test]
fn gsm8k_gold_and_annotated_steps() {
    let s = Scratch::new();
    let f = s.write(
        "g.jsonl",
        r#"{"question": "Natalia sold clips to 48 friends in April, and half as many in May. How many in all?", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 1,072"}"#,
    );
    let d = s.path("d");
    ok(&[&"import", &"--preset", &"gsm8k", &f, &"-o", &d, &"-q"]);
    let p = &problems(&d)[0];
    assert_eq!(p.gold.as_deref(), Some("1072"));
    assert_eq!(p.source, "gsm8k/g");
    assert!(p.id.starts_with('h') && p.id.len() == 17, "{}", p.id);
    let steps = p.steps.as_ref().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].calcs[0].expr, "48+24");
    // Same content, same id: reimporting is stable.
    let d2 = s.path("d2");
    ok(&[&"import", &"--preset", &"gsm8k", &f, &"-o", &d2, &"-q"]);
    assert_eq!(problems(&d2)[0].id, p.id);
}

#[test]
fn generic_mapping_from_csv_keeps_other_columns_as_metadata() {
    let s = Scratch::new();
    let f = s.write("m.csv", "id,q,a,level\n7,\"What is 2+2, really?\",4,easy\n8,What is 3+3?,6,easy\n");
    let d = s.path("d");
    ok(&[
        &"import",
        &"--prompt-col",
        &"q",
        &"--answer-col",
        &"a",
        &"--id-col",
        &"id",
        &"--source",
        &"mine",
        &f,
        &"-o",
        &d,
        &"-q",
    ]);
    let rows = problems(&d);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].id.as_str(), rows[0].prompt.as_str(), rows[0].gold.as_deref()),
        ("7", "What is 2+2, really?", Some("4"))
    );
    assert_eq!(rows[0].source, "mine");
    assert_eq!(rows[0].metadata, r#"{"level":"easy"}"#);
}

#[test]
fn code_presets_keep_runnable_tests() {
    let s = Scratch::new();
    let he = s.write(
        "he.jsonl",
        r#"{"task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n", "test": "def check(candidate):\n    assert candidate(1) == 1\n", "entry_point": "f"}"#,
    );
    let d = s.path("he");
    ok(&[&"import", &"--preset", &"humaneval", &he, &"-o", &d, &"-q"]);
    let p = &problems(&d)[0];
    assert_eq!(p.domain, "code");
    assert_eq!(p.gold, None);
    assert_eq!(p.tests.as_ref().unwrap()[0], "def check(candidate):\n    assert candidate(1) == 1\n\n\ncheck(f)\n");

    let mbpp = s.write(
        "mbpp.jsonl",
        r#"{"text": "Write f.", "code": "def f(x):\r\n  return x", "task_id": 2, "test_setup_code": "import math", "test_list": ["assert f(1) == 1", "assert f(2) == 2"], "challenge_test_list": []}"#,
    );
    let d = s.path("mbpp");
    ok(&[&"import", &"--preset", &"mbpp", &mbpp, &"-o", &d, &"-q"]);
    let p = &problems(&d)[0];
    assert_eq!(p.id, "2");
    assert!(p.prompt.ends_with("assert f(1) == 1\nassert f(2) == 2"), "{}", p.prompt);
    assert_eq!(p.tests.as_ref().unwrap()[1], "import math\nassert f(2) == 2\n");
    assert_eq!(p.steps.as_ref().unwrap()[0].text, "def f(x):\n  return x");
}

#[test]
fn countdown_reference_solutions_are_checked() {
    let s = Scratch::new();
    let good = s.write(
        "c.jsonl",
        r#"{"id": "t-0", "target": 55, "nums": [96, 7, 37, 74], "ref_solution": "74 - ((96 + 37) / 7)"}"#,
    );
    let d = s.path("d");
    ok(&[&"import", &"--preset", &"countdown", &good, &"-o", &d, &"-q"]);
    let p = &problems(&d)[0];
    let texts: Vec<&str> = p.steps.as_ref().unwrap().iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["96 + 37 = 133", "133 / 7 = 19", "74 - 19 = 55", "74 - (96 + 37) / 7 = 55"]);
    let bad = s.write(
        "bad.jsonl",
        r#"{"id": "t-1", "target": 56, "nums": [96, 7, 37, 74], "ref_solution": "74 - ((96 + 37) / 7)"}"#,
    );
    let (code, _, stderr) = crate::util::run(&[&"import", &"--preset", &"countdown", &bad, &"-o", &s.path("e")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.jsonl:1, column `ref_solution`: `74 - ((96 + 37) / 7)` does not reach 56"),
        "{stderr}"
    );
}

/// Every file in `../shared/data` imports with exactly its row count; MATH rows all get a gold answer
/// except the two whose solutions box nothing.
#[test]
#[ignore = "needs ../shared/data"]
fn every_shared_data_file_imports_with_its_row_count() {
    let s = Scratch::new();
    let cases = [
        ("gsm8k", "gsm8k/train.jsonl", 7473),
        ("gsm8k", "gsm8k/test.jsonl", 1319),
        ("gsm8k", "gsm8k/test_socratic.jsonl", 1319),
        ("math", "math/train.jsonl", 7500),
        ("math", "math/test.jsonl", 5000),
        ("math500", "math500/test.jsonl", 500),
        ("countdown", "countdown/train.jsonl", 8001),
        ("countdown", "countdown/test.jsonl", 2001),
        ("humaneval", "humaneval/HumanEval.jsonl", 164),
        ("mbpp", "mbpp/mbpp.jsonl", 974),
        ("aime", "aime/aime24.jsonl", 30),
        ("aime", "aime/aime_1983_2024.jsonl", 933),
    ];
    for (preset, file, rows) in cases {
        let d = s.path(&file.replace('/', "_"));
        ok(&[&"import", &"--preset", &preset, &shared_data(file), &"-o", &d, &"-q"]);
        let got = problems(&d);
        assert_eq!(got.len(), rows, "{file}");
        let no_gold: Vec<&str> = got.iter().filter(|p| p.gold.is_none()).map(|p| p.id.as_str()).collect();
        match preset {
            "humaneval" | "mbpp" => assert_eq!(no_gold.len(), rows, "{file}"),
            "math" if file == "math/train.jsonl" => {
                assert_eq!(no_gold, ["train/number_theory/7115.json", "train/number_theory/7117.json"]);
            }
            _ => assert!(no_gold.is_empty(), "{file}: {no_gold:?}"),
        }
    }
    // Spot checks against the sources.
    let math500 = problems(&s.path("math500_test.jsonl"));
    assert_eq!(math500[0].gold.as_deref(), Some("\\left( 3, \\frac{\\pi}{2} \\right)"));
    let train = problems(&s.path("math_train.jsonl"));
    assert_eq!(train[0].gold.as_deref(), Some("0"));
    assert_eq!(train[0].id, "train/algebra/0.json");
    let gsm = problems(&s.path("gsm8k_train.jsonl"));
    assert_eq!(gsm[0].gold.as_deref(), Some("72"));
}
