//! Step 1 (map, per input slice): what the later steps need to know of each row, the [`Facts`], and its
//! MinHash band keys. Everything that depends on one row alone is decided here: contamination, the
//! verifier's trace checks, length limits.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use arrow_array::{Array, RecordBatch, StringArray};
use candle_core::Tensor;
use rayon::prelude::*;
use serde_json::Value;

use super::checks::{Overlap, RowCheck, RowView, first_failure};
use super::decontam::Index;
use super::judge::Judge;
use super::near_dup::MinHasher;
use super::work::{Dec, Enc, Sink, Work, write_file};
use super::{FilterConfig, Reason, Source};
use crate::Context;
use crate::dataset::{Input, Shard, TableKind};
use crate::error::{Error, Location, Result};
use crate::formats::domain::Domain;
use crate::model::embeddings::CachedEncoder;
use crate::progress::Progress;
use crate::verify::{TraceRef, verify_trace};

/// Columns tried, in order, for an evaluation item's text and its id.
const EVAL_TEXT: [&str; 4] = ["prompt", "problem", "question", "text"];
const EVAL_ID: [&str; 4] = ["id", "task_id", "unique_id", "problem_id"];

/// What the reduce steps know of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub id: String,
    /// The problem it answers (its own id for a problems table).
    pub problem: String,
    /// Exact-duplicate key of the normalised prompt.
    pub prompt_key: u128,
    /// Exact-duplicate key of the normalised text (the completion of a trace, the prompt of a problem).
    pub text_key: u128,
    /// Characters of the text.
    pub chars: u64,
    /// The first per-row check it failed, with details.
    pub early: Option<(Reason, String)>,
    /// The evaluation item it overlaps, when contaminated.
    pub contam: Option<u32>,
    pub has_gold: bool,
    /// `None`: not judged (no gold, verification off).
    pub correct: Option<bool>,
    pub extracted: Option<String>,
    /// Code: the first failing test and why, for the rejection's detail.
    pub test_error: Option<String>,
    /// Flagged by `--semantic-decontaminate`, then called a different problem by `--judge`.
    pub judge_cleared: bool,
}

impl Facts {
    fn encode(&self, e: &mut Enc) {
        e.str(&self.id);
        e.str(&self.problem);
        e.u128(self.prompt_key);
        e.u128(self.text_key);
        e.u64(self.chars);
        match &self.early {
            None => e.u8(0),
            Some((reason, detail)) => {
                e.u8(reason.code());
                e.str(detail);
            }
        }
        e.u32(self.contam.map_or(u32::MAX, |i| i));
        e.u8(u8::from(self.has_gold));
        e.opt_bool(self.correct);
        e.opt_str(self.extracted.as_deref());
        e.opt_str(self.test_error.as_deref());
        e.u8(u8::from(self.judge_cleared));
    }

    fn decode(d: &mut Dec) -> Result<Facts> {
        Ok(Facts {
            id: d.string()?,
            problem: d.string()?,
            prompt_key: d.u128()?,
            text_key: d.u128()?,
            chars: d.u64()?,
            early: match Reason::from_code(d.u8()?) {
                None => None,
                Some(reason) => Some((reason, d.string()?)),
            },
            contam: Some(d.u32()?).filter(|&i| i != u32::MAX),
            has_gold: d.u8()? == 1,
            correct: d.opt_bool()?,
            extracted: d.opt_string()?,
            test_error: d.opt_string()?,
            judge_cleared: d.u8()? == 1,
        })
    }
}

/// Read the facts of every map slice, in row order.
pub fn read_facts(work: &Work, shards: u64) -> Result<Vec<Facts>> {
    let mut all = Vec::new();
    for index in 0..shards {
        let path = work.facts(Shard { index, count: shards });
        let bytes = fs_err::read(&path)?;
        let mut d = Dec::new(&bytes, &path);
        while !d.is_empty() {
            all.push(Facts::decode(&mut d)?);
        }
    }
    Ok(all)
}

/// The evaluation items of `--decontaminate`, indexed, and of `--semantic-decontaminate`, embedded.
pub struct Evals {
    pub index: Index,
    /// `(benchmark path, item id)` per item: the indexed ones, then the embedded ones.
    pub items: Vec<(String, String)>,
    semantic: Option<Semantic>,
}

/// The embedded evaluation items: their unit vectors as an `items × dim` matrix, and where they start in
/// [`Evals::items`].
struct Semantic {
    vectors: Tensor,
    first: usize,
    texts: Vec<String>,
}

impl Evals {
    pub fn load(cfg: &FilterConfig, encoder: Option<&CachedEncoder>) -> Result<Evals> {
        let mut evals = Evals { index: Index::new(cfg.decontam.clone()), items: Vec::new(), semantic: None };
        for path in &cfg.decontaminate {
            for (id, text) in eval_items(path)? {
                evals.index.add(&text);
                evals.items.push((path.display().to_string(), id));
            }
        }
        if let (false, Some(encoder)) = (cfg.semantic_decontaminate.is_empty(), encoder) {
            let first = evals.items.len();
            let mut texts = Vec::new();
            for path in &cfg.semantic_decontaminate {
                for (id, text) in eval_items(path)? {
                    evals.items.push((path.display().to_string(), id));
                    texts.push(text);
                }
            }
            let rows = encoder.embed(&texts.iter().map(String::as_str).collect::<Vec<_>>())?;
            evals.semantic = Some(Semantic { vectors: matrix(rows, encoder.dim())?, first, texts });
        }
        Ok(evals)
    }

    /// For each embedded text (`rows × dim`), the embedded item closest to it and the cosine, when at
    /// least `threshold`.
    fn similar(&self, rows: &Tensor, threshold: f32) -> Result<Vec<Option<(usize, f32)>>> {
        let Some(s) = &self.semantic else { return Ok(vec![None; rows.dim(0).map_err(candle)?]) };
        let cosines = rows.matmul(&s.vectors.t().map_err(candle)?).map_err(candle)?;
        let best = cosines.argmax(1).map_err(candle)?.to_vec1::<u32>().map_err(candle)?;
        let top = cosines.max(1).map_err(candle)?.to_vec1::<f32>().map_err(candle)?;
        Ok(best.into_iter().zip(top).map(|(i, c)| (c >= threshold).then_some((s.first + i as usize, c))).collect())
    }

    /// The text of embedded item `item` (an index into [`Evals::items`]).
    fn text(&self, item: usize) -> &str {
        let s = self.semantic.as_ref().expect("an embedded item");
        &s.texts[item - s.first]
    }
}

pub(super) fn candle(e: candle_core::Error) -> Error {
    Error::usage(format!("comparing embeddings: {e}"))
}

/// The sentence encoder, when a semantic check asks for one, with the embeddings cache unless
/// `--no-embedding-cache`.
fn encoder(cfg: &FilterConfig) -> Result<Option<CachedEncoder>> {
    match &cfg.encoder {
        Some(dir) if !cfg.semantic_decontaminate.is_empty() || cfg.semantic_dedup.is_some() => {
            let cache = if cfg.no_embedding_cache { None } else { crate::cache::dir() };
            Ok(Some(CachedEncoder::load(dir, cache.as_deref())?))
        }
        _ => Ok(None),
    }
}

/// The prompts of a batch embedded, each distinct prompt once (a problem's samples share theirs): the
/// `distinct × dim` matrix, each row's line of it, and the distinct prompts.
fn embed_prompts<'a>(encoder: &CachedEncoder, prompts: &[&'a str]) -> Result<(Tensor, Vec<usize>, Vec<&'a str>)> {
    let mut line: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut distinct = Vec::new();
    let lines = prompts
        .iter()
        .map(|&p| {
            *line.entry(p).or_insert_with(|| {
                distinct.push(p);
                distinct.len() - 1
            })
        })
        .collect();
    Ok((matrix(encoder.embed(&distinct)?, encoder.dim())?, lines, distinct))
}

/// Unit vectors as one `rows × dim` matrix (an empty one has no rows).
pub(super) fn matrix(rows: Vec<Vec<f32>>, dim: usize) -> Result<Tensor> {
    let n = rows.len();
    Tensor::from_vec(rows.concat(), (n, dim), &candle_core::Device::Cpu).map_err(candle)
}

/// `(id, question text)` of every item of an evaluation set.
fn eval_items(path: &Path) -> Result<Vec<(String, String)>> {
    let input = Input::open(path)?;
    let mut items = Vec::new();
    for (row, record) in input.records(0..input.rows()).enumerate() {
        let record = record?;
        let Some(text) = EVAL_TEXT.iter().find_map(|c| record.fields.get(*c).and_then(Value::as_str)) else {
            return Err(Error::data(record.location, "no question text in this row").with_hint(format!(
                "an evaluation set needs one of the columns {}",
                EVAL_TEXT.map(|c| format!("`{c}`")).join(", ")
            )));
        };
        let id = EVAL_ID
            .iter()
            .find_map(|c| match record.fields.get(*c) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| format!("row {row}"));
        items.push((id, text.to_string()));
    }
    Ok(items)
}

/// The columns of one typed batch.
struct Columns<'a> {
    id: &'a StringArray,
    problem: &'a StringArray,
    domain: &'a StringArray,
    prompt: &'a StringArray,
    gold: &'a StringArray,
    metadata: &'a StringArray,
    completion: Option<&'a StringArray>,
    finish_reason: Option<&'a StringArray>,
    /// A trace's `error` (the column is absent from traces written before it existed).
    error: Option<&'a StringArray>,
    tests: Option<&'a arrow_array::ListArray>,
    tokens: Option<&'a arrow_array::PrimitiveArray<UInt32Type>>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch, kind: TableKind) -> Columns<'a> {
        let s = |name: &str| batch.column_by_name(name).expect("conformed batch").as_string::<i32>();
        let traces = kind == TableKind::Traces;
        Columns {
            id: s("id"),
            problem: s(if traces { "problem_id" } else { "id" }),
            domain: s("domain"),
            prompt: s("prompt"),
            gold: s("gold"),
            metadata: s("metadata"),
            completion: traces.then(|| s("completion")),
            finish_reason: traces.then(|| s("finish_reason")),
            error: batch.column_by_name("error").filter(|_| traces).map(AsArray::as_string::<i32>),
            tests: batch.column_by_name("tests").map(AsArray::as_list::<i32>),
            tokens: traces
                .then(|| batch.column_by_name("completion_tokens").expect("conformed").as_primitive::<UInt32Type>()),
        }
    }
}

fn opt(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// Run the signatures step over slice `shard` of the input.
pub fn run(cfg: &FilterConfig, source: &Source, work: &Work, shard: Shard, ctx: &Context) -> Result<()> {
    let bands = if cfg.near_dup { cfg.minhash.bands } else { 0 };
    let facts_path = work.facts(shard);
    if facts_path.exists() && (0..bands).all(|b| work.band(b, shard).exists()) {
        return Ok(()); // finished by an earlier run of this same command
    }
    let encoder = encoder(cfg)?;
    let evals = Evals::load(cfg, encoder.as_ref())?;
    let mut judge = match &cfg.judge {
        Some(spec) => Some(Judge::open(spec, cfg.judge_model.as_deref(), &cfg.http, cfg.judge_max_tokens)?),
        None => None,
    };
    if shard.index == 0 {
        let items: Vec<_> = evals.items.iter().map(|(b, i)| serde_json::json!([b, i])).collect();
        write_file(&work.evals(), &serde_json::to_vec(&items).expect("serialisable"))?;
    }
    let tools = RowTools { evals, hasher: MinHasher::new(cfg.minhash.clone()), checks: RowCheck::list(cfg) };
    let range = shard.range(source.input.rows());
    let progress = Progress::rows("filter 1/2", range.end - range.start, ctx.quiet);
    let mut band_sinks = (0..bands).map(|b| Sink::create(work.band(b, shard))).collect::<Result<Vec<_>>>()?;
    let mut facts_sink = Sink::create(facts_path)?;
    // `--semantic-dedup`: the prompt's vector of each problem, at the first row of it in this slice
    let mut vectors = match (&encoder, cfg.semantic_dedup) {
        (Some(encoder), Some(_)) => {
            let mut sink = Sink::create(work.vectors(shard))?;
            sink.put(&(encoder.dim() as u32).to_le_bytes())?;
            Some((sink, std::collections::HashSet::new()))
        }
        _ => None,
    };
    let pool = cfg.verify.thread_pool()?;
    let mut row = range.start;
    for batch in source.input.batches(source.kind, range) {
        let batch = batch?;
        let cols = Columns::of(&batch, source.kind);
        let file = &source.input.path;
        let mut answers: Vec<Option<(Option<bool>, String)>> = Vec::new();
        let similar: Vec<Option<(usize, f32)>> = match &encoder {
            Some(encoder) => {
                let prompts: Vec<&str> = (0..batch.num_rows()).map(|i| cols.prompt.value(i)).collect();
                let (embedded, lines, distinct) = embed_prompts(encoder, &prompts)?;
                if let Some((sink, seen)) = &mut vectors {
                    let all = embedded.to_vec2::<f32>().map_err(candle)?;
                    for (i, &line) in lines.iter().enumerate() {
                        if seen.insert(cols.problem.value(i).to_string()) {
                            sink.put(&(row + i as u64).to_le_bytes())?;
                            sink.put(&all[line].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
                        }
                    }
                }
                let best = tools.evals.similar(&embedded, cfg.semantic_threshold)?;
                if let Some(judge) = &mut judge {
                    // each flagged distinct prompt asked once, beside its item
                    let flagged: Vec<usize> = (0..distinct.len()).filter(|&l| best[l].is_some()).collect();
                    let pairs: Vec<(&str, &str)> =
                        flagged.iter().map(|&l| (distinct[l], tools.evals.text(best[l].expect("flagged").0))).collect();
                    let mut per_line = vec![None; distinct.len()];
                    for (&l, answer) in flagged.iter().zip(judge.ask(&pairs, ctx.quiet)?) {
                        per_line[l] = Some(answer);
                    }
                    answers = lines.iter().map(|&line| per_line[line].clone()).collect();
                }
                lines.iter().map(|&line| best[line]).collect()
            }
            None => vec![None; batch.num_rows()],
        };
        let rows: Vec<(Facts, Option<Vec<u64>>)> = pool.install(|| {
            (0..batch.num_rows())
                .into_par_iter()
                .map(|i| {
                    let answer = answers.get(i).and_then(Option::as_ref);
                    row_facts(cfg, &cols, i, similar[i], answer, &tools, file, row + i as u64)
                })
                .collect::<Result<_>>()
        })?;
        let mut enc = Enc::default();
        let mut band_bytes: Vec<Vec<u8>> = vec![Vec::new(); bands];
        for (i, (facts, keys)) in rows.iter().enumerate() {
            facts.encode(&mut enc);
            for (b, key) in keys.iter().flatten().enumerate() {
                band_bytes[b].extend_from_slice(&key.to_le_bytes());
                band_bytes[b].extend_from_slice(&(row + i as u64).to_le_bytes());
            }
        }
        facts_sink.put(&enc.0)?;
        for (sink, bytes) in band_sinks.iter_mut().zip(&band_bytes) {
            sink.put(bytes)?;
        }
        row += batch.num_rows() as u64;
        progress.inc(batch.num_rows() as u64);
    }
    for sink in band_sinks {
        sink.finish()?;
    }
    if let Some((sink, _)) = vectors {
        sink.finish()?;
    }
    if let Some(encoder) = &encoder {
        encoder.flush()?;
        if !ctx.quiet {
            let (cached, computed) = encoder.counts();
            eprintln!("filter: sentence embeddings: {cached} from the cache, {computed} computed");
        }
    }
    facts_sink.finish()?; // last: its presence marks the step done
    progress.finish();
    Ok(())
}

/// What every row is checked and hashed with, built once per run.
struct RowTools {
    evals: Evals,
    hasher: MinHasher,
    checks: Vec<RowCheck>,
}

/// What one row is, for the decisions after: `similar` is its prompt's closest embedded benchmark item,
/// `answer` what `--judge` said of the two.
#[allow(clippy::too_many_arguments)]
fn row_facts(
    cfg: &FilterConfig,
    cols: &Columns,
    i: usize,
    similar: Option<(usize, f32)>,
    answer: Option<&(Option<bool>, String)>,
    tools: &RowTools,
    file: &Path,
    row: u64,
) -> Result<(Facts, Option<Vec<u64>>)> {
    let RowTools { evals, hasher, checks } = tools;
    let prompt = cols.prompt.value(i);
    let text = cols.completion.map_or(prompt, |c| c.value(i));
    let gold = opt(cols.gold, i);
    let traces = cols.completion.is_some();
    // Keys only where a later step compares them: prompts of traces (repeated problems), texts (exact dedup).
    let prompt_key = if traces { super::exact_dup::key(prompt, cfg.dedup_digits) } else { 0 };
    let text_key = if cfg.no_exact_dup { 0 } else { super::exact_dup::key(text, cfg.dedup_digits) };
    let mut facts = Facts {
        id: cols.id.value(i).to_string(),
        problem: cols.problem.value(i).to_string(),
        prompt_key,
        text_key,
        chars: text.chars().count() as u64,
        early: None,
        contam: None,
        has_gold: gold.is_some(),
        correct: None,
        extracted: None,
        test_error: None,
        judge_cleared: false,
    };
    let fields: &[(&str, &str)] =
        if cols.completion.is_some() { &[("prompt", prompt), ("completion", text)] } else { &[("prompt", prompt)] };
    let hit = fields.iter().find_map(|(field, value)| evals.index.check(value).map(|hit| (hit, *field)));
    let overlap = match (&hit, similar, answer) {
        (Some((h, field)), _, _) => Some((h.item, Overlap::Ngrams(h), *field)),
        // the judge has the last word on a prompt only the embeddings flag: a different problem is kept
        (None, Some(_), Some((Some(false), _))) => {
            facts.judge_cleared = true;
            None
        }
        (None, similar, answer) => {
            similar.map(|(item, cosine)| (item, Overlap::Similar(cosine, answer.map(|a| a.1.as_str())), "prompt"))
        }
    };
    facts.contam = overlap.as_ref().map(|(item, _, _)| *item as u32);
    let mut verdict = None;
    if let Some(completion) = cols.completion.filter(|_| !cfg.no_verify) {
        let domain = Domain::of(cols.domain.value(i));
        let tests: Option<Vec<String>> = cols.tests.filter(|t| domain == Domain::Code && !t.is_null(i)).map(|t| {
            let list = t.value(i);
            let list = list.as_string::<i32>();
            (0..list.len()).map(|j| list.value(j).to_string()).collect()
        });
        let trace = TraceRef {
            domain,
            gold,
            output: completion.value(i),
            prompt: Some(prompt),
            metadata: Some(cols.metadata.value(i)),
            tests: tests.as_deref(),
            finish_reason: cols.finish_reason.map(|f| f.value(i)),
        };
        let mut v = verify_trace(&trace, &cfg.verify)
            .map_err(|(column, message)| Error::data(Location::row(file, row).column(column), message))?;
        facts.has_gold |= matches!(trace.domain, Domain::Countdown | Domain::Code);
        if facts.has_gold {
            facts.correct = Some(v.correct);
        }
        // no row check reads them; a program is not voted on (code is judged by its tests)
        if trace.domain == Domain::Code {
            facts.test_error = v.test_error.take();
        } else {
            facts.extracted = v.extracted.take();
        }
        verdict = Some(v);
    }
    let view = RowView {
        contamination: overlap.map(|(i, overlap, field)| {
            let (benchmark, item) = &evals.items[i];
            (overlap, benchmark.as_str(), item.as_str(), field)
        }),
        verdict: verdict.as_ref(),
        chars: facts.chars,
        tokens: cols.tokens.map(|t| u64::from(t.value(i))),
        teacher_error: cols
            .finish_reason
            .filter(|f| f.value(i) == "error")
            .map(|_| cols.error.and_then(|e| opt(e, i)).unwrap_or("the request failed")),
    };
    facts.early = first_failure(checks, &view);
    let keys = if cfg.near_dup { hasher.band_keys(text) } else { None };
    Ok((facts, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip() {
        let facts = Facts {
            id: "p1#0".into(),
            problem: "p1".into(),
            prompt_key: 7,
            text_key: u128::MAX,
            chars: 12,
            early: Some((Reason::Contaminated, "{}".into())),
            contam: Some(3),
            has_gold: true,
            correct: Some(false),
            extracted: Some("42".into()),
            test_error: Some("test 1 of 3: AssertionError".into()),
            judge_cleared: true,
        };
        let plain = Facts {
            early: None,
            contam: None,
            correct: None,
            extracted: None,
            test_error: None,
            judge_cleared: false,
            ..facts.clone()
        };
        let mut e = Enc::default();
        facts.encode(&mut e);
        plain.encode(&mut e);
        let path = Path::new("x");
        let mut d = Dec::new(&e.0, path);
        assert_eq!(Facts::decode(&mut d).unwrap(), facts);
        assert_eq!(Facts::decode(&mut d).unwrap(), plain);
        assert!(d.is_empty());
        assert!(Facts::decode(&mut Dec::new(&e.0[..10], path)).is_err());
    }
}
