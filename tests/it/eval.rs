//! `forge eval`: the scores in `--json` recomputed from the traces it keeps, overall and per source.

use std::collections::BTreeMap;

use forge::verify::vote::majority;
use forge::verify::{DEFAULT_TOLERANCE, TraceRef, VerifySettings, verify_trace};
use serde_json::Value;

use crate::util::{Scratch, ok, problems, records};

/// A sample as judged here: right or not, and the answer found.
type Judged = (bool, Option<String>);

/// The sample teacher, 3 samples at temperature 0.8 on arithmetic from two sources: `--json` prints one
/// object whose `accuracy` is pass@1, and whose pass@1, pass@3 and maj@3 per source and overall equal
/// those recomputed here from the kept traces with forge's verifier and vote.
#[test]
fn eval_json_scores_per_source_match_the_traces() {
    let s = Scratch::new();
    let synth = s.path("synth");
    ok(&[
        &"synth",
        &"arith",
        &"--n",
        &"12",
        &"--ops",
        &"1..2",
        &"--max-operand",
        &"9",
        &"--seed",
        &"3",
        &"-o",
        &synth,
        &"-q",
    ]);
    let rows: Vec<String> = problems(&synth)
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            p.source = if i % 2 == 0 { "even" } else { "odd" }.into();
            serde_json::to_string(&p).unwrap()
        })
        .collect();
    let input = s.write("problems.jsonl", rows.join("\n"));
    let out = s.path("eval");
    let args: [&dyn AsRef<std::ffi::OsStr>; 14] = [
        &"eval",
        &"--model",
        &"samples/tiny-teacher",
        &"--problems",
        &input,
        &"-n",
        &"3",
        &"--temperature",
        &"0.8",
        &"--max-tokens",
        &"160",
        &"--json",
        &"-o",
        &out,
    ];
    let stdout = ok(&args);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["accuracy"], report["overall"]["pass_at_1"]);

    // per source: (pass@1 sum, pass@3 sum, maj@3 sum, problems)
    let mut by: BTreeMap<String, BTreeMap<String, Vec<Judged>>> = BTreeMap::new();
    for t in records(&out) {
        let text = |k: &str| t[k].as_str().map(str::to_string);
        let trace = TraceRef {
            domain: forge::formats::domain::Domain::of(&text("domain").unwrap()),
            gold: t["gold"].as_str(),
            output: t["completion"].as_str().unwrap(),
            prompt: None,
            metadata: t["metadata"].as_str(),
            tests: None,
            finish_reason: t["finish_reason"].as_str(),
        };
        let v = verify_trace(&trace, &VerifySettings::default()).unwrap();
        let per = by.entry(text("source").unwrap()).or_default();
        per.entry(text("problem_id").unwrap()).or_default().push((v.correct, v.extracted));
    }
    assert_eq!(by.keys().collect::<Vec<_>>(), ["even", "odd"]);
    let mut some_wrong_some_right = (false, false);
    for (source, problems) in &by {
        let n = problems.len() as f64;
        let (mut p1, mut p3, mut maj) = (0.0, 0.0, 0.0);
        for samples in problems.values() {
            assert_eq!(samples.len(), 3);
            let right = samples.iter().filter(|s| s.0).count();
            some_wrong_some_right.0 |= right < 3;
            some_wrong_some_right.1 |= right > 0;
            p1 += right as f64 / 3.0;
            p3 += f64::from(u8::from(right > 0));
            let answers: Vec<&str> = samples.iter().filter_map(|s| s.1.as_deref()).collect();
            let winner = majority(answers, DEFAULT_TOLERANCE).map(|v| v.answer);
            maj +=
                f64::from(u8::from(winner.is_some_and(|w| samples.iter().any(|s| s.0 && s.1.as_deref() == Some(&w)))));
        }
        let scores = &report["by_source"][source];
        assert_eq!(scores["problems"], problems.len());
        for (name, value) in [("pass_at_1", p1 / n), ("pass_at_n", p3 / n), ("maj_at_n", maj / n)] {
            assert!((scores[name].as_f64().unwrap() - value).abs() < 1e-9, "{source} {name}: {scores} vs {value}");
        }
    }
    assert_eq!(some_wrong_some_right, (true, true), "the samples mix right and wrong answers");
}
