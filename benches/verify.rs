//! Verifier throughput, one core: (a) the team's short answer pairs (`tests/fixtures/answer_cases.tsv`)
//! through `equivalent`, (b) full chain-of-thought outputs (the GSM8K model solutions in
//! `../shared/data`, skipped when absent) through `verify_answer`: extraction plus comparison.

use std::time::Duration;

use criterion::{Criterion, Throughput};
use forge::verify::{DEFAULT_TOLERANCE, VerifySettings, equivalent, verify_answer};

fn cases() -> Vec<(String, String)> {
    include_str!("../tests/fixtures/answer_cases.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect()
}

fn gsm8k() -> Option<Vec<(String, String)>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/gsm8k/example_model_solutions.jsonl");
    let text = std::fs::read_to_string(path).ok()?;
    let mut items = Vec::new();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).ok()?;
        let gold = forge::verify::extract::extract(row["ground_truth"].as_str()?, true)?.0;
        for model in ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"] {
            items.push((gold.clone(), row[model]["solution"].as_str()?.to_string()));
        }
    }
    Some(items)
}

pub fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.measurement_time(Duration::from_secs(10));
    let pairs = cases();
    group.throughput(Throughput::Elements(pairs.len() as u64));
    group.bench_function("short_pairs", |b| {
        b.iter(|| pairs.iter().filter(|(g, p)| equivalent(g, p, DEFAULT_TOLERANCE).is_some()).count());
    });
    if let Some(outputs) = gsm8k() {
        let settings = VerifySettings::default();
        group.throughput(Throughput::Elements(outputs.len() as u64));
        group.bench_function("gsm8k_cot", |b| {
            b.iter(|| outputs.iter().filter(|(g, o)| verify_answer(g, o, &settings).correct).count());
        });
    }
    group.finish();
}
