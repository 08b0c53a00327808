//! `--strategy teacher`: a teacher's wrong sample, cut before its first failure, and a cue ("Wait, let me
//! check that again.") are given to `--teacher`, which continues them; a continuation is kept when it
//! ends, its calculations check out and its answer verifies.

use super::{JourneyConfig, Kind, Reject, Seg, count, judge, sft_row, splice};
use crate::dataset::{SftRow, Trace};
use crate::error::{Error, Result};
use crate::formats::domain::Domain;
use crate::formats::prompt::instruction;
use crate::progress::Progress;
use crate::report::StageReport;
use crate::rng::Rng;

/// Cues after a wrong prefix that the teacher continues (`--strategy teacher`): they announce a check
/// without saying what is wrong, so the teacher has to find it.
const CUES: [&str; 3] =
    ["Wait, let me check that again.", "Hmm, wait. Let me verify this step.", "Wait, something is off here."];

/// A wrong prefix to continue: the wrong sample, its kept part as written, the cue, where it was cut.
type Prefix<'a> = (&'a Trace, String, String, splice::Cut);

/// `--strategy teacher`: each problem's wrong sample cut before its failure, with a cue; problems
/// without one are counted in `report`.
fn wrong_prefixes<'a>(
    cfg: &JourneyConfig,
    groups: &'a [(u64, Vec<Trace>)],
    report: &mut StageReport,
) -> Result<Vec<Prefix<'a>>> {
    let mut reject = |reason: Reject| count(report, reason);
    let mut work = Vec::new();
    for (i, samples) in groups {
        let (wrong, _) = judge(samples)?;
        if wrong.is_empty() {
            reject(Reject::NoWrong);
            continue;
        }
        let mut rng = Rng::for_row(cfg.seed, "teacher", *i);
        let (w, answer) = rng.pick(&wrong);
        let Some((kept, _, cut)) = splice::cut(w, answer, &mut rng) else {
            reject(Reject::NothingBefore);
            continue;
        };
        let open = if w.reasoning.is_some() { "<think>\n" } else { "" };
        work.push((*w, format!("{open}{kept}"), rng.pick(&CUES).to_string(), cut));
    }
    Ok(work)
}

/// `--strategy teacher`: for each problem with a wrong sample, the sample up to its failure and a cue,
/// continued by the teacher `--continuations` times; the first continuation that ends and whose answer
/// verifies makes the problem's row.
pub(super) fn rows(
    cfg: &JourneyConfig,
    groups: &[(u64, Vec<Trace>)],
    report: &mut StageReport,
    progress: &Progress,
) -> Result<Vec<SftRow>> {
    let spec = cfg
        .teacher
        .as_deref()
        .ok_or_else(|| Error::usage("`--strategy teacher` needs a teacher").with_hint("add `--teacher local:PATH`"))?;
    // the journal keys this run's own requests by its settings
    let run = xxhash_rust::xxh3::xxh3_64(serde_json::to_string(cfg).expect("JSON").as_bytes());
    let mut teacher = crate::teacher::open(&crate::teacher::Connect { spec, model: None, http: &cfg.http, run })?;
    let sampling = crate::teacher::SamplingConfig {
        temperature: cfg.temperature,
        max_new_tokens: cfg.max_tokens,
        seed: cfg.seed,
        ..Default::default()
    };
    let work = wrong_prefixes(cfg, groups, report)?;
    let mut reject = |reason: Reject| count(report, reason);
    progress.inc((groups.len() - work.len()) as u64);
    let mut rows = Vec::new();
    for chunk in work.chunks(8) {
        let prompts: Vec<crate::teacher::Prompt> = chunk
            .iter()
            .map(|(w, kept, cue, _)| {
                let user = instruction(Domain::of(&w.domain), &w.prompt);
                crate::teacher::Prompt {
                    key: w.problem_id.clone(),
                    messages: vec![crate::model::chat::Message::new("user", &user)],
                    prefill: format!("{kept}\n{cue}\n"),
                    n: cfg.continuations,
                    max_new_tokens: None,
                    first_sample: 0,
                }
            })
            .collect();
        let continued = teacher.generate(&prompts, &sampling, &Progress::hidden())?;
        for ((w, kept, cue, cut), samples) in chunk.iter().zip(continued) {
            let ended = |c: &crate::teacher::Sample| c.finish == crate::teacher::Finish::Stop;
            let row = samples.iter().enumerate().filter(|(_, c)| ended(c) && splice::checks_out(&c.text)).find_map(
                |(k, c)| {
                    let segs = [
                        Seg { kind: Kind::Error, text: kept.clone(), train: !cfg.mask_errors },
                        Seg { kind: Kind::Detect, text: cue.clone(), train: true },
                        Seg { kind: Kind::Fix, text: c.text.trim().to_string(), train: true },
                    ];
                    let metadata = serde_json::json!({
                        "strategy": cfg.strategy,
                        "journey": true,
                        "mask_errors": cfg.mask_errors,
                        "wrong_sample": w.sample_index,
                        "teacher": spec,
                        "continuation": k,
                        "continuations": cfg.continuations,
                        "cut": cut,
                        "checks": { "errors_rejected": true, "fixes_accepted": true, "final_verified": true },
                    });
                    let id = format!("{}-teacher", w.problem_id);
                    let (p, meta) = (&w.problem_id, &w.metadata);
                    sft_row(&id, p, &w.source, &w.domain, &w.prompt, w.gold.as_deref(), meta, &segs, metadata).ok()
                },
            );
            match row {
                Some(r) => rows.push(r),
                None => reject(Reject::NotAccepted),
            }
        }
        progress.inc(chunk.len() as u64);
    }
    Ok(rows)
}
