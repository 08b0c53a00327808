use std::path::Path;

use forge::dataset::{Input, SftRow, TableKind};
use forge::verify::{TraceRef, VerifySettings, verify_trace};
use serde_json::Value;

use crate::util::{Scratch, ok};

fn rows(dir: &Path) -> Vec<SftRow> {
    let input = Input::open(dir).unwrap();
    assert_eq!(input.kind, Some(TableKind::Sft));
    input.rows_of::<SftRow>(TableKind::Sft, 0..input.rows()).flat_map(|b| b.unwrap()).collect()
}

/// `a op b ... = r` in a text: every written calculation, evaluated exactly.
fn value(expr: &str) -> Option<String> {
    Some(forge::expr::parse(expr).ok()?.eval().ok()?.as_int()?.to_string())
}

/// The guarantees on every task: segments cover the reply in order; every error segment holds a
/// calculation the checker rejects (its written value is not the step's) and the fix after it holds the
/// right one; the final answer verifies; the error rate is near the one asked for; and with rate 0 the
/// reply is the clean reference solution.
#[test]
fn synthetic_journeys_keep_their_guarantees_on_every_task() {
    let s = Scratch::new();
    for (task, extra) in [("arith", vec![]), ("igsm", vec!["--ops", "3..5"]), ("countdown", vec![])] {
        let problems = s.path(task);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"synth", &task, &"--n", &"300", &"--seed", &"2", &"-o", &problems, &"-q"];
        args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        ok(&args);
        let journey = s.path(&format!("{task}-j"));
        ok(&[
            &"journey",
            &"--input",
            &problems,
            &"--error-rate",
            &"0.5",
            &"--max-errors",
            &"9",
            &"-o",
            &journey,
            &"-q",
        ]);
        let written = rows(&journey);
        assert_eq!(written.len(), 300, "{task}: every problem has a row");
        let problem_meta: std::collections::HashMap<String, String> =
            crate::util::problems(&problems).into_iter().map(|p| (p.id, p.metadata)).collect();
        let mut errors = 0;
        let steps: usize = crate::util::problems(&problems)
            .iter()
            .map(|p| p.steps.as_ref().unwrap().iter().filter(|s| !s.calcs.is_empty()).count())
            .sum();
        for r in &written {
            let reply = &r.completion[0].content;
            assert_eq!(r.messages.last().unwrap().content, *reply);
            assert_eq!(r.prompt.len() + 1, r.messages.len());
            let chars: Vec<char> = reply.chars().collect();
            assert_eq!(r.segments.first().unwrap().start, 0);
            assert_eq!(r.segments.last().unwrap().end as usize, chars.len(), "{task}: spans cover the reply");
            let texts: Vec<(String, String)> = r
                .segments
                .iter()
                .map(|sp| {
                    (
                        sp.kind.clone(),
                        chars[sp.start as usize..sp.end as usize].iter().collect::<String>().trim_start().to_string(),
                    )
                })
                .collect();
            for w in r.segments.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let meta: Value = serde_json::from_str(&r.metadata).unwrap();
            let inserted = meta["errors"].as_array().unwrap();
            let mut k = 0;
            for (i, (kind, text)) in texts.iter().enumerate() {
                if kind == "error" {
                    errors += 1;
                    let written = inserted[k]["written"].as_str().unwrap();
                    if inserted[k]["type"] == "unavailable" {
                        // the detection names a quantity the reply defines only later
                        let later: String = texts[i + 1..].iter().map(|t| t.1.as_str()).collect::<Vec<_>>().join("\n");
                        let before: String = texts[..i].iter().map(|t| t.1.as_str()).collect::<Vec<_>>().join("\n");
                        let named = texts[i + 1].1.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
                            w.len() == 1
                                && later.contains(&format!("Define {w} as"))
                                && !before.contains(&format!("Define {w} as"))
                        });
                        assert!(named, "{task}: {:?} after {text:?}", texts[i + 1].1);
                    }
                    let expected = inserted[k]["expected"].as_str().unwrap();
                    k += 1;
                    assert!(text.contains(written), "{task}: {text:?} holds {written:?}");
                    let (w_expr, w_result) = written.rsplit_once(" = ").unwrap();
                    let (e_expr, e_result) = expected.rsplit_once(" = ").unwrap();
                    assert_eq!(value(e_expr).as_deref(), Some(e_result), "{task}: the reference checks");
                    assert!(
                        value(w_expr).as_deref() != Some(w_result) || w_result != e_result,
                        "{task}: the checker would accept {written}"
                    );
                    assert_eq!(texts[i + 1].0, "detect");
                    assert_eq!(texts[i + 2].0, "fix");
                    assert!(texts[i + 2].1.contains(expected), "{task}: the fix holds {expected}");
                }
            }
            assert_eq!(k, inserted.len());
            assert_eq!(texts.last().unwrap().0, "final");
            let problem = TraceRef {
                domain: forge::formats::domain::Domain::of(&r.domain),
                gold: r.gold.as_deref(),
                output: reply,
                prompt: None,
                metadata: Some(&problem_meta[&r.problem_id]),
                tests: None,
                finish_reason: None,
            };
            assert!(verify_trace(&problem, &VerifySettings::default()).unwrap().correct, "{task}: {reply}");
        }
        // errors per checkable step: p = 0.5, less the steps no error of the drawn type fits
        let rate = errors as f64 / steps as f64;
        assert!((0.38..0.55).contains(&rate), "{task}: error rate {rate}");

        let clean = s.path(&format!("{task}-clean"));
        ok(&[&"journey", &"--input", &problems, &"--error-rate", &"0", &"-o", &clean, &"-q"]);
        let problems = crate::util::problems(&problems);
        for (r, p) in rows(&clean).iter().zip(&problems) {
            let steps: Vec<&str> = p.steps.as_ref().unwrap().iter().map(|s| s.text.as_str()).collect();
            assert!(r.completion[0].content.starts_with(&steps.join("\n")), "{task}: clean = reference");
            assert!(r.segments.iter().all(|s| s.kind == "step" || s.kind == "final"));
        }
    }
}

/// `--mask-errors` takes the error segments out of the loss and nothing else; `--marker back` writes the
/// `[BACK]` token; `--strategy verify` confirms correct steps without any error.
#[test]
fn knobs_change_masks_markers_and_strategy() {
    let s = Scratch::new();
    let problems = s.path("igsm");
    ok(&[&"synth", &"igsm", &"--n", &"100", &"--seed", &"3", &"-o", &problems, &"-q"]);
    let masked = s.path("masked");
    ok(&[
        &"journey",
        &"--input",
        &problems,
        &"--error-rate",
        &"0.5",
        &"--mask-errors",
        &"--marker",
        &"back",
        &"-o",
        &masked,
        &"-q",
    ]);
    let mut saw_error = false;
    for r in rows(&masked) {
        for sp in &r.segments {
            assert_eq!(sp.train, sp.kind != "error", "{}", sp.kind);
            saw_error |= sp.kind == "error";
        }
        let detects = r.segments.iter().filter(|s| s.kind == "detect").count();
        assert_eq!(r.completion[0].content.matches("[BACK]").count(), detects);
    }
    assert!(saw_error);

    // late detection: the steps between an error and its detection are correct steps, as many as the
    // provenance says, and the fix after the detection redoes the wrong calculation
    let late = s.path("late");
    ok(&[
        &"journey",
        &"--input",
        &problems,
        &"--error-rate",
        &"0.5",
        &"--detect-after",
        &"2",
        &"--error-types",
        &"arithmetic,operator",
        &"-o",
        &late,
        &"-q",
    ]);
    let mut delayed = 0;
    for r in rows(&late) {
        let meta: Value = serde_json::from_str(&r.metadata).unwrap();
        let kinds: Vec<&str> = r.segments.iter().map(|s| s.kind.as_str()).collect();
        let reply: Vec<char> = r.completion[0].content.chars().collect();
        let text =
            |i: usize| reply[r.segments[i].start as usize..r.segments[i].end as usize].iter().collect::<String>();
        let error_at: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i] == "error").collect();
        for (e, error) in error_at.iter().zip(meta["errors"].as_array().unwrap()) {
            let after = error["detected_after"].as_u64().unwrap() as usize;
            assert!(after <= 2);
            assert!(kinds[e + 1..=e + after].iter().all(|k| *k == "step"), "{kinds:?}");
            assert_eq!((kinds[e + after + 1], kinds[e + after + 2]), ("detect", "fix"), "{kinds:?}");
            assert!(text(e + after + 2).contains(error["expected"].as_str().unwrap()));
            delayed += usize::from(after > 0);
        }
    }
    assert!(delayed > 10, "{delayed} errors detected late");

    let arith = s.path("arith");
    ok(&[&"synth", &"arith", &"--n", &"200", &"--seed", &"3", &"-o", &arith, &"-q"]);
    let verify = s.path("verify");
    ok(&[&"journey", &"--input", &arith, &"--strategy", &"verify", &"-o", &verify, &"-q"]);
    let rows = rows(&verify);
    assert!(rows.iter().all(|r| r.segments.iter().all(|s| s.kind != "error")));
    let verifies: usize = rows.iter().map(|r| r.segments.iter().filter(|s| s.kind == "verify").count()).sum();
    let steps: usize = rows.iter().map(|r| r.segments.iter().filter(|s| s.kind == "step").count()).sum();
    let share = verifies as f64 / steps as f64;
    assert!((0.3..0.5).contains(&share), "verify share {share}");
}

/// GSM8K's calculator annotations are checkable steps: journeys over the real train set keep the
/// guarantees (the report counts problems without a checkable step instead of writing them).
#[test]
#[ignore = "needs ../shared/data"]
fn gsm8k_train_gets_journeys() {
    let s = Scratch::new();
    let problems = s.path("gsm8k");
    let train = crate::util::shared_data("gsm8k/train.jsonl");
    ok(&[&"import", &"--preset", &"gsm8k", &train, &"-o", &problems, &"-q"]);
    let out = s.path("j");
    ok(&[&"journey", &"--input", &problems, &"--error-rate", &"0.3", &"-o", &out, &"-q"]);
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let report = &manifest["report"];
    let (rows_in, rows_out) = (report["rows_in"].as_u64().unwrap(), report["rows_out"].as_u64().unwrap());
    let rejected: u64 = report["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(rows_in, rows_out + rejected);
    assert!(rows_out as f64 > 0.95 * rows_in as f64, "{report}");
    let written = rows(&out);
    let errors: usize = written.iter().map(|r| r.segments.iter().filter(|s| s.kind == "error").count()).sum();
    // 3,625 measured: calculations with decimals, or written differently from their annotation, get none
    assert!(errors > 3000, "{errors} errors");
    for r in &written {
        let meta: Value = serde_json::from_str(&r.metadata).unwrap();
        assert!(meta["errors"].as_array().unwrap().iter().all(|e| e["checked"] == true));
        let v = forge::verify::verify_answer(
            r.gold.as_deref().unwrap(),
            &r.completion[0].content,
            &VerifySettings::default(),
        );
        assert!(v.correct, "{}", r.completion[0].content);
    }
}

/// `--strategy splice` on hand-written samples: the wrong one is cut at its first failing calculation (or
/// before its wrong answer when every calculation checks out), the transition states the recomputation,
/// a right sample follows, and problems without both kinds of sample are counted, not written.
#[test]
fn splices_cut_the_wrong_sample_at_its_first_failing_step() {
    let s = Scratch::new();
    let t = crate::util::trace;
    let q = "What is (3 + 4) * 2?";
    let igsm_a = "Define a as M. a = 1.";
    let (igsm_wrong, igsm_right) =
        ("Define b as F. b = 5 * a = (5 * 1) % 7 = 6.", "Define b as F. b = 5 * a = (5 * 1) % 7 = 5.");
    let traces = s.write(
        "traces.jsonl",
        crate::util::jsonl(&[
            t("p1", 0, q, Some("14"), "First, 3 + 4 = 8.\nThen 8 * 2 = 16.\nThe answer is \\boxed{16}."),
            t("p1", 1, q, Some("14"), "3 + 4 = 7.\n7 * 2 = 14.\nThe answer is \\boxed{14}."),
            t("p2", 0, "What is 2 + 2?", Some("4"), "2 + 2 = 4.\nThe answer is \\boxed{4}."),
            t("p3", 0, "What is 5 - 1?", Some("4"), "I think it is 6.\nThe answer is \\boxed{6}."),
            t("p3", 1, "What is 5 - 1?", Some("4"), "5 - 1 = 4.\nThe answer is \\boxed{4}."),
            t("p4", 0, "What is 1 + 1?", Some("2"), "1 + 1 = 3.\nThe answer is \\boxed{3}."),
            t(
                "p5",
                0,
                "M is 1. F is 5 times M. What is F?",
                Some("5"),
                &format!("{igsm_a}\n{igsm_wrong}\nThe answer is \\boxed{{6}}."),
            ),
            t(
                "p5",
                1,
                "M is 1. F is 5 times M. What is F?",
                Some("5"),
                &format!("{igsm_a}\n{igsm_right}\nThe answer is \\boxed{{5}}."),
            ),
        ]),
    );
    let out = s.path("splice");
    ok(&[&"journey", &"--input", &traces, &"--strategy", &"splice", &"--mask-errors", &"-o", &out, &"-q"]);
    let written = rows(&out);
    assert_eq!(written.iter().map(|r| r.problem_id.as_str()).collect::<Vec<_>>(), ["p1", "p3", "p5"]);
    // `--shard` slices problems, not rows: p3's two samples sit on both sides of the row midpoint, and two
    // shards still write the rows of one run, byte for byte
    let sharded = s.path("sharded");
    for shard in ["0/2", "1/2"] {
        let args = [&"journey" as &dyn AsRef<std::ffi::OsStr>, &"--input", &traces, &"--strategy", &"splice"];
        ok(&[&args[..], &[&"--mask-errors", &"--shard", &shard, &"-o", &sharded, &"-q"]].concat());
    }
    let both = rows(&sharded);
    assert_eq!(
        both.iter().map(|r| (&r.problem_id, &r.completion[0].content)).collect::<Vec<_>>(),
        written.iter().map(|r| (&r.problem_id, &r.completion[0].content)).collect::<Vec<_>>()
    );

    let p1 = &written[0];
    let reply = &p1.completion[0].content;
    let (before, after) = reply.split_once("\n3 + 4 = 7.").expect("the right sample follows");
    assert!(before.starts_with("First, 3 + 4 = 8.\n"), "cut after the failing line: {reply}");
    assert!(!before.contains("8 * 2"), "nothing after the failing line is kept: {reply}");
    assert!(before.contains("3 + 4") && before.contains('7'), "the transition recomputes: {before}");
    assert!(after.ends_with("The answer is \\boxed{14}."));
    let kinds: Vec<(&str, bool)> = p1.segments.iter().map(|s| (s.kind.as_str(), s.train)).collect();
    assert_eq!(kinds, [("error", false), ("detect", true), ("fix", true)]);
    let meta: Value = serde_json::from_str(&p1.metadata).unwrap();
    assert_eq!(meta["cut"]["located"], "step");
    assert_eq!(meta["cut"]["written"], "3 + 4 = 8");
    assert_eq!(meta["cut"]["expected"], "3 + 4 = 7");
    assert_eq!(meta["cut"]["line"], 0);
    assert_eq!((meta["wrong_sample"].as_u64(), meta["right_sample"].as_u64()), (Some(0), Some(1)));

    // p3's wrong sample has no failing calculation: kept up to its answer, which the transition rejects
    let p3 = &written[1].completion[0].content;
    assert!(p3.starts_with("I think it is 6.\n") && !p3.contains("\\boxed{6}"), "{p3}");
    assert!(p3.contains('6') && p3.ends_with("\\boxed{4}."), "{p3}");
    assert_eq!(serde_json::from_str::<Value>(&written[1].metadata).unwrap()["cut"]["located"], "answer");

    // an iGSM solution: cut after the wrong modular step, which the transition redoes
    let p5 = &written[2].completion[0].content;
    assert!(p5.starts_with(&format!("{igsm_a}\n{igsm_wrong}\n")), "{p5}");
    assert!(p5.ends_with(&format!("{igsm_a}\n{igsm_right}\nThe answer is \\boxed{{5}}.")), "{p5}");
    let meta: Value = serde_json::from_str(&written[2].metadata).unwrap();
    assert_eq!((meta["cut"]["line"].as_u64(), meta["cut"]["expected"].as_str()), (Some(1), Some("(5 * 1) % 7 = 5")));

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let rejected = &report["report"]["rejected"];
    assert_eq!((rejected["no_wrong_sample"].as_u64(), rejected["no_right_sample"].as_u64()), (Some(1), Some(1)));
}

/// Splices and teacher corrections of the tiny teacher's real samples keep their guarantees (see
/// `check_corrections`); without `--teacher` the teacher strategy stops with a clear error.
#[test]
fn splices_and_teacher_corrections_of_real_samples_keep_their_guarantees() {
    let s = Scratch::new();
    let teacher = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher");
    let (problems, traces, out) = (s.path("problems"), s.path("traces"), s.path("splice"));
    ok(&[
        &"synth",
        &"arith",
        &"--n",
        &"40",
        &"--ops",
        &"1..2",
        &"--max-operand",
        &"9",
        &"--seed",
        &"7",
        &"-o",
        &problems,
        &"-q",
    ]);
    let teacher_arg = format!("local:{}", teacher.display());
    ok(&[
        &"generate",
        &"--teacher",
        &teacher_arg,
        &"--problems",
        &problems,
        &"-n",
        &"4",
        &"--temperature",
        &"1.0",
        &"--max-tokens",
        &"160",
        &"--batch-size",
        &"40",
        &"-o",
        &traces,
        &"-q",
    ]);
    ok(&[&"journey", &"--input", &traces, &"--strategy", &"splice", &"-o", &out, &"-q"]);
    let samples = crate::util::records(&traces);
    check_corrections(&out, &samples, "fix");

    // the teacher continues each wrong prefix after a cue; only verified continuations are kept
    let corrected = s.path("teacher");
    let (code, _, err) =
        crate::util::run(&[&"journey", &"--input", &traces, &"--strategy", &"teacher", &"-o", &corrected]);
    assert!(code != 0 && err.contains("--teacher"), "{err}");
    let (code, _, err) =
        crate::util::run(&[&"journey", &"--input", &problems, &"--strategy", &"splice", &"-o", &corrected]);
    assert!(code != 0 && err.contains("reads a traces table") && err.contains("problems table"), "{err}");
    ok(&[
        &"journey",
        &"--input",
        &traces,
        &"--strategy",
        &"teacher",
        &"--teacher",
        &teacher_arg,
        &"--continuations",
        &"4",
        &"--temperature",
        &"0.8",
        &"--max-tokens",
        &"80",
        &"-o",
        &corrected,
        &"-q",
    ]);
    let n = check_corrections(&corrected, &samples, "teacher");
    let manifest: Value = serde_json::from_slice(&std::fs::read(corrected.join("manifest.json")).unwrap()).unwrap();
    let rejected: u64 = manifest["report"]["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(manifest["report"]["rows_in"].as_u64(), Some(n as u64 + rejected));
    assert!(manifest["report"]["rejected"]["no_wrong_sample"].as_u64().unwrap() > 0);
}

/// The guarantees of a splice (`fix` = a right sample verbatim) or teacher correction (`teacher` = a cue,
/// then a continuation): the error segment is the start of a wrong sample, a located failing calculation
/// is wrong, the final answer verifies. Returns the number of rows.
fn check_corrections(out: &Path, samples: &[serde_json::Map<String, Value>], how: &str) -> usize {
    let written = rows(out);
    // the tiny teacher was never trained after a cue: few of its continuations verify
    let least = if how == "fix" { 3 } else { 1 };
    assert!(written.len() >= least, "{how}: {} rows", written.len());
    for r in &written {
        let reply = &r.completion[0].content;
        let seg = |kind: &str| {
            let sp = r.segments.iter().find(|s| s.kind == kind).unwrap();
            reply.chars().skip(sp.start as usize).take((sp.end - sp.start) as usize).collect::<String>()
        };
        let of = |i: u64| {
            samples.iter().find(|t| t["problem_id"] == r.problem_id.as_str() && t["sample_index"] == i).unwrap()
        };
        let meta: Value = serde_json::from_str(&r.metadata).unwrap();
        let wrong = of(meta["wrong_sample"].as_u64().unwrap())["completion"].as_str().unwrap();
        assert!(wrong.starts_with(seg("error").as_str()), "{reply}");
        if how == "fix" {
            let right = of(meta["right_sample"].as_u64().unwrap())["completion"].as_str().unwrap();
            assert_eq!(seg("fix").trim_start_matches('\n'), right.trim());
        } else {
            assert!(seg("detect").contains("Wait") || seg("detect").contains("wait"), "{reply}");
            assert!(meta["continuation"].as_u64().unwrap() < 4);
        }
        if meta["cut"]["located"] == "step" {
            let written = meta["cut"]["written"].as_str().unwrap();
            let (expr, result) = written.rsplit_once(" = ").unwrap();
            assert_ne!(value(expr).as_deref(), Some(result), "the cut calculation is wrong: {written}");
        }
        let verdict = verify_trace(
            &TraceRef {
                domain: forge::formats::domain::Domain::of(&r.domain),
                gold: r.gold.as_deref(),
                output: reply,
                prompt: None,
                metadata: None,
                tests: None,
                finish_reason: None,
            },
            &VerifySettings::default(),
        )
        .unwrap();
        assert!(verdict.correct, "{reply}");
    }
    written.len()
}

/// A sample the verifier cannot judge (a Countdown trace without its numbers) is bad input: the splice
/// stops and names the trace, rather than leaving the sample out unsaid.
#[test]
fn an_unjudgeable_sample_stops_the_splice_and_is_named() {
    let s = Scratch::new();
    let mut bad = crate::util::trace("c1", 0, "Make 10 from [2, 5].", Some("10"), "2 * 5 = 10");
    bad["domain"] = "countdown".into();
    let traces = s.write("traces.jsonl", crate::util::jsonl(&[bad]));
    let out = s.path("splice");
    let (code, _, stderr) = crate::util::run(&[&"journey", &"--input", &traces, &"--strategy", &"splice", &"-o", &out]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("trace `c1#0`, column `metadata`"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}
