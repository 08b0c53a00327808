//! Steps 2 and 3 (reduce). `buckets`, per band: rows whose band keys agree are candidate pairs (each
//! joined to the first row of its bucket). `clusters`, once: union-find over all pairs, then every
//! decision that needs more than one row — majority vote, pass rate, wrong answers, repeated prompts,
//! exact and near duplicates, samples per problem — written per input slice for the write step, and the
//! run's report (`filter-report.json`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use super::signatures::{Facts, read_facts};
use super::work::{Dec, Enc, Sink, Work, write_file};
use super::{FilterConfig, Keep, Pick, Reason, Source};
use crate::Context;
use crate::dataset::Shard;
use crate::error::{Error, Location, Result};
use crate::verify::equivalent;

/// What the write step does with one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub reason: Option<Reason>,
    pub detail: Option<String>,
    pub correct: Option<bool>,
    pub extracted: Option<String>,
    /// The majority answer, for a problem that had no gold.
    pub majority_gold: Option<String>,
}

impl Decision {
    fn encode(&self, e: &mut Enc) {
        e.u8(self.reason.map_or(0, Reason::code));
        e.opt_str(self.detail.as_deref());
        e.opt_bool(self.correct);
        e.opt_str(self.extracted.as_deref());
        e.opt_str(self.majority_gold.as_deref());
    }

    fn decode(d: &mut Dec) -> Result<Decision> {
        Ok(Decision {
            reason: Reason::from_code(d.u8()?),
            detail: d.opt_string()?,
            correct: d.opt_bool()?,
            extracted: d.opt_string()?,
            majority_gold: d.opt_string()?,
        })
    }
}

pub fn read_decisions(path: &Path) -> Result<Vec<Decision>> {
    let bytes = fs_err::read(path)?;
    let mut d = Dec::new(&bytes, path);
    let mut out = Vec::new();
    while !d.is_empty() {
        out.push(Decision::decode(&mut d)?);
    }
    Ok(out)
}

/// Step 2: candidate pairs of the bands `shard` takes (band b goes to shard b mod N).
pub fn buckets(cfg: &FilterConfig, work: &Work, shard: Shard) -> Result<()> {
    let shards = work.map_shards()?;
    let bands: Vec<usize> = (0..cfg.minhash.bands).filter(|b| *b as u64 % shard.count == shard.index).collect();
    bands.into_par_iter().try_for_each(|band| {
        let out = work.edges(band);
        if out.exists() {
            return Ok(());
        }
        let mut entries: Vec<(u64, u64)> = Vec::new();
        for index in 0..shards {
            let bytes = fs_err::read(work.band(band, Shard { index, count: shards }))?;
            entries.extend(bytes.chunks_exact(16).map(|c| {
                (u64::from_le_bytes(c[..8].try_into().expect("8")), u64::from_le_bytes(c[8..].try_into().expect("8")))
            }));
        }
        entries.sort_unstable();
        let mut sink = Sink::create(out)?;
        let mut bytes = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let first = entries[i];
            let mut j = i + 1;
            while j < entries.len() && entries[j].0 == first.0 {
                bytes.extend_from_slice(&first.1.to_le_bytes());
                bytes.extend_from_slice(&entries[j].1.to_le_bytes());
                j += 1;
            }
            i = j;
        }
        sink.put(&bytes)?;
        sink.finish()
    })
}

/// The run's report: counts per reason, contamination per benchmark, clusters, votes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Rows read.
    pub rows_in: u64,
    /// Rows kept.
    pub kept: u64,
    /// Rows rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Per benchmark: items hit, and rows per item.
    pub contamination: BTreeMap<String, BenchmarkHits>,
    /// Duplicate clusters with more than one surviving row, and the rows they removed.
    pub exact_duplicate_clusters: u64,
    /// Near-duplicate clusters with more than one surviving row.
    pub near_duplicate_clusters: u64,
    /// Problems kept that others meant the same as (`--semantic-dedup`).
    pub semantic_duplicate_clusters: u64,
    /// Rows `--semantic-decontaminate` flagged that `--judge` called a different problem (kept).
    pub judge_cleared: u64,
    /// Problems without gold whose majority answer became their gold, and those with no consensus.
    pub majority_gold_problems: u64,
    /// Problems without gold and without a majority answer.
    pub no_consensus_problems: u64,
    /// Problems outside the pass-rate window.
    pub pass_rate_rejected_problems: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchmarkHits {
    pub items_hit: u64,
    pub rows: u64,
    /// Rows per item, the most hit first (at most 100 listed).
    pub items: Vec<ItemHits>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ItemHits {
    pub item: String,
    pub rows: u64,
}

impl Report {
    /// What the stage report does not say, for the terminal: benchmarks hit, clusters, votes.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if self.exact_duplicate_clusters + self.near_duplicate_clusters + self.semantic_duplicate_clusters > 0 {
            let _ = writeln!(
                s,
                "  duplicates: {} exact, {} near-duplicate and {} semantic cluster(s)",
                self.exact_duplicate_clusters, self.near_duplicate_clusters, self.semantic_duplicate_clusters
            );
        }
        for (bench, hits) in &self.contamination {
            let _ = writeln!(s, "  {bench}: {} item(s) hit by {} row(s)", hits.items_hit, hits.rows);
        }
        if self.judge_cleared > 0 {
            let _ = writeln!(s, "  judge: {} flagged row(s) called a different problem, kept", self.judge_cleared);
        }
        if self.majority_gold_problems + self.no_consensus_problems > 0 {
            let _ = writeln!(
                s,
                "  majority vote: gold for {} problem(s), no consensus for {}",
                self.majority_gold_problems, self.no_consensus_problems
            );
        }
        s
    }
}

/// `--max-per-problem k`: of a problem's rows still kept, the first `k` by `--pick` stay (right answers
/// before wrong ones for `shortest`).
fn keep_at_most(cfg: &FilterConfig, k: usize, rows: &[usize], facts: &[Facts], decisions: &mut [Decision]) {
    let mut alive: Vec<usize> = rows.iter().copied().filter(|&r| decisions[r].reason.is_none()).collect();
    if alive.len() <= k {
        return;
    }
    let rank = |r: usize| -> (u8, u64, u64) {
        let wrong = u8::from(decisions[r].correct != Some(true));
        match cfg.pick {
            Pick::Shortest => (wrong, facts[r].chars, r as u64),
            Pick::First => (0, r as u64, 0),
            Pick::Random => (0, xxhash_rust::xxh3::xxh3_64_with_seed(facts[r].id.as_bytes(), cfg.seed), r as u64),
        }
    };
    alive.sort_by_key(|&r| rank(r));
    for &r in &alive[k..] {
        reject(&mut decisions[r], Reason::MaxPerProblem, || serde_json::json!({ "kept": k }).to_string());
    }
}

/// The report's counts: kept, rejected by reason, and the benchmark items contaminated rows hit.
fn count(facts: &[Facts], decisions: &[Decision], work: &Work, report: &mut Report) -> Result<()> {
    // written by the signatures step whenever there is an evaluation set
    let evals: Vec<(String, String)> = if work.evals().exists() {
        let bytes = fs_err::read(work.evals())?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::data(Location::file(work.evals()), format!("unreadable working file: {e}"))
                .with_hint("rerun `--step signatures` (or the whole filter) to rewrite it")
        })?
    } else {
        Vec::new()
    };
    let mut hits: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (f, d) in facts.iter().zip(decisions) {
        match d.reason {
            None => report.kept += 1,
            Some(reason) => *report.rejected.entry(reason.name().to_string()).or_default() += 1,
        }
        if d.reason == Some(Reason::Contaminated)
            && let Some((bench, item)) = f.contam.and_then(|i| evals.get(i as usize))
        {
            *hits.entry(bench).or_default().entry(item).or_default() += 1;
        }
    }
    for (bench, items) in hits {
        let mut list: Vec<(String, u64)> = items.into_iter().map(|(i, n)| (i.to_string(), n)).collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let entry = BenchmarkHits {
            items_hit: list.len() as u64,
            rows: list.iter().map(|x| x.1).sum(),
            items: list.into_iter().take(100).map(|(item, rows)| ItemHits { item, rows }).collect(),
        };
        report.contamination.insert(bench.to_string(), entry);
    }
    Ok(())
}

/// Step 3: every decision, written per input slice of the signatures step; the report.
pub fn run(cfg: &FilterConfig, source: &Source, work: &Work, out: &Path, _ctx: &Context) -> Result<Report> {
    let shards = work.map_shards()?;
    let facts = read_facts(work, shards)?;
    let mut report = Report {
        rows_in: facts.len() as u64,
        judge_cleared: facts.iter().filter(|f| f.judge_cleared).count() as u64,
        ..Default::default()
    };
    let mut decisions: Vec<Decision> = facts
        .iter()
        .map(|f| Decision {
            reason: f.early.as_ref().map(|e| e.0),
            detail: f.early.as_ref().map(|e| e.1.clone()),
            correct: f.correct,
            extracted: f.extracted.clone(),
            majority_gold: None,
        })
        .collect();
    let traces = source.kind == crate::dataset::TableKind::Traces;
    // A problems table has one row per problem: nothing to group.
    let problems = if traces { groups(facts.iter().map(|f| f.problem.as_str())) } else { Default::default() };
    if traces {
        for rows in problems.values() {
            per_problem(cfg, &facts, rows, &mut decisions, &mut report);
        }
        // A prompt that repeats an earlier problem's: all of the later problem's rows go.
        let mut first_problem: HashMap<u128, &str> = HashMap::new();
        for (i, f) in facts.iter().enumerate() {
            let owner = *first_problem.entry(f.prompt_key).or_insert(&f.problem);
            if owner != f.problem {
                reject(&mut decisions[i], Reason::DuplicatePrompt, || {
                    serde_json::json!({ "problem": owner }).to_string()
                });
            }
        }
    }
    if !cfg.no_exact_dup {
        // Rows sorted by key: runs of one key are the groups (4 bytes a row, where a map of groups
        // would hold a vector per row).
        let mut order: Vec<u32> = (0..facts.len() as u32).collect();
        order.sort_unstable_by_key(|&r| (facts[r as usize].text_key, r));
        let runs = order
            .chunk_by(|a, b| facts[*a as usize].text_key == facts[*b as usize].text_key)
            .filter(|run| run.len() > 1)
            .map(|run| run.iter().map(|&r| r as usize).collect::<Vec<_>>());
        report.exact_duplicate_clusters = dedup(cfg.keep, runs, &facts, &mut decisions);
    }
    if cfg.near_dup {
        report.near_duplicate_clusters = near_dedup(cfg, source, work, &facts, &mut decisions)?;
    }
    if let Some(threshold) = cfg.semantic_dedup {
        let units = semantic_units(work, shards, &facts, traces.then_some(&problems))?;
        report.semantic_duplicate_clusters = semantic_dedup(cfg.keep, threshold, units, &facts, &mut decisions)?;
    }
    if let Some(k) = cfg.max_per_problem {
        for rows in problems.values() {
            keep_at_most(cfg, k, rows, &facts, &mut decisions);
        }
    }
    count(&facts, &decisions, work, &mut report)?;
    let total = source.input.rows();
    for index in 0..shards {
        let shard = Shard { index, count: shards };
        let range = shard.range(total);
        let mut e = Enc::default();
        for d in &decisions[range.start as usize..range.end as usize] {
            d.encode(&mut e);
        }
        let mut sink = Sink::create(work.decisions(shard))?;
        sink.put(&e.0)?;
        sink.finish()?;
    }
    write_file(&out.join(super::REPORT), &serde_json::to_vec_pretty(&report).expect("serialisable"))?;
    Ok(report)
}

/// Majority vote (problems without gold), pass-rate window, wrong answers.
fn per_problem(cfg: &FilterConfig, facts: &[Facts], rows: &[usize], decisions: &mut [Decision], report: &mut Report) {
    if cfg.no_verify {
        return;
    }
    if !facts[rows[0]].has_gold {
        let voters: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&r| facts[r].extracted.is_some() && decisions[r].reason != Some(Reason::Truncated))
            .collect();
        let vote = crate::verify::vote::majority(
            voters.iter().map(|&r| facts[r].extracted.as_deref().expect("voters have answers")),
            cfg.verify.tolerance,
        )
        .filter(|v| v.votes as f64 >= cfg.min_vote_share * v.total as f64);
        match vote {
            Some(vote) => {
                report.majority_gold_problems += 1;
                for &r in rows {
                    let d = &mut decisions[r];
                    d.correct = Some(
                        facts[r]
                            .extracted
                            .as_deref()
                            .is_some_and(|a| equivalent(&vote.answer, a, cfg.verify.tolerance).is_some()),
                    );
                    d.majority_gold = Some(vote.answer.clone());
                }
            }
            None => {
                report.no_consensus_problems += 1;
                for &r in rows {
                    reject(&mut decisions[r], Reason::NoConsensus, || {
                        serde_json::json!({ "answers": voters.len() }).to_string()
                    });
                }
                return;
            }
        }
    }
    if let Some(window) = cfg.pass_rate {
        let passed = rows.iter().filter(|&&r| decisions[r].correct == Some(true)).count();
        if !window.contains(passed, rows.len()) {
            report.pass_rate_rejected_problems += 1;
            for &r in rows {
                reject(&mut decisions[r], Reason::PassRate, || {
                    serde_json::json!({ "passed": passed, "samples": rows.len(), "window": window.to_string() })
                        .to_string()
                });
            }
        }
    }
    if !cfg.keep_incorrect {
        for &r in rows {
            if decisions[r].correct == Some(false) {
                let gold = if decisions[r].majority_gold.is_some() { "majority" } else { "reference" };
                reject(&mut decisions[r], Reason::Incorrect, || match &facts[r].test_error {
                    Some(test) => serde_json::json!({ "tests": "failed", "error": test }).to_string(),
                    None => serde_json::json!({ "gold": gold }).to_string(),
                });
            }
        }
    }
}

/// Exact duplicates: keep one surviving row per group of two or more, reject the other survivors.
/// Returns how many groups lost rows.
fn dedup(keep: Keep, groups: impl Iterator<Item = Vec<usize>>, facts: &[Facts], decisions: &mut [Decision]) -> u64 {
    let mut clusters = 0;
    for rows in groups {
        let alive: Vec<usize> = rows.iter().copied().filter(|&r| decisions[r].reason.is_none()).collect();
        if alive.len() < 2 {
            continue;
        }
        clusters += 1;
        let kept = *alive.iter().min_by_key(|&&r| priority(keep, r, facts, decisions)).expect("two or more");
        let detail = serde_json::json!({ "kept": facts[kept].id, "size": alive.len() }).to_string();
        for &r in alive.iter().filter(|&&r| r != kept) {
            reject(&mut decisions[r], Reason::ExactDuplicate, || detail.clone());
        }
    }
    clusters
}

/// Order of preference within duplicates: the smallest key is kept.
fn priority(keep: Keep, r: usize, facts: &[Facts], decisions: &[Decision]) -> (u8, u64, usize) {
    let len = facts[r].chars;
    let verdict = match decisions[r].correct {
        Some(true) => 0,
        None => 1,
        Some(false) => 2,
    };
    match keep {
        Keep::First => (0, 0, r),
        Keep::Shortest => (0, len, r),
        Keep::Longest => (0, u64::MAX - len, r),
        Keep::Best => (verdict, len, r),
    }
}

/// Near duplicates. Candidate pairs of surviving rows (from every band) are checked against their
/// exact shingle Jaccard (`--jaccard`); then rows are visited in keep order, and a row is rejected when
/// it is a duplicate of a row already kept. So every rejected row has a kept row at least that similar
/// (no chains: a row is never removed for resembling a removed one). Returns the number of kept rows
/// that had duplicates.
fn near_dedup(
    cfg: &FilterConfig,
    source: &Source,
    work: &Work,
    facts: &[Facts],
    decisions: &mut [Decision],
) -> Result<u64> {
    let alive = |r: u32| decisions[r as usize].reason.is_none();
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for band in 0..cfg.minhash.bands {
        let bytes = fs_err::read(work.edges(band))?;
        pairs.extend(bytes.chunks_exact(16).map(|p| {
            let a = u64::from_le_bytes(p[..8].try_into().expect("8")) as u32;
            let b = u64::from_le_bytes(p[8..].try_into().expect("8")) as u32;
            (a.min(b), a.max(b))
        }));
    }
    pairs.retain(|&(a, b)| alive(a) && alive(b));
    pairs.sort_unstable();
    pairs.dedup();
    let similarity: Vec<f64> = if cfg.minhash.jaccard > 0.0 {
        let rows: std::collections::BTreeSet<u32> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
        let shingles = shingles_of(cfg, source, &rows)?;
        pairs.par_iter().map(|(a, b)| super::near_dup::jaccard_sorted(&shingles[a], &shingles[b])).collect()
    } else {
        vec![1.0; pairs.len()]
    };
    let mut neighbours: HashMap<u32, Vec<(u32, f64)>> = HashMap::new();
    for (&(a, b), &j) in pairs.iter().zip(&similarity) {
        if j >= cfg.minhash.jaccard {
            neighbours.entry(a).or_default().push((b, j));
            neighbours.entry(b).or_default().push((a, j));
        }
    }
    let mut order: Vec<u32> = neighbours.keys().copied().collect();
    order.sort_by_key(|&r| priority(cfg.keep, r as usize, facts, decisions));
    let mut kept = vec![false; facts.len()];
    let mut absorbing = std::collections::HashSet::new();
    for r in order {
        let best = neighbours[&r]
            .iter()
            .filter(|(other, _)| kept[*other as usize])
            .max_by(|x, y| x.1.total_cmp(&y.1).then_with(|| y.0.cmp(&x.0)));
        match best {
            Some(&(other, j)) => {
                absorbing.insert(other);
                let mut detail = serde_json::json!({ "kept": facts[other as usize].id });
                if cfg.minhash.jaccard > 0.0 {
                    detail["jaccard"] = ((j * 1e4).round() / 1e4).into();
                }
                reject(&mut decisions[r as usize], Reason::NearDuplicate, || detail.to_string());
            }
            None => kept[r as usize] = true,
        }
    }
    Ok(absorbing.len() as u64)
}

/// One problem for `--semantic-dedup`: its rows and its prompt's unit vector.
struct Unit {
    rows: Vec<usize>,
    vector: Vec<f32>,
}

/// The problems' vectors from every map slice (a problem met in two slices once), with their rows: a
/// trace's problem has its samples (`problems`), a problems table's row is its own.
fn semantic_units(
    work: &Work,
    shards: u64,
    facts: &[Facts],
    problems: Option<&indexed::Groups<&str>>,
) -> Result<Vec<Unit>> {
    let mut units = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for index in 0..shards {
        let path = work.vectors(Shard { index, count: shards });
        let bytes = fs_err::read(&path)?;
        let broken = || Error::data(Location::file(&path), "truncated working file").with_hint("rerun the filter");
        let dim = u32::from_le_bytes(bytes.get(..4).ok_or_else(broken)?.try_into().expect("4")) as usize;
        let entries = bytes[4..].chunks(8 + 4 * dim);
        for entry in entries {
            if entry.len() != 8 + 4 * dim {
                return Err(broken());
            }
            let row = u64::from_le_bytes(entry[..8].try_into().expect("8")) as usize;
            let problem = facts.get(row).ok_or_else(broken)?.problem.as_str();
            if !seen.insert(problem) {
                continue;
            }
            let vector = entry[8..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
            let rows = match problems {
                Some(groups) => groups.get(&problem).cloned().unwrap_or_default(),
                None => vec![row],
            };
            units.push(Unit { rows, vector });
        }
    }
    Ok(units)
}

/// Semantic duplicates: problems visited in keep order (a problems table's rows by `--keep`, a traces
/// table's problems by their first row), each compared with the problems kept before it; one whose
/// closest kept problem has cosine at least `threshold` loses its surviving rows, naming that problem.
/// As with near duplicates, nothing is removed for resembling a removed problem. Blocks of 256 problems
/// against the kept ones are matrix products, so memory is the kept vectors plus one block's scores.
/// Returns the number of kept problems that others duplicated.
fn semantic_dedup(
    keep: Keep,
    threshold: f32,
    mut units: Vec<Unit>,
    facts: &[Facts],
    decisions: &mut [Decision],
) -> Result<u64> {
    use super::signatures::{candle, matrix};
    const BLOCK: usize = 256;
    const KEPT_CHUNK: usize = 16_384;
    units.retain(|u| u.rows.iter().any(|&r| decisions[r].reason.is_none()));
    units.sort_by_key(|u| u.rows.iter().map(|&r| priority(keep, r, facts, decisions)).min());
    let Some(dim) = units.first().map(|u| u.vector.len()) else { return Ok(0) };
    let mut kept: Vec<usize> = Vec::new(); // indices into `units`
    let mut kept_vectors: Vec<f32> = Vec::new();
    let mut absorbing = std::collections::HashSet::new();
    for (b, block) in units.chunks(BLOCK).enumerate() {
        let start = b * BLOCK;
        let vectors = matrix(block.iter().map(|u| u.vector.clone()).collect(), dim)?;
        // the closest problem kept before this block, per problem of it
        let mut best: Vec<Option<(usize, f32)>> = vec![None; block.len()];
        for (c, chunk) in kept_vectors.chunks(KEPT_CHUNK * dim).enumerate() {
            let others = candle_core::Tensor::from_slice(chunk, (chunk.len() / dim, dim), &candle_core::Device::Cpu)
                .map_err(candle)?;
            let scores = vectors.matmul(&others.t().map_err(candle)?).map_err(candle)?;
            let at = scores.argmax(1).map_err(candle)?.to_vec1::<u32>().map_err(candle)?;
            let top = scores.max(1).map_err(candle)?.to_vec1::<f32>().map_err(candle)?;
            for (slot, (i, score)) in best.iter_mut().zip(at.into_iter().zip(top)) {
                if score >= threshold && slot.is_none_or(|(_, s)| score > s) {
                    *slot = Some((kept[c * KEPT_CHUNK + i as usize], score));
                }
            }
        }
        let within = vectors.matmul(&vectors.t().map_err(candle)?).map_err(candle)?.to_vec2::<f32>().map_err(candle)?;
        let mut kept_here = Vec::new();
        for x in 0..block.len() {
            let mut closest = best[x];
            for &y in &kept_here {
                let score = within[x][y];
                if score >= threshold && closest.is_none_or(|(_, s)| score > s) {
                    closest = Some((start + y, score));
                }
            }
            match closest {
                Some((other, score)) => {
                    absorbing.insert(other);
                    let detail = serde_json::json!({
                        "problem": facts[units[other].rows[0]].problem,
                        "cosine": (f64::from(score) * 1e4).round() / 1e4,
                    })
                    .to_string();
                    for &r in &block[x].rows {
                        reject(&mut decisions[r], Reason::SemanticDuplicate, || detail.clone());
                    }
                }
                None => kept_here.push(x),
            }
        }
        for x in kept_here {
            kept.push(start + x);
            kept_vectors.extend_from_slice(&block[x].vector);
        }
    }
    Ok(absorbing.len() as u64)
}

/// The shingle sets of `rows`, read from the input again (only rows in candidate pairs are kept).
fn shingles_of(
    cfg: &FilterConfig,
    source: &Source,
    rows: &std::collections::BTreeSet<u32>,
) -> Result<HashMap<u32, Vec<u64>>> {
    let mut out = HashMap::with_capacity(rows.len());
    let Some((&first, &last)) = rows.first().zip(rows.last()) else { return Ok(out) };
    let column = source.text_column();
    let mut row = u64::from(first);
    for batch in source.input.batches(source.kind, u64::from(first)..u64::from(last) + 1) {
        let batch = batch?;
        let text = arrow_array::cast::AsArray::as_string::<i32>(batch.column_by_name(column).expect("conformed"));
        let wanted: Vec<(u32, &str)> = (0..batch.num_rows())
            .filter(|&i| rows.contains(&((row + i as u64) as u32)))
            .map(|i| ((row + i as u64) as u32, text.value(i)))
            .collect();
        let sets: Vec<(u32, Vec<u64>)> =
            wanted.into_par_iter().map(|(r, t)| (r, super::near_dup::shingles(t, cfg.minhash.ngram))).collect();
        out.extend(sets);
        row += batch.num_rows() as u64;
    }
    Ok(out)
}

fn reject(d: &mut Decision, reason: Reason, detail: impl FnOnce() -> String) {
    if d.reason.is_none() {
        d.reason = Some(reason);
        d.detail = Some(detail());
    }
}

/// Rows grouped by key, groups in order of their first row.
fn groups<K: std::hash::Hash + Eq>(keys: impl Iterator<Item = K>) -> indexed::Groups<K> {
    let mut g = indexed::Groups::default();
    for (row, key) in keys.enumerate() {
        g.push(key, row);
    }
    g
}

mod indexed {
    use std::collections::HashMap;

    /// Groups that iterate in first-seen order (deterministic, unlike a `HashMap`'s).
    pub struct Groups<K> {
        index: HashMap<K, usize>,
        rows: Vec<Vec<usize>>,
    }

    impl<K> Default for Groups<K> {
        fn default() -> Self {
            Groups { index: HashMap::new(), rows: Vec::new() }
        }
    }

    impl<K: std::hash::Hash + Eq> Groups<K> {
        pub fn push(&mut self, key: K, row: usize) {
            let next = self.rows.len();
            let at = *self.index.entry(key).or_insert(next);
            if at == next {
                self.rows.push(Vec::new());
            }
            self.rows[at].push(row);
        }

        pub fn get(&self, key: &K) -> Option<&Vec<usize>> {
            self.index.get(key).map(|&at| &self.rows[at])
        }

        pub fn values(&self) -> std::slice::Iter<'_, Vec<usize>> {
            self.rows.iter()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip() {
        let d = Decision {
            reason: Some(Reason::NearDuplicate),
            detail: Some("{}".into()),
            correct: Some(true),
            extracted: Some("7".into()),
            majority_gold: None,
        };
        let mut e = Enc::default();
        d.encode(&mut e);
        Decision::default().encode(&mut e);
        let path = Path::new("x");
        let mut dec = Dec::new(&e.0, path);
        assert_eq!(Decision::decode(&mut dec).unwrap(), d);
        assert_eq!(Decision::decode(&mut dec).unwrap(), Decision::default());
    }
}
