use std::path::Path;

use forge::model::Arch;
use forge::model::tiny::{Size, write};

use crate::util::{Scratch, ok, records, run};

fn checkpoint(dir: &Path, arch: Arch) -> String {
    write(dir, arch, Size::default(), 11).unwrap();
    format!("local:{}", dir.display())
}

/// A tiny random teacher samples every problem n times: one row per sample with its provenance, token
/// counts within the limit, one logprob per generated token, and the same texts and logprobs whatever the
/// batch size.
#[test]
fn generate_writes_one_trace_per_sample_with_provenance() {
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[&"synth", &"arith", &"--n", &"12", &"--seed", &"3", &"-o", &problems, &"-q"]);
    for arch in [Arch::Qwen2, Arch::Llama] {
        let teacher = checkpoint(&s.path(&format!("ck-{arch:?}")), arch);
        let common = [
            "generate",
            "--teacher",
            &teacher,
            "-n",
            "3",
            "--max-tokens",
            "16",
            "--temperature",
            "1.0",
            "--seed",
            "5",
            "-q",
        ];
        let out = |name: &str, batch: &str| {
            let out = s.path(name);
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
                common.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
            args.extend([
                &"--problems" as &dyn AsRef<std::ffi::OsStr>,
                &problems,
                &"--batch-size",
                &batch,
                &"-o",
                &out,
            ]);
            ok(&args);
            records(&out)
        };
        let rows = out(&format!("traces-{arch:?}"), "4");
        assert_eq!(rows.len(), 36);
        for (i, row) in rows.iter().enumerate() {
            let k = (i % 3) as u64;
            assert_eq!(row["sample_index"].as_u64(), Some(k));
            assert_eq!(row["id"].as_str().unwrap(), format!("{}#{k}", row["problem_id"].as_str().unwrap()));
            assert_eq!(row["teacher"].as_str(), Some(teacher.as_str()));
            assert_eq!(row["sampling"]["seed"], 5);
            let tokens = row["completion_tokens"].as_u64().unwrap();
            assert!(tokens <= 16);
            assert_eq!(row["token_logprobs"].as_array().unwrap().len() as u64, tokens);
            assert!(row["token_logprobs"].as_array().unwrap().iter().all(|l| l.as_f64().unwrap() <= 0.0));
            let finish = row["finish_reason"].as_str().unwrap();
            assert!(finish == "length" && tokens == 16 || finish == "stop" && tokens < 16, "{finish} {tokens}");
            assert!(row["prompt_tokens"].as_u64().unwrap() > 20);
        }
        let distinct: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r["completion"].as_str().unwrap()).collect();
        assert!(distinct.len() > 30, "samples differ from each other");
        // one prompt at a time, and all twelve at once (36 rows in each decoding step)
        let samples = |rows: &[serde_json::Map<String, serde_json::Value>]| {
            rows.iter().map(|r| (r["completion"].clone(), r["token_logprobs"].clone())).collect::<Vec<_>>()
        };
        for batch in ["1", "12"] {
            let other = out(&format!("traces-{arch:?}-b{batch}"), batch);
            assert_eq!(samples(&rows), samples(&other), "{arch:?}: batch size {batch} changed the samples");
        }
        // `--shard I/3` three times into one directory: the rows of one run, in order
        let sharded = s.path(&format!("traces-{arch:?}-sharded"));
        for shard in ["2/3", "0/3", "1/3"] {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
                common.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
            args.extend([&"--problems" as &dyn AsRef<std::ffi::OsStr>, &problems, &"--shard", &shard, &"-o", &sharded]);
            ok(&args);
        }
        assert_eq!(samples(&rows), samples(&records(&sharded)), "{arch:?}: three shards differ from one run");
    }
}

/// Generation killed at three points (after 1, 3 and 6 shards), then finished: the shards finished before the
/// last kill are kept, and the result equals one clean run byte for byte.
#[test]
fn killed_generation_resumes_without_redoing_or_duplicating() {
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[&"synth", &"arith", &"--n", &"240", &"--seed", &"4", &"-o", &problems, &"-q"]);
    let teacher = checkpoint(&s.path("ck"), Arch::Qwen2);
    let problems = problems.to_str().unwrap().to_string();
    let args = [
        "generate",
        "--teacher",
        &teacher,
        "--problems",
        &problems,
        "-n",
        "2",
        "--max-tokens",
        "20",
        "--temperature",
        "0.9",
        "--rows-per-shard",
        "30",
    ];
    crate::dataset::kill_and_resume(&args, &s.path("killed"), &s.path("clean"), 30, &[1, 3, 6]);
}

/// Bad checkpoints and impossible requests fail before any work, naming the problem.
#[test]
fn generate_rejects_bad_checkpoints_and_overlong_requests() {
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[&"synth", &"arith", &"--n", &"2", &"-o", &problems, &"-q"]);
    let dir = s.path("ck");
    let teacher = checkpoint(&dir, Arch::Llama);
    let out = s.path("out");
    let (code, _, stderr) =
        run(&[&"generate", &"--teacher", &teacher, &"--problems", &problems, &"--max-tokens", &"5000", &"-o", &out]);
    assert_eq!(code, 2);
    assert!(stderr.contains("exceed the model's context of 2048"), "{stderr}");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let (code, _, stderr) =
        run(&[&"generate", &"--teacher", &teacher, &"--problems", &problems, &"-o", &out, &"--overwrite"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no `tokenizer.json`"), "{stderr}");
    let (code, _, stderr) =
        run(&[&"generate", &"--teacher", &"remote:x", &"--problems", &problems, &"-o", &out, &"--overwrite"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown teacher"), "{stderr}");
}

/// Greedy decoding with `--top-logprobs 3`: each position lists three tokens, most likely first, and the
/// chosen token is the first, with the same log-probability as `token_logprobs` records.
#[test]
fn greedy_generation_records_top_logprobs() {
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[&"synth", &"arith", &"--n", &"3", &"-o", &problems, &"-q"]);
    let teacher = checkpoint(&s.path("ck"), Arch::Llama);
    let out = s.path("out");
    ok(&[
        &"generate",
        &"--teacher",
        &teacher,
        &"--problems",
        &problems,
        &"--temperature",
        &"0",
        &"--top-logprobs",
        &"3",
        &"--max-tokens",
        &"12",
        &"-o",
        &out,
        &"-q",
    ]);
    for row in records(&out) {
        let top = row["top_logprobs"].as_array().unwrap();
        let chosen = row["token_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), chosen.len());
        for (position, lp) in top.iter().zip(chosen) {
            let position = position.as_array().unwrap();
            assert_eq!(position.len(), 3);
            let lps: Vec<f64> = position.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
            assert!(lps[0] >= lps[1] && lps[1] >= lps[2], "{lps:?}");
            assert!((lps[0] - lp.as_f64().unwrap()).abs() < 1e-6, "greedy takes the most likely token");
        }
    }
}

/// `--stop`: greedy generation ends right after the first place its text ends with the stop string (the
/// byte-level tokenizer makes every byte a token boundary), with `finish_reason = stop`.
#[test]
fn stop_strings_end_the_completion_where_they_first_appear() {
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[&"synth", &"arith", &"--n", &"2", &"-o", &problems, &"-q"]);
    let teacher = checkpoint(&s.path("ck"), Arch::Qwen2);
    let generate = |out: &str, stop: &[&str]| {
        let out = s.path(out);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"generate", &"--teacher", &teacher, &"--problems"];
        args.extend([&problems as &dyn AsRef<std::ffi::OsStr>, &"--temperature", &"0", &"--max-tokens", &"40"]);
        args.extend([&"-o" as &dyn AsRef<std::ffi::OsStr>, &out, &"-q"]);
        for stop in stop {
            args.extend([&"--stop" as &dyn AsRef<std::ffi::OsStr>, stop]);
        }
        ok(&args);
        records(&out)
    };
    let free = generate("free", &[]);
    let text = free[0]["completion"].as_str().unwrap().to_string();
    // a stop string from the middle of the first completion, on character boundaries
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 30, "{text:?}");
    let stop: String = chars[20..23].iter().collect();
    let end = text.find(&stop).unwrap() + stop.len();
    let stopped = generate("stopped", &[&stop, "no such text anywhere"]);
    assert_eq!(stopped[0]["completion"].as_str().unwrap(), &text[..end]);
    assert_eq!(stopped[0]["finish_reason"], "stop");
    // the other problem: cut at its own first occurrence, or not at all
    let (other, free_other) = (stopped[1]["completion"].as_str().unwrap(), free[1]["completion"].as_str().unwrap());
    let expected = free_other.find(&stop).map_or(free_other, |at| &free_other[..at + stop.len()]);
    assert_eq!(other, expected);
}

/// Budget forcing on the tiny teacher (byte tokens: a token is a byte), greedy, its thinking ending at
/// "The answer is": `--max-thinking-tokens 11` cuts every thinking longer than 11 tokens at exactly 11
/// (the plain completion's first 11 bytes, then the delimiter and cue) and leaves the others as they
/// were; `--min-thinking-tokens 30` replaces each end of thinking before 30 tokens with "Wait", and the
/// thinking it keeps is at least 30 tokens (unless the model ends the sample itself, without the delimiter),
/// each "Wait" standing where the model ended too early.
#[test]
fn budget_forcing_cuts_and_extends_at_exact_token_counts() {
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[
        &"synth",
        &"arith",
        &"--n",
        &"10",
        &"--ops",
        &"1..2",
        &"--max-operand",
        &"9",
        &"--seed",
        &"1000",
        &"-o",
        &problems,
        &"-q",
    ]);
    let end = "The answer is";
    let run_with = |name: &str, extra: &[&str]| {
        let out = s.path(name);
        let mut args: Vec<String> = ["generate", "--teacher", "local:samples/tiny-teacher", "--temperature", "0"]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.extend(["--max-tokens", "200", "-q", "--problems"].map(String::from));
        args.push(problems.display().to_string());
        args.extend(["--thinking-end", end, "--answer-cue", " "].map(String::from));
        args.extend(extra.iter().map(ToString::to_string));
        args.extend(["-o".to_string(), out.display().to_string()]);
        let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
        ok(&refs);
        records(&out)
    };
    let plain = run_with("plain", &[]);
    let cut = run_with("cut", &["--max-thinking-tokens", "11"]);
    let long = run_with("long", &["--min-thinking-tokens", "30"]);
    let server = |r: &serde_json::Map<String, serde_json::Value>| -> serde_json::Value {
        serde_json::from_str(r["server"].as_str().expect("budget forcing records its counts")).unwrap()
    };
    let (mut cuts, mut kept, mut extended) = (0, 0, 0);
    for ((p, c), l) in plain.iter().zip(&cut).zip(&long) {
        let plain_text = p["completion"].as_str().unwrap();
        let thinking = plain_text.find(end).expect("the tiny teacher ends its steps with the delimiter");
        let (c_text, c_server) = (c["completion"].as_str().unwrap(), server(c));
        if thinking > 11 {
            cuts += 1;
            assert_eq!(&c_text[..11], &plain_text[..11]);
            assert!(c_text[11..].starts_with(&format!("\n{end} ")), "{c_text:?}");
            assert_eq!((c_server["thinking_tokens"].as_u64(), c_server["cut"].as_bool()), (Some(11), Some(true)));
        } else {
            kept += 1;
            assert_eq!(c_text, plain_text, "a thinking within the budget is left as it was");
            assert_eq!(
                (c_server["thinking_tokens"].as_u64(), c_server["cut"].as_bool()),
                (Some(thinking as u64), Some(false))
            );
        }
        let (l_text, l_server) = (l["completion"].as_str().unwrap(), server(l));
        if thinking < 30 {
            extended += 1;
            assert_eq!(&l_text[..thinking + 4], format!("{}Wait", &plain_text[..thinking]), "{l_text:?}");
            // the thinking ends at the delimiter, or with the sample (the model may end it outright)
            let ended = l_text.rfind(end);
            let thought = &l_text[..ended.unwrap_or(l_text.len())];
            let segments: Vec<&str> = thought.split("Wait").collect();
            let waits = segments.len() - 1;
            assert_eq!(l_server["waits"].as_u64(), Some(waits as u64));
            let generated: usize = segments.iter().map(|s| s.len()).sum();
            assert_eq!(l_server["thinking_tokens"].as_u64(), Some(generated as u64));
            assert!(generated >= 30 || ended.is_none(), "{generated}: {l_text:?}");
            // every "Wait" replaced an end of thinking that came before 30 tokens
            let before_last: usize = segments[..waits].iter().map(|s| s.len()).sum();
            assert!(before_last < 30, "{l_text:?}");
        } else {
            assert_eq!(l_text, plain_text);
        }
    }
    assert!(cuts > 0 && kept > 0 && extended > 0, "cut {cuts}, kept {kept}, extended {extended}");
    let manifest = std::fs::read_to_string(s.path("cut").join("manifest.json")).unwrap();
    assert!(manifest.contains("\"max_thinking_tokens\": 11"), "the budget is in the provenance");
    let (code, _, err) = run(&[
        &"generate",
        &"--teacher",
        &"local:samples/tiny-teacher",
        &"--problems",
        &problems,
        &"--min-thinking-tokens",
        &"40",
        &"--max-thinking-tokens",
        &"20",
        &"-o",
        &s.path("bad"),
    ]);
    assert!(code != 0 && err.contains("above `--max-thinking-tokens 20`"), "{err}");
}

/// Adaptive sampling on the tiny teacher at temperature 1: `--until-correct 2` in rounds of 2 writes, per
/// problem, the first m rows of the fixed `-n 8` run (same texts), stopping at the first round with 2
/// right answers (or at 8); filtered to the first 2 right ones, both runs keep the same rows.
/// `--pass-rate` stops problems whose Wilson interval leaves the window. A run killed after its first
/// shards resumes to the same shards as an uninterrupted one.
#[test]
fn adaptive_sampling_stops_at_its_rule_and_keeps_fixed_ns_rows() {
    use forge::verify::pass_rate::{PassRate, Side};
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[
        &"synth",
        &"arith",
        &"--n",
        &"10",
        &"--ops",
        &"1..3",
        &"--max-operand",
        &"9",
        &"--seed",
        &"2000",
        &"-o",
        &problems,
        &"-q",
    ]);
    let generate = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["generate", "--teacher", "local:samples/tiny-teacher", "-n", "8", "--temperature", "1.0"]
                .map(String::from)
                .to_vec();
        args.extend(["--max-tokens", "60", "-q", "--problems"].map(String::from));
        args.push(problems.display().to_string());
        args.extend(extra.iter().map(ToString::to_string));
        args.extend(["-o".to_string(), s.path(name).display().to_string()]);
        args
    };
    let run_ok = |args: &[String]| {
        let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
        ok(&refs);
    };
    let adaptive_args = ["--until-correct", "2", "--samples-per-round", "2", "--rows-per-shard", "5"];
    run_ok(&generate("fixed", &[]));
    run_ok(&generate("adaptive", &adaptive_args));
    let by_problem = |name: &str| {
        let mut out: std::collections::BTreeMap<String, Vec<(String, bool)>> = Default::default();
        for t in records(&s.path(name)) {
            let row = (t["completion"].as_str().unwrap().to_string(), crate::util::verdict(&t).0);
            out.entry(t["problem_id"].as_str().unwrap().into()).or_default().push(row);
        }
        out
    };
    let (fixed, adaptive) = (by_problem("fixed"), by_problem("adaptive"));
    assert_eq!(fixed.len(), adaptive.len());
    let right = |rows: &[(String, bool)]| rows.iter().filter(|r| r.1).count();
    let (mut saved, mut at_n) = (0, 0);
    for (id, rows) in &adaptive {
        let m = rows.len();
        assert_eq!(rows.as_slice(), &fixed[id][..m], "{id}: the first {m} samples of the fixed run");
        assert!(m <= 8 && m % 2 == 0);
        assert!(right(&rows[..m - 2]) < 2, "{id}: sampled past its stop rule");
        assert!(right(rows) >= 2 || m == 8, "{id}: stopped before its rule");
        saved += 8 - m;
        at_n += usize::from(m == 8);
    }
    assert!(saved > 0 && at_n > 0, "some problems stop early ({saved} samples saved), some run to n ({at_n})");
    let filter = |name: &str| {
        let out = s.path(&format!("{name}-kept"));
        ok(&[
            &"filter",
            &"--input",
            &s.path(name),
            &"--no-exact-dup",
            &"--max-per-problem",
            &"2",
            &"--pick",
            &"first",
            &"-o",
            &out,
            &"-q",
        ]);
        records(&out).into_iter().map(|t| (t["id"].clone(), t["completion"].clone())).collect::<Vec<_>>()
    };
    let kept = filter("adaptive");
    assert!(!kept.is_empty());
    assert_eq!(kept, filter("fixed"), "the same kept rows");

    // the pass-rate window: a problem stops at the first round its interval leaves 0.1:0.6
    let window: PassRate = "0.1:0.6".parse().unwrap();
    run_ok(&generate(
        "window",
        &["--pass-rate", "0.1:0.6", "--pass-rate-confidence", "0.8", "--samples-per-round", "2"],
    ));
    let mut decided = 0;
    for (id, rows) in by_problem("window") {
        let m = rows.len();
        let right = |k: usize| rows[..k].iter().filter(|r| r.1).count() as u64;
        let side = |k: usize| window.decided(right(k), k as u64, 0.8);
        assert!((2..m).step_by(2).all(|k| side(k).is_none()), "{id}: sampled past a decided rate");
        assert!(side(m).is_some() || m == 8, "{id}: stopped undecided");
        decided += usize::from(side(m) == Some(Side::TooEasy) && m < 8);
    }
    assert!(decided > 0, "the tiny teacher finds some problems too easy");

    // killed once its first shards are finished, resumed: the same shards
    let killed = generate("killed", &adaptive_args);
    let os: Vec<std::ffi::OsString> = killed.iter().map(Into::into).collect();
    crate::util::kill_when(&os, &s.path("killed").join("part-00002.parquet"));
    assert!(!s.path("killed").join("manifest.json").exists(), "killed before it finished");
    run_ok(&killed);
    assert_eq!(crate::util::shard_bytes(&s.path("killed")), crate::util::shard_bytes(&s.path("adaptive")));
    let report = |name: &str| {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(s.path(name).join("manifest.json")).unwrap()).unwrap();
        m["report"]["flagged"].clone()
    };
    assert_eq!(report("killed"), report("adaptive"), "the resumed run counts why each problem stopped");
}
