use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::util::{Scratch, forge, ok, records};

/// The sample teacher: weak but not hopeless on one- and two-operation arithmetic.
fn teacher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher")
}

fn problems(s: &Scratch, n: usize, seed: u64) -> PathBuf {
    let dir = s.path(&format!("problems-{seed}"));
    let (n, seed) = (n.to_string(), seed.to_string());
    ok(&[
        &"synth",
        &"arith",
        &"--n",
        &n,
        &"--ops",
        &"1..2",
        &"--max-operand",
        &"9",
        &"--seed",
        &seed,
        &"-o",
        &dir,
        &"-q",
    ]);
    dir
}

fn args(model: &Path, problems: &Path, out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["train-rl", "--model"].map(OsString::from).to_vec();
    a.extend([model.into(), "--problems".into(), problems.into(), "-o".into(), out.into()]);
    a.extend(extra.iter().map(OsString::from));
    a.push("-q".into());
    a
}

fn run_ok(args: &[OsString]) {
    let out = forge().args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `metrics.csv` as (column -> values), one value per step.
fn metrics(out: &Path) -> BTreeMap<String, Vec<f64>> {
    let mut reader = csv::Reader::from_path(out.join("metrics.csv")).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let mut columns: BTreeMap<String, Vec<f64>> = headers.iter().map(|h| (h.clone(), Vec::new())).collect();
    for record in reader.records() {
        for (h, v) in headers.iter().zip(record.unwrap().iter()) {
            columns.get_mut(h).unwrap().push(v.parse().unwrap_or(f64::NAN));
        }
    }
    columns
}

fn num(row: &Map<String, Value>, key: &str) -> f64 {
    row[key].as_f64().unwrap_or_else(|| panic!("{key} in {row:?}"))
}

/// A short run from the sample teacher: the model, metrics with every RL column, and the rollouts as a
/// traces dataset with consistent rewards (the weighted sum of the signals), advantages (group-relative,
/// summing to zero) and step numbers; the mean reward of each step in `metrics.csv` is that of its
/// rollouts; the rollouts are a dataset `forge filter` reads; the weights moved.
#[test]
fn rl_writes_the_model_metrics_and_rollouts() {
    let s = Scratch::new();
    let problems = problems(&s, 40, 11);
    let out = s.path("rl");
    let extra = ["--steps", "3", "--prompts-per-step", "4", "--group-size", "4", "--max-tokens", "80", "--lr", "1e-4"];
    run_ok(&args(&teacher(), &problems, &out, &extra));
    for f in ["model.safetensors", "config.json", "tokenizer.json", "loss.png", "reward.png", "train-report.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert!(!out.join("checkpoints").exists());
    let m = metrics(&out);
    for c in [
        "reward",
        "reward_accuracy",
        "reward_format",
        "accuracy",
        "completion_length",
        "kl",
        "clip_fraction",
        "entropy",
        "flat_groups",
    ] {
        assert_eq!(m[c].len(), 3, "{c}");
    }
    assert_eq!(m["step"], vec![1.0, 2.0, 3.0]);
    let rows = records(&out.join("rollouts"));
    assert_eq!(rows.len(), 3 * 4 * 4);
    let ids: std::collections::BTreeSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), rows.len(), "rollout ids are unique across steps");
    let mut per_group: BTreeMap<(u64, String), Vec<&Map<String, Value>>> = BTreeMap::new();
    for r in &rows {
        let signals: Map<String, Value> = serde_json::from_str(r["rewards"].as_str().unwrap()).unwrap();
        let (accuracy, format) = (signals["accuracy"].as_f64().unwrap(), signals["format"].as_f64().unwrap());
        assert!((num(r, "reward") - (accuracy + 0.2 * format)).abs() < 1e-9, "{r:?}");
        assert_eq!(r["correct"].as_bool().unwrap(), accuracy == 1.0);
        let key = (r["step"].as_u64().unwrap(), r["problem_id"].as_str().unwrap().to_string());
        per_group.entry(key).or_default().push(r);
    }
    assert_eq!(per_group.len(), 3 * 4);
    let mut varied = 0;
    for group in per_group.values() {
        assert_eq!(group.len(), 4);
        let sum: f64 = group.iter().map(|r| num(r, "advantage")).sum();
        assert!(sum.abs() < 1e-9, "advantages sum to {sum}");
        let rewards: Vec<f64> = group.iter().map(|r| num(r, "reward")).collect();
        let mean = rewards.iter().sum::<f64>() / 4.0;
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
        for (r, reward) in group.iter().zip(&rewards) {
            let want = if std == 0.0 { 0.0 } else { (reward - mean) / (std + 1e-4) };
            assert!((num(r, "advantage") - want).abs() < 1e-9, "{rewards:?}: {} vs {want}", num(r, "advantage"));
        }
        varied += usize::from(std > 0.0);
    }
    assert!(varied > 0, "the teacher gets some problems right and some wrong");
    for step in 0..3u64 {
        let of_step: Vec<f64> = rows.iter().filter(|r| r["step"] == step).map(|r| num(r, "reward")).collect();
        let mean = of_step.iter().sum::<f64>() / of_step.len() as f64;
        assert!((mean - m["reward"][step as usize]).abs() < 1e-5, "step {step}");
    }
    let flat: f64 = m["flat_groups"].iter().sum::<f64>() * 4.0;
    assert_eq!(m["trained_completions"].iter().sum::<f64>(), (12.0 - flat) * 4.0);
    assert_ne!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(teacher().join("model.safetensors")).unwrap()
    );
    // the rollouts are a traces dataset: filter keeps the right ones
    let curated = s.path("curated");
    ok(&[&"filter", &"--input", &out.join("rollouts"), &"-o", &curated, &"-q"]);
    let kept = records(&curated);
    assert!(!kept.is_empty() && kept.iter().all(|r| r["correct"] == true));
    // the same command again: nothing to do
    let again = forge().args(args(&teacher(), &problems, &out, &extra).iter().filter(|a| *a != "-q")).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds this finished run"));
}

/// A run killed (SIGKILL) after its second checkpoint and run again ends with the same weights, the same
/// metrics (throughput aside) and the same rollouts as an uninterrupted one.
#[test]
fn killed_rl_resumes_to_the_same_weights_and_rollouts() {
    let s = Scratch::new();
    let problems = problems(&s, 30, 12);
    let extra = [
        "--steps",
        "6",
        "--save-every",
        "2",
        "--prompts-per-step",
        "3",
        "--group-size",
        "3",
        "--max-tokens",
        "64",
        "--lr",
        "1e-4",
    ];
    let (straight, killed) = (s.path("straight"), s.path("killed"));
    run_ok(&args(&teacher(), &problems, &straight, &extra));
    crate::util::kill_when(&args(&teacher(), &problems, &killed, &extra), &killed.join("checkpoints/step-00000004"));
    assert!(!killed.join("train-report.json").exists(), "the run was killed before it finished");
    crate::util::resumes_to_the_same_weights(&args(&teacher(), &problems, &killed, &extra), &straight, &killed);
    let (a, b) = (metrics(&straight), metrics(&killed));
    for (column, values) in &a {
        if column != "tokens_per_second" {
            assert_eq!(format!("{values:?}"), format!("{:?}", b[column]), "{column}");
        }
    }
    let rollouts = |dir: &Path| -> Vec<(String, String, String)> {
        records(&dir.join("rollouts"))
            .iter()
            .map(|r| (r["id"].to_string(), r["completion"].to_string(), r["advantage"].to_string()))
            .collect()
    };
    assert_eq!(rollouts(&straight), rollouts(&killed));
    assert_eq!(rollouts(&straight).len(), 6 * 3 * 3);
}

/// LoRA, several updates per batch (the ratio moves off 1), the KL penalty, per-completion aggregation
/// and unscaled advantages: a peft adapter comes out, flat groups are kept, the second update of a batch
/// sees ratios off 1 (clipped tokens) and a KL to the reference, and the adapter loads for `forge eval`.
#[test]
fn rl_with_lora_iterations_and_kl() {
    let s = Scratch::new();
    let problems = problems(&s, 30, 13);
    let out = s.path("lora");
    let extra = [
        "--steps",
        "3",
        "--prompts-per-step",
        "4",
        "--group-size",
        "4",
        "--max-tokens",
        "64",
        "--lr",
        "3e-3",
        "--lora-rank",
        "4",
        "--iterations",
        "2",
        "--beta",
        "0.04",
        "--loss-type",
        "grpo",
        "--scale-rewards",
        "none",
        "--epsilon-high",
        "0.28",
        "--skip-flat-groups",
        "false",
    ];
    run_ok(&args(&teacher(), &problems, &out, &extra));
    assert!(out.join("adapter_model.safetensors").exists() && !out.join("config.json").exists());
    let m = metrics(&out);
    assert_eq!(m["trained_completions"], vec![16.0; 3], "flat groups kept");
    assert!(m["kl"][0] > 0.0, "the second update of step 1 sees the policy moved: {:?}", m["kl"]);
    assert!(m["clip_fraction"].iter().any(|&c| c > 0.0), "{:?}", m["clip_fraction"]);
    assert!(m["entropy"].iter().all(|&e| e > 0.0));
    let adapted = s.path("eval");
    ok(&[&"eval", &"--model", &out, &"--problems", &problems, &"-o", &adapted, &"--max-tokens", &"64", &"-q"]);
}

/// `--reward` is checked before anything runs, by name.
#[test]
fn rl_refuses_unknown_rewards_and_groups_of_one() {
    let s = Scratch::new();
    let problems = problems(&s, 5, 14);
    for (flags, says) in [
        (vec!["--reward", "acuracy=1"], "unknown reward `acuracy`"),
        (vec!["--group-size", "1"], "`--group-size` must be at least 2"),
    ] {
        let out = forge().args(args(&teacher(), &problems, &s.path("out"), &flags)).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!s.path("out").join("model.safetensors").exists());
    }
}

/// The share of `model`'s completions that are partly in Cyrillic: 4 samples at temperature 1 of each of
/// `problems` (a fixed set, so that models compare on the same prompts).
fn mixed_share(s: &Scratch, model: &Path, problems: &Path, name: &str) -> f64 {
    let out = s.path(&format!("eval-{name}"));
    ok(&[
        &"eval",
        &"--model",
        &model,
        &"--problems",
        &problems,
        &"-n",
        &"4",
        &"--temperature",
        &"1",
        &"--max-tokens",
        &"80",
        &"-o",
        &out,
        &"-q",
    ]);
    let rows = records(&out);
    let mixed =
        rows.iter().filter(|r| r["completion"].as_str().unwrap().chars().any(|c| ('А'..='я').contains(&c))).count();
    mixed as f64 / rows.len() as f64
}

/// R1's language-consistency reward works: a policy taught to close half its answers in Russian (the
/// sample teacher, fine-tuned on its own solutions with "Итак, ответ" in place of "The answer is" in every
/// other one) writes Cyrillic in fewer of its completions after 8 steps of RL with `--reward language=1`
/// than before (at most half as often) and than after the same RL with the accuracy reward instead (same
/// seed, problems and steps). Measured on 4 samples of each of the 48 problems, at temperature 1.
#[test]
fn language_reward_lowers_mixed_script_rollouts() {
    let s = Scratch::new();
    let problems = problems(&s, 48, 15);
    let traces = s.path("traces");
    let teacher_spec = format!("local:{}", teacher().display());
    ok(&[
        &"generate",
        &"--teacher",
        &teacher_spec,
        &"--problems",
        &problems,
        &"--temperature",
        &"0",
        &"--max-tokens",
        &"80",
        &"-o",
        &traces,
        &"-q",
    ]);
    let by_id: BTreeMap<String, forge::dataset::Problem> =
        crate::util::problems(&problems).into_iter().map(|p| (p.id.clone(), p)).collect();
    let prompt = forge::teacher::traces::PromptConfig::default();
    let rows: Vec<Value> = records(&traces)
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let user = &prompt.messages(&by_id[t["problem_id"].as_str().unwrap()])[0].content;
            let mut reply = t["completion"].as_str().unwrap().to_string();
            if i % 2 == 0 {
                reply = reply.replace("The answer is", "Итак, ответ");
            }
            serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
        })
        .collect();
    let data = s.write("mixed.jsonl", crate::util::jsonl(&rows));
    let mixed = s.path("mixed-model");
    ok(&[
        &"train-sft",
        &"--model",
        &teacher(),
        &"--data",
        &data,
        &"-o",
        &mixed,
        &"--epochs",
        &"6",
        &"--lr",
        &"1e-3",
        &"--batch-tokens",
        &"2048",
        &"--max-length",
        &"256",
        &"--eval-share",
        &"0",
        &"--save-every",
        &"0",
        &"-q",
    ]);
    let rl = |reward: &str| -> f64 {
        let out = s.path(&format!("rl-{reward}"));
        let extra = [
            "--steps",
            "8",
            "--prompts-per-step",
            "6",
            "--group-size",
            "4",
            "--max-tokens",
            "80",
            "--lr",
            "3e-5",
            "--beta",
            "0",
            "--reward",
            reward,
        ];
        run_ok(&args(&mixed, &problems, &out, &extra));
        mixed_share(&s, &out, &problems, reward)
    };
    let before = mixed_share(&s, &mixed, &problems, "before");
    let (language, accuracy) = (rl("language=1"), rl("accuracy=1"));
    eprintln!(
        "completions with Cyrillic: before {before:.3}, after RL with language=1 {language:.3}, with accuracy=1 {accuracy:.3}"
    );
    assert!(before >= 0.4, "the fine-tuned policy mixes scripts: {before}");
    assert!(language <= before / 2.0, "language reward: {before} -> {language}");
    assert!(language < accuracy, "language reward {language} against accuracy reward {accuracy}");
}
