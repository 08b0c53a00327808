//! `forge eval`: the scores in `--json` recomputed from the traces it keeps, overall and per source.

use std::collections::BTreeMap;

use forge::verify::DEFAULT_TOLERANCE;
use forge::verify::vote::majority;
use serde_json::Value;

use crate::util::{Scratch, ok, problems, records, verdict};

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
        let per = by.entry(text("source").unwrap()).or_default();
        per.entry(text("problem_id").unwrap()).or_default().push(verdict(&t));
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

/// `--strategy best-of-4 --sweep n=1,2,4`: one run of 4 samples, each point scored on the first k samples
/// of every problem: best-of-k (pass@k: any right), maj@k, best-by-logprob and tokens per problem equal
/// those recomputed from the kept traces; `sweep.csv` and `scaling.png` are written. `beam@3`: one trace
/// per problem (the best beam), `accuracy` its share right, tokens per problem every beam's tokens.
/// Strategy flags that contradict each other are refused.
#[test]
fn strategies_and_sweeps_score_what_they_name() {
    let s = Scratch::new();
    let problems = s.path("problems");
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
        &"1000",
        &"-o",
        &problems,
        &"-q",
    ]);
    let model = "samples/tiny-teacher";
    let out = s.path("best");
    let stdout = ok(&[
        &"eval",
        &"--model",
        &model,
        &"--problems",
        &problems,
        &"--strategy",
        &"best-of-4",
        &"--sweep",
        &"n=1,2,4",
        &"--temperature",
        &"1.0",
        &"--max-tokens",
        &"120",
        &"--json",
        &"-o",
        &out,
    ]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    // per problem: (sample index, right, answer, completion tokens, mean log-probability)
    type Sample = (u64, bool, Option<String>, u64, f64);
    let mut by_problem: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for t in records(&out) {
        let (right, answer) = verdict(&t);
        let logprobs: Vec<f64> = t["token_logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let mean = logprobs.iter().sum::<f64>() / logprobs.len() as f64;
        by_problem.entry(t["problem_id"].as_str().unwrap().into()).or_default().push((
            t["sample_index"].as_u64().unwrap(),
            right,
            answer,
            t["completion_tokens"].as_u64().unwrap(),
            mean,
        ));
    }
    let points = report["sweep"].as_array().unwrap();
    assert_eq!(
        points.iter().map(|p| p["point"].as_str().unwrap()).collect::<Vec<_>>(),
        ["best-of-1", "best-of-2", "best-of-4"]
    );
    let mut gains = false;
    for (p, k) in points.iter().zip([1usize, 2, 4]) {
        let (mut any, mut maj, mut by_logprob, mut tokens) = (0.0, 0.0, 0.0, 0u64);
        for samples in by_problem.values_mut() {
            samples.sort_by_key(|x| x.0);
            let first = &samples[..k];
            any += f64::from(u8::from(first.iter().any(|x| x.1)));
            let answers: Vec<&str> = first.iter().filter_map(|x| x.2.as_deref()).collect();
            let winner = majority(answers, DEFAULT_TOLERANCE).map(|v| v.answer);
            maj += f64::from(u8::from(winner.is_some_and(|w| first.iter().any(|x| x.1 && x.2.as_deref() == Some(&w)))));
            let best = first.iter().rev().max_by(|a, b| a.4.total_cmp(&b.4)).unwrap();
            by_logprob += f64::from(u8::from(best.1));
            tokens += first.iter().map(|x| x.3).sum::<u64>();
        }
        let n = by_problem.len() as f64;
        let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-9;
        assert!(close(&p["accuracy"], any / n), "{p}");
        assert!(close(&p["tokens_per_problem"], tokens as f64 / n), "{p}");
        if k > 1 {
            assert!(close(&p["scores"]["maj_at_n"], maj / n), "{p}");
            assert!(close(&p["scores"]["best_by_logprob"], by_logprob / n), "{p}");
        }
        gains |= k > 1 && any / n > points[0]["accuracy"].as_f64().unwrap();
    }
    assert!(gains, "more samples, more problems with a right one: {points:?}");
    assert_eq!(report["accuracy"], points[2]["accuracy"]);
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap().lines().count(), 4);
    assert_eq!(&std::fs::read(out.join("scaling.png")).unwrap()[..4], b"\x89PNG");

    let beam = s.path("beam");
    let stdout = ok(&[
        &"eval",
        &"--model",
        &model,
        &"--problems",
        &problems,
        &"--strategy",
        &"beam@3",
        &"--max-tokens",
        &"120",
        &"--json",
        &"-o",
        &beam,
    ]);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let traces = records(&beam);
    assert_eq!(traces.len(), 12, "one trace per problem: the best beam");
    let right = traces.iter().filter(|t| verdict(t).0).count() as f64 / 12.0;
    let decoded: u64 = traces
        .iter()
        .map(|t| {
            serde_json::from_str::<Value>(t["server"].as_str().unwrap()).unwrap()["decoded_tokens"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(report["strategy"], "beam@3");
    assert!((report["accuracy"].as_f64().unwrap() - right).abs() < 1e-9);
    assert!((report["overall"]["tokens_per_problem"].as_f64().unwrap() - decoded as f64 / 12.0).abs() < 1e-9);
    assert!(decoded as f64 > 2.0 * traces.iter().map(|t| t["completion_tokens"].as_f64().unwrap()).sum::<f64>());

    for (args, message) in [
        (vec!["-n", "4", "--strategy", "maj@4"], "`-n 4` with `--strategy maj@4`"),
        (vec!["--strategy", "greedy", "--sweep", "n=1,2"], "`greedy` has none"),
        (vec!["--strategy", "best-of-x"], "is not a strategy"),
        (vec!["--strategy", "beam@2", "--temperature", "0.7"], "which does not sample"),
    ] {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"eval", &"--model", &model, &"--problems", &problems];
        all.extend(args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        let (code, _, err) = crate::util::run(&all);
        assert!(code != 0 && err.contains(message), "{args:?}: {err}");
    }
}

/// Best-of-n with a reward model picking (`--reward-model`, the random one of
/// `tests/fixtures/reward-model`): `best_by_reward` is the share of problems whose highest-scored sample
/// (the first of equals) is right, the scores recomputed here from the kept traces with the same model and
/// the conversations the policy saw; absent without `--reward-model`; refused with a one-sample strategy.
#[test]
fn best_of_n_by_a_reward_model() {
    use forge::model::chat::Message;
    use forge::teacher::reward_model::{RewardModel, conversation};
    let s = Scratch::new();
    let problems = s.path("problems");
    ok(&[
        &"synth",
        &"arith",
        &"--n",
        &"16",
        &"--ops",
        &"2",
        &"--max-operand",
        &"20",
        &"--seed",
        &"7",
        &"-o",
        &problems,
        &"-q",
    ]);
    let rm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reward-model");
    let out = s.path("best");
    let args = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"eval",
            &"--model",
            &"samples/tiny-teacher",
            &"--problems",
            &problems,
            &"--strategy",
            &"best-of-4",
            &"--temperature",
            &"1.0",
            &"--max-tokens",
            &"80",
            &"--json",
            &"-o",
            &out,
        ];
        a.extend_from_slice(extra);
        ok(&a)
    };
    let report: Value = serde_json::from_str(&args(&[&"--reward-model", &rm])).unwrap();
    let model = RewardModel::open(&rm).unwrap();
    let prompt = forge::teacher::traces::PromptConfig::default();
    let mut by_problem: BTreeMap<String, Vec<(u64, bool, f32)>> = BTreeMap::new();
    let rows = records(&out);
    let text = |t: &serde_json::Map<String, Value>, c: &str| t[c].as_str().unwrap().to_string();
    let conversations: Vec<Vec<Message>> = rows
        .iter()
        .map(|t| conversation(&prompt, &text(t, "domain"), &text(t, "prompt"), &text(t, "completion")))
        .collect();
    for (t, reward) in rows.iter().zip(model.score(&conversations).unwrap()) {
        let problem = t["problem_id"].as_str().unwrap().to_string();
        by_problem.entry(problem).or_default().push((t["sample_index"].as_u64().unwrap(), verdict(t).0, reward));
    }
    let (mut right, mut lowest_right) = (0.0, 0.0);
    for samples in by_problem.values_mut() {
        samples.sort_by_key(|x| x.0);
        let best = samples.iter().rev().max_by(|a, b| a.2.total_cmp(&b.2)).unwrap();
        right += f64::from(u8::from(best.1));
        lowest_right += f64::from(u8::from(samples.iter().min_by(|a, b| a.2.total_cmp(&b.2)).unwrap().1));
    }
    let want = right / by_problem.len() as f64;
    assert!((report["overall"]["best_by_reward"].as_f64().unwrap() - want).abs() < 1e-9, "{report}");
    // picking the lowest reward would score otherwise, or the test could not tell a pick from its opposite
    assert_ne!(right, lowest_right, "{by_problem:?}");

    let again: Value = serde_json::from_str(&args(&[])).unwrap();
    assert!(again["overall"].get("best_by_reward").is_none(), "{again}");
    assert_eq!(again["overall"]["pass_at_n"], report["overall"]["pass_at_n"], "the same traces, reused");
    let (code, _, err) = crate::util::run(&[
        &"eval",
        &"--model",
        &"samples/tiny-teacher",
        &"--problems",
        &problems,
        &"--reward-model",
        &rm,
        &"-o",
        &s.path("greedy"),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--reward-model") && err.contains("draws one"), "{err}");
}
