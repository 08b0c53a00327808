use std::path::{Path, PathBuf};

use forge::model::Arch;
use forge::model::tiny::{Size, write_with_tokenizer};
use forge::train::metrics;
use serde_json::Value;

use crate::util::{Scratch, forge, ok, run};

/// The sample teacher: a real (trained) model, so its distributions are peaked as a teacher's are.
fn teacher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/tiny-teacher")
}

/// A random student that reads text as the teacher does.
fn student(s: &Scratch, seed: u64) -> PathBuf {
    let dir = s.path(&format!("student-{seed}"));
    write_with_tokenizer(&dir, Arch::Qwen2, Size::default(), seed, &teacher()).unwrap();
    dir
}

/// The sample teacher's traces on `n` problems, 2 samples each, with its top `k` log-probabilities.
fn traces(s: &Scratch, n: usize, k: usize, temperature: &str) -> PathBuf {
    let problems = s.path("problems");
    if !problems.exists() {
        let n = n.to_string();
        ok(&[&"synth", &"arith", &"--n", &n, &"--ops", &"1..2", &"--max-operand", &"9", &"-o", &problems, &"-q"]);
    }
    let out = s.path(&format!("traces-{k}-{temperature}"));
    let k = k.to_string();
    let teacher = format!("local:{}", teacher().display());
    ok(&[
        &"generate",
        &"--teacher",
        &teacher,
        &"--problems",
        &problems,
        &"-o",
        &out,
        &"-n",
        &"2",
        &"--temperature",
        &temperature,
        &"--max-tokens",
        &"80",
        &"--top-logprobs",
        &k,
        &"-q",
    ]);
    out
}

fn report(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("train-report.json")).unwrap()).unwrap()
}

fn distill(model: &Path, data: &[&Path], out: &Path, extra: &[&str]) -> (i32, String) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"train-distill", &"--model", &model, &"-o", &out];
    for d in data {
        args.push(&"--data");
        args.push(d);
    }
    for e in extra {
        args.push(e);
    }
    let (code, _, stderr) = run(&args);
    (code, stderr)
}

/// Offline distillation from `forge generate --top-logprobs`: every reply token of the traces carries the
/// teacher's distribution (no row fails to line up), journey rows (no teacher lists) are trained on their
/// tokens, the loss falls, and a row whose text was edited after generation is detected and trained on
/// its tokens alone. With `--lora-rank` the output is a peft adapter.
#[test]
fn offline_distillation_trains_on_the_teachers_top_k() {
    let s = Scratch::new();
    let traces = traces(&s, 24, 8, "0.8");
    let journey = s.path("journey");
    ok(&[&"journey", &"--input", &s.path("problems"), &"-o", &journey, &"--error-rate", &"0.3", &"-q"]);
    let model = student(&s, 3);
    let out = s.path("kd");
    let common = ["--epochs", "3", "--lr", "3e-3", "--batch-tokens", "2048", "--max-length", "256", "-q"];
    let (code, stderr) = distill(&model, &[&traces, &journey], &out, &[&["--loss", "fkl"][..], &common].concat());
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    let (distilled, trained) = (r["distilled_tokens"].as_u64().unwrap(), r["trained_tokens"].as_u64().unwrap());
    assert_eq!(r["unaligned_rows"], 0, "{r}");
    // the traces' reply tokens (with their end-of-turn token) over 3 epochs, less the held-out share
    let input = forge::dataset::Input::open(&traces).unwrap();
    let replies: u64 = input
        .records(0..input.rows())
        .map(|r| r.unwrap().fields["completion_tokens"].as_u64().unwrap() + 1)
        .sum::<u64>()
        * 3;
    assert!(distilled > replies * 8 / 10 && distilled <= replies, "{distilled} of {replies}");
    assert!(distilled < trained, "journey rows are trained on their tokens: {distilled} of {trained}");
    let rows = metrics::read(&out.join("metrics.csv")).unwrap();
    let (first, last) = (rows[0].loss, rows.last().unwrap().loss);
    assert!(last < first * 0.7, "loss {first} -> {last}");

    // a row whose completion was edited after generation no longer lines up with its lists
    let first_row = input.records(0..1).next().unwrap().unwrap();
    let mut edited = first_row.fields.clone();
    edited["completion"] = Value::String(format!("So, {}", edited["completion"].as_str().unwrap()));
    let jsonl = s.write("edited.jsonl", format!("{}\n{}\n", Value::Object(first_row.fields), Value::Object(edited)));
    let out = s.path("edited-out");
    let (code, stderr) =
        distill(&model, &[&jsonl], &out, &["--max-steps", "1", "--eval-share", "0", "--max-length", "256", "-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report(&out)["unaligned_rows"], 1);

    let lora = s.path("lora");
    let (code, stderr) =
        distill(&model, &[&traces], &lora, &["--lora-rank", "4", "--max-steps", "2", "--max-length", "256", "-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(lora.join("adapter_config.json").exists() && lora.join("adapter_model.safetensors").exists());
}

/// With the teacher's whole vocabulary recorded (k = 259), offline distillation is online distillation:
/// the first step's loss is the same whether the teacher's distributions come from the traces or from
/// running the teacher beside the student. This pins the offline alignment (list i is the distribution
/// of reply token i, the end-of-turn token's included) to what the teacher computes.
#[test]
fn offline_at_full_vocabulary_equals_online() {
    let s = Scratch::new();
    let traces = traces(&s, 8, 259, "1.0");
    let model = student(&s, 5);
    let teacher = format!("local:{}", teacher().display());
    let mut losses = Vec::new();
    for (name, loss, extra) in [
        ("offline-fkl", "fkl", None),
        ("online-fkl", "fkl", Some(teacher.as_str())),
        ("offline-jsd", "jsd", None),
        ("online-jsd", "jsd", Some(teacher.as_str())),
    ] {
        let out = s.path(name);
        let mut args = vec!["--loss", loss, "--max-steps", "1", "--eval-share", "0", "--max-length", "256", "-q"];
        if let Some(t) = extra {
            args.extend(["--teacher", t]);
        }
        let (code, stderr) = distill(&model, &[&traces], &out, &args);
        assert_eq!(code, 0, "{stderr}");
        let r = report(&out);
        assert_eq!(r["distilled_tokens"], r["trained_tokens"], "{name}: every trained token distilled");
        losses.push(metrics::read(&out.join("metrics.csv")).unwrap()[0].loss);
    }
    for pair in losses.chunks(2) {
        assert!((pair[0] - pair[1]).abs() < 1e-4 * pair[1].abs().max(1.0), "offline {} vs online {}", pair[0], pair[1]);
    }
    assert!((losses[0] - losses[2]).abs() > 1e-3, "fkl and jsd differ: {losses:?}");
}

/// Online distillation needs the student's tokenizer; an HTTP teacher is pointed to offline distillation.
#[test]
fn online_teacher_must_share_the_tokenizer() {
    let s = Scratch::new();
    let data = s.write("rows.jsonl", "{\"prompt\": \"2+2?\", \"completion\": \"4\"}\n");
    let other = s.path("other");
    std::fs::create_dir_all(&other).unwrap();
    let texts: Vec<String> = (0..50).map(|i| format!("{i} plus {i} is {}", 2 * i)).collect();
    let tok = forge::model::tiny::train_tokenizer(&texts, 300).unwrap();
    forge::model::tiny::write_tokenizer_files(&other, &tok).unwrap();
    write_with_tokenizer(&other, Arch::Qwen2, Size::default(), 1, &other).unwrap();
    let teacher = format!("local:{}", teacher().display());
    let (code, stderr) = distill(&other, &[&data], &s.path("out"), &["--teacher", &teacher]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("different tokenizers"), "{stderr}");
    assert!(!s.path("out").join("model.safetensors").exists());
    // the same tokenizer, a head of another size
    let padded = s.path("padded");
    let mut config = forge::model::tiny::config(Arch::Qwen2, Size::default());
    config.vocab_size = 320;
    forge::model::Checkpoint::random(&config, 2, &candle_core::Device::Cpu).unwrap().save(&padded).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(self::teacher().join(f), padded.join(f)).unwrap();
    }
    let student = student(&s, 4);
    let (code, stderr) =
        distill(&student, &[&data], &s.path("out3"), &["--teacher", &format!("local:{}", padded.display())]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("rows of logits"), "{stderr}");
    let (code, stderr) = distill(&other, &[&data], &s.path("out2"), &["--teacher", "openai:http://127.0.0.1:9/v1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("local:DIR") && stderr.contains("--top-logprobs"), "{stderr}");
}

/// A distillation run killed (SIGKILL) after a checkpoint and run again ends with the same weights, bit
/// for bit, as an uninterrupted run.
#[test]
fn killed_distillation_resumes_to_the_same_weights() {
    let s = Scratch::new();
    let traces = traces(&s, 24, 8, "0.8");
    let model = student(&s, 7);
    let args = |out: &Path| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = ["train-distill", "--model"].map(Into::into).to_vec();
        a.extend([model.as_os_str().into(), "--data".into(), traces.as_os_str().into(), "-o".into(), out.into()]);
        let rest = [
            "--loss",
            "jsd",
            "--beta",
            "0.3",
            "--ce-weight",
            "0.2",
            "--max-steps",
            "12",
            "--save-every",
            "3",
            "--batch-tokens",
            "1024",
            "--micro-batch-tokens",
            "512",
            "--max-length",
            "256",
            "--lr",
            "2e-3",
            "-q",
        ];
        a.extend(rest.map(Into::into));
        a
    };
    let straight = s.path("straight");
    assert!(forge().args(args(&straight)).status().unwrap().success());
    let killed = s.path("killed");
    crate::util::kill_when(&args(&killed), &killed.join("checkpoints/step-00000006"));
    assert!(!killed.join("train-report.json").exists(), "the run was killed before it finished");
    crate::util::resumes_to_the_same_weights(&args(&killed), &straight, &killed);
    assert_eq!(report(&straight)["distilled_tokens"], report(&killed)["distilled_tokens"]);
}

/// `--ce-weight 1` is supervised fine-tuning: every step's loss and held-out loss equal train-sft's on the
/// same data and settings (so the experiment's SFT arm and its KD arms differ in the loss alone).
#[test]
fn ce_weight_one_is_sft() {
    let s = Scratch::new();
    let traces = traces(&s, 16, 8, "0.8");
    let model = student(&s, 9);
    let common = ["--max-steps", "4", "--batch-tokens", "1024", "--max-length", "256", "--lr", "2e-3", "-q"];
    let sft = s.path("sft");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"train-sft", &"--model", &model, &"--data", &traces, &"-o", &sft];
    args.extend(common.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
    ok(&args);
    let kd = s.path("kd");
    let (code, stderr) = distill(&model, &[&traces], &kd, &[&["--ce-weight", "1"][..], &common].concat());
    assert_eq!(code, 0, "{stderr}");
    let (a, b) = (metrics::read(&sft.join("metrics.csv")).unwrap(), metrics::read(&kd.join("metrics.csv")).unwrap());
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert!((x.loss - y.loss).abs() < 1e-5 * x.loss, "step {}: {} vs {}", x.step, x.loss, y.loss);
        let (ex, ey) = (x.eval_loss.unwrap_or(0.0), y.eval_loss.unwrap_or(0.0));
        assert!((ex - ey).abs() < 1e-5 * ex.max(1.0), "step {}: held-out {ex} vs {ey}", x.step);
    }
}

/// On-policy distillation (`--lambda`): the teacher distilled into a copy of itself on rows whose replies
/// are 300 bytes of filler, every step on its own samples. Trained on the rows (λ = 0) a step reads the
/// filler; on-policy it reads the teacher's answers to the rows' prompts: as long as its traces' replies
/// on the same problems (within a quarter: a prompt cut wrong or a sample not stopped at its end token
/// would change that), and the divergence of a model from itself on them is zero.
#[test]
fn on_policy_distillation_trains_on_the_students_own_replies() {
    let s = Scratch::new();
    let traces = traces(&s, 24, 8, "1.0");
    let filler: Vec<Value> = crate::util::problems(&s.path("problems"))
        .iter()
        .map(|p| {
            let user = forge::formats::prompt::instruction(forge::formats::domain::Domain::Math, &p.prompt);
            serde_json::json!({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": "x".repeat(300)}]})
        })
        .collect();
    let rows = s.write("filler.jsonl", crate::util::jsonl(&filler));
    let copy = s.path("teacher-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(teacher()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    let teacher = format!("local:{}", teacher().display());
    let common = ["--teacher", &teacher, "--epochs", "1", "--eval-share", "0", "--batch-tokens", "1024", "-q"];
    let (on, off) = (s.path("on"), s.path("off"));
    for (out, lambda) in [(&on, "1"), (&off, "0")] {
        let (code, stderr) = distill(&copy, &[&rows], out, &[&["--lambda", lambda][..], &common].concat());
        assert_eq!(code, 0, "{stderr}");
    }
    let (on, off) = (report(&on), report(&off));
    assert_eq!(on["examples"], 24);
    assert_eq!(on["on_policy_steps"], on["steps"]);
    assert_eq!(off["on_policy_steps"], 0);
    assert_eq!(off["trained_tokens"], 24 * 301, "the filler and its end token");
    let replies: f64 =
        crate::util::records(&traces).iter().map(|r| r["completion_tokens"].as_f64().unwrap() / 2.0).sum();
    let sampled = on["trained_tokens"].as_f64().unwrap();
    assert!((sampled / replies - 1.0).abs() < 0.25, "on-policy replies: {sampled} tokens; the teacher's: {replies}");
    let first = &metrics::read(&s.path("on").join("metrics.csv")).unwrap()[0];
    assert!(first.loss.abs() < 1e-5, "KL of the teacher from itself: {}", first.loss);
}

/// On-policy needs an online teacher to score the samples; a share outside [0, 1] is refused. A run with
/// half its steps on-policy, killed after a checkpoint and run again, ends with the same weights bit for
/// bit (its samples are keyed by step and drawn from the same weights).
#[test]
fn on_policy_distillation_resumes_to_the_same_weights() {
    let s = Scratch::new();
    let traces = traces(&s, 24, 8, "0.8");
    let model = student(&s, 5);
    let out = s.path("refused");
    for extra in [&["--lambda", "0.5"][..], &["--lambda", "1.5", "--teacher", "local:x"]] {
        let (code, stderr) = distill(&model, &[&traces], &out, extra);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("--lambda"), "{stderr}");
    }
    let teacher = format!("local:{}", teacher().display());
    let args = |out: &Path| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = ["train-distill", "--model"].map(Into::into).to_vec();
        a.extend([model.as_os_str().into(), "--data".into(), traces.as_os_str().into(), "-o".into(), out.into()]);
        let rest = ["--teacher", &teacher, "--lambda", "0.5", "--max-new-tokens", "24", "--loss", "rkl"];
        a.extend(rest.map(Into::into));
        let rest = ["--max-steps", "8", "--save-every", "2", "--batch-tokens", "1024", "--max-length", "256", "-q"];
        a.extend(rest.map(Into::into));
        a
    };
    let straight = s.path("straight");
    assert!(forge().args(args(&straight)).status().unwrap().success());
    let steps = report(&straight)["on_policy_steps"].as_u64().unwrap();
    assert!((1..8).contains(&steps), "{steps} of 8 steps on-policy at λ = 0.5");
    let killed = s.path("killed");
    crate::util::kill_when(&args(&killed), &killed.join("checkpoints/step-00000004"));
    assert!(!killed.join("train-report.json").exists(), "the run was killed before it finished");
    crate::util::resumes_to_the_same_weights(&args(&killed), &straight, &killed);
}
