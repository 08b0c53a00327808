use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use forge::filter::decontam::{DecontamConfig, Index};
use forge::filter::near_dup::{MinHashConfig, MinHasher, jaccard};
use serde_json::{Value, json};

use crate::util::{Scratch, jsonl, ok, records, rejected, run, shared_data, trace};

const APPLES: &str = "Tom has 3 boxes with 4 apples in each box. How many apples does Tom have?";
const TRAINS: &str =
    "A train leaves the station at noon and travels 60 miles per hour for three hours. How far does it go?";

/// A long solution; `word` changes one word of it (5-gram Jaccard of two variants about 0.87).
fn long_solution(answer: &str, word: &str) -> String {
    format!(
        "First we read the problem carefully and write down every quantity it gives us. The baker makes \
         twelve loaves each morning and sells them at the market before noon on every weekday. He keeps two \
         loaves for his {word} family and gives one loaf to the neighbour who helps him carry the baskets \
         home. So the number he sells is twelve minus two minus one, which is nine loaves, and at two \
         dollars per loaf he earns eighteen dollars each day of the week. The answer is \\boxed{{{answer}}}."
    )
}

/// `id -> reject_reason` of a filter output.
fn reasons(out: &Path) -> BTreeMap<String, String> {
    rejected(out).into_iter().map(|(id, (r, _))| (id, r)).collect()
}

fn by_id(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn with(mut row: Value, key: &str, value: Value) -> Value {
    row[key] = value;
    row
}

/// Every kind of rejection on a small hand-made traces set: each row gets the reason the rules give it,
/// kept + rejected = input, and the report names the contaminated benchmark item.
#[test]
fn filter_keeps_and_rejects_every_row_with_a_reason() {
    let s = Scratch::new();
    let looping = format!("Let me see. {}The answer is \\boxed{{12}}.", "I think that ".repeat(12));
    let rows = vec![
        trace("apples", 0, APPLES, Some("12"), "Three boxes of four apples: 3 * 4 = 12. The answer is \\boxed{12}."),
        trace("apples", 1, APPLES, Some("12"), "three boxes of four apples:   3*4 = 12.  The ANSWER is \\boxed{12}"),
        trace("apples", 2, APPLES, Some("12"), "Three plus four is 7. The answer is \\boxed{7}."),
        with(trace("apples", 3, APPLES, Some("12"), "Three boxes, and each box has"), "finish_reason", json!("length")),
        trace("apples", 4, APPLES, Some("12"), &looping),
        trace("trains", 0, TRAINS, Some("180"), "60 * 3 = 180 miles. The answer is \\boxed{180}."),
        trace("apples-again", 0, APPLES, Some("12"), "Four apples in each of 3 boxes make 12. \\boxed{12}"),
        trace("bakery", 0, "How much does the baker earn each day?", Some("18"), &long_solution("18", "own")),
        trace("bakery", 1, "How much does the baker earn each day?", Some("18"), &long_solution("18", "big")),
        trace("vote", 0, "Pick a number that is five.", None, "It is five, so \\boxed{5}."),
        trace("vote", 1, "Pick a number that is five.", None, "Five it is: the answer is \\boxed{5}."),
        trace("vote", 2, "Pick a number that is five.", None, "Maybe six? The answer is \\boxed{6}."),
        trace("split", 0, "Pick any number.", None, "\\boxed{1}"),
        trace("split", 1, "Pick any number.", None, "I choose \\boxed{2}"),
        trace("split", 2, "Pick any number.", None, "Say \\boxed{3}"),
    ];
    let input = s.write("traces.jsonl", jsonl(&rows));
    let eval = s.write("eval.jsonl", format!("{}\n", json!({"question": TRAINS, "id": "train-7"})));
    let out = s.path("curated");
    let filter = || {
        run(&[
            &"filter",
            &"--input",
            &input,
            &"-o",
            &out,
            &"--near-dup",
            &"--decontaminate",
            &eval,
            &"--max-per-problem",
            &"1",
        ])
    };
    let (code, _, stderr) = filter();
    assert_eq!(code, 0, "{stderr}");
    let expected = by_id(&[
        ("apples#1", "exact_duplicate"),
        ("apples#2", "incorrect"),
        ("apples#3", "truncated"),
        ("apples#4", "repetition"),
        ("trains#0", "contaminated"),
        ("apples-again#0", "duplicate_prompt"),
        ("bakery#1", "near_duplicate"),
        ("vote#1", "max_per_problem"),
        ("vote#2", "incorrect"),
        ("split#0", "no_consensus"),
        ("split#1", "no_consensus"),
        ("split#2", "no_consensus"),
    ]);
    assert_eq!(reasons(&out), expected);
    let kept = records(&out);
    let ids: Vec<&str> = kept.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["apples#0", "bakery#0", "vote#0"]);
    assert_eq!(kept[2]["gold"], "5");
    assert_eq!(kept[2]["gold_origin"], "majority");
    assert_eq!(kept[0]["gold_origin"], "reference");
    assert_eq!(kept[0]["correct"], true);
    assert_eq!(kept[0]["extracted"], "12");
    let details = rejected(&out);
    assert_eq!(details["apples#1"].1["kept"], "apples#0");
    assert_eq!(details["bakery#1"].1["kept"], "bakery#0");
    assert!(details["bakery#1"].1["jaccard"].as_f64().unwrap() >= 0.8);
    assert_eq!(details["trains#0"].1["item"], "train-7");
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "curated");
    assert_eq!(manifest["report"]["rows_in"], 15);
    assert_eq!(manifest["report"]["rows_out"], 3);
    assert_eq!(manifest["report"]["rejected"]["no_consensus"], 3);
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("filter-report.json")).unwrap()).unwrap();
    let hits = &report["contamination"][eval.display().to_string()];
    assert_eq!(hits["items"], json!([{"item": "train-7", "rows": 1}]), "{report}");
    assert!(!out.join(".forge-filter").exists(), "working files are removed after a one-process run");
    assert!(stderr.contains("1 item(s) hit by 1 row(s)"), "{stderr}");
    // The same command again is up to date; another config needs --overwrite.
    let (code, _, stderr) = filter();
    assert_eq!(code, 0);
    assert!(stderr.contains("up to date"), "{stderr}");
    let (code, _, stderr) = run(&[&"filter", &"--input", &input, &"-o", &out]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--overwrite"), "{stderr}");
    ok(&[&"filter", &"--input", &input, &"-o", &out, &"--overwrite", &"--keep-incorrect", &"--no-exact-dup"]);
    let reasons: BTreeSet<String> = rejected(&out).into_values().map(|(r, _)| r).collect();
    assert!(!reasons.contains("incorrect") && !reasons.contains("exact_duplicate"), "{reasons:?}");
}

/// A synthetic corpus with planted near-duplicates: seed texts of random words, each with a few copies
/// that change one word or drop one.
fn corpus(n: usize) -> Vec<Value> {
    let mut stream = forge::rng::Rng::for_row(1, "test", 0);
    let mut next = move || stream.next_u64();
    let vocab: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
    let mut rows = Vec::new();
    for p in 0..n {
        let words: Vec<String> = (0..60).map(|_| vocab[(next() % 400) as usize].clone()).collect();
        let copies = next() % 4;
        for c in 0..=copies {
            let mut w = words.clone();
            if c > 0 {
                let at = (next() % 60) as usize;
                if next() % 2 == 0 {
                    w[at] = "changed".into();
                } else {
                    w.remove(at);
                }
            }
            let text = format!("{} The answer is \\boxed{{7}}.", w.join(" "));
            let problem = p % (n / 3).max(1);
            rows.push(trace(
                &format!("p{problem}"),
                c as u32 + 10 * p as u32,
                &format!("Problem {problem}"),
                Some("7"),
                &text,
            ));
        }
    }
    rows
}

/// `--shard` map/reduce over 4 slices (each step run per slice, clusters once) gives the same kept and
/// rejected rows, with the same reasons and details, as one process.
#[test]
fn sharded_filter_equals_one_process() {
    let s = Scratch::new();
    let input = s.write("traces.jsonl", jsonl(&corpus(240)));
    let filter = |out: &Path, extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> =
            ["filter", "--near-dup", "--max-per-problem", "3", "--keep", "shortest"].iter().map(Into::into).collect();
        args.extend(["--input".into(), input.clone().into_os_string(), "-o".into(), out.into()]);
        args.extend(extra.iter().map(Into::into));
        let (code, _, stderr) = run(&args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect::<Vec<_>>());
        assert_eq!(code, 0, "{stderr}");
    };
    let single = s.path("single");
    filter(&single, &[]);
    let sharded = s.path("sharded");
    for step in ["signatures", "buckets"] {
        for i in 0..4 {
            filter(&sharded, &["--step", step, "--shard", &format!("{i}/4")]);
        }
    }
    filter(&sharded, &["--step", "clusters"]);
    for i in 0..4 {
        filter(&sharded, &["--step", "write", "--shard", &format!("{i}/4")]);
    }
    let ids = |dir: &Path| records(dir).into_iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let kept = ids(&single);
    assert_eq!(kept, ids(&sharded));
    let gone = rejected(&single);
    assert_eq!(gone, rejected(&sharded));
    let reasons: BTreeSet<&str> = gone.values().map(|(r, _)| r.as_str()).collect();
    assert!(reasons.contains("near_duplicate") && reasons.contains("max_per_problem"), "{reasons:?}");
    assert_eq!(kept.len() + gone.len(), records(&input).len());
    assert_eq!(
        std::fs::read(single.join("filter-report.json")).unwrap(),
        std::fs::read(sharded.join("filter-report.json")).unwrap()
    );
    // A step out of order says what to run first.
    let early = s.path("early");
    let (code, _, stderr) = run(&[&"filter", &"--input", &input, &"-o", &early, &"--near-dup", &"--step", &"clusters"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--step signatures"), "{stderr}");
}

/// A filter killed while writing resumes: finished shards are kept, nothing is redone or duplicated, and
/// the kept and rejected rows equal those of an uninterrupted run byte for byte.
#[test]
fn killed_filter_resumes_without_redoing_or_duplicating() {
    let s = Scratch::new();
    let input = s.write("traces.jsonl", jsonl(&corpus(12_000)));
    let input = input.to_str().unwrap();
    let args = ["filter", "--input", input, "--near-dup", "--max-per-problem", "2", "--rows-per-shard", "5000"];
    crate::dataset::kill_and_resume(&args, &s.path("killed"), &s.path("clean"), 5000, &[1]);
}

/// `--config FILE.toml` holds the same settings as the flags; flags given on the command line win, and
/// a misspelt key is an error naming the file.
#[test]
fn config_file_settings_and_flag_overrides() {
    let s = Scratch::new();
    let input = s.write("traces.jsonl", jsonl(&corpus(6)));
    let toml = s.write("filter.toml", "near_dup = true\nmax_per_problem = 2\n[minhash]\nbands = 10\nrows = 4\n");
    let out = s.path("out");
    let shown =
        ok(&[&"filter", &"--input", &input, &"-o", &out, &"--config", &toml, &"--rows", &"5", &"--show-config"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["filter"]["near_dup"], true);
    assert_eq!(shown["filter"]["max_per_problem"], 2);
    assert_eq!(shown["filter"]["minhash"]["bands"], 10);
    assert_eq!(shown["filter"]["minhash"]["rows"], 5, "the flag wins over the file");
    assert_eq!(shown["filter"]["input"], input.display().to_string(), "flags fill what the file leaves out");
    let bad = s.write("bad.toml", "near_dupe = true\n");
    let (code, _, stderr) = run(&[&"filter", &"--input", &input, &"-o", &out, &"--config", &bad]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bad.toml") && stderr.contains("near_dupe"), "{stderr}");
    assert!(!out.exists(), "nothing written");
    // the flag requires `--encoder`; a file that leaves it out is stopped as plainly
    let eval = s.write("eval.jsonl", "{\"question\": \"How many apples?\"}\n");
    let semantic = s.write("semantic.toml", format!("semantic_decontaminate = [{:?}]\n", eval.display().to_string()));
    let (code, _, stderr) = run(&[&"filter", &"--input", &input, &"-o", &out, &"--config", &semantic]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("needs an `encoder`"), "{stderr}");
    let dedup = s.write("dedup.toml", "semantic_dedup = 0.9\n");
    let (code, _, stderr) = run(&[&"filter", &"--input", &input, &"-o", &out, &"--config", &dedup]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`semantic_dedup` needs an `encoder`"), "{stderr}");
    let judge = s.write("judge.toml", "judge = \"local:x\"\n");
    let (code, _, stderr) = run(&[&"filter", &"--input", &input, &"-o", &out, &"--config", &judge]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`judge` reviews what `semantic_decontaminate` flags"), "{stderr}");
    let (code, _, stderr) =
        run(&[&"filter", &"--input", &input, &"-o", &out, &"--semantic-dedup", &"1.5", &"--encoder", &"x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cosine similarity in (0, 1]"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}

/// GSM-Plus variants of GSM8K test questions: the 8-gram rule flags every variant that shares an 8-gram
/// with its seed (per edit type), and under 1% of the different-problem negatives.
#[test]
#[ignore = "needs ../shared/data"]
fn gsm_plus_variants_are_flagged_per_edit_type() {
    let text = std::fs::read_to_string(shared_data("contamination/derived/pairs_gsmplus.jsonl")).unwrap();
    // relation -> (pairs that share a word 8-gram, flagged among them, all pairs, flagged with digits
    // normalised, flagged at containment >= 0.5)
    let mut per: BTreeMap<String, (usize, usize, usize, usize, usize)> = BTreeMap::new();
    let mut negatives_at_half = 0;
    let (mut negatives, mut false_hits) = (0, 0);
    for line in text.lines() {
        let pair: Value = serde_json::from_str(line).unwrap();
        if pair["field"] != "question" {
            continue;
        }
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        let flagged = |config: DecontamConfig| {
            let mut index = Index::new(config);
            index.add(a);
            index.check(b).is_some()
        };
        let hit = flagged(DecontamConfig::default());
        if pair["derived_from_same_item"] == true {
            let e = per.entry(pair["relation"].as_str().unwrap().to_string()).or_default();
            if pair["share_word8"] == true {
                e.0 += 1;
                e.1 += usize::from(hit);
            }
            e.2 += 1;
            e.3 += usize::from(flagged(DecontamConfig { normalize_digits: true, ..Default::default() }));
            if pair["share_word8"] == true {
                e.4 += usize::from(flagged(DecontamConfig { min_containment: 0.5, ..Default::default() }));
            }
        } else {
            negatives += 1;
            false_hits += usize::from(hit);
            negatives_at_half += usize::from(flagged(DecontamConfig { min_containment: 0.5, ..Default::default() }));
        }
    }
    for (relation, (sharing, hit, all, digits, half)) in &per {
        eprintln!(
            "{relation:28} share an 8-gram {hit}/{sharing} flagged ({half} at containment >= 0.5); all variants: \
             {digits}/{all} flagged with digits normalised"
        );
        assert!(*hit * 100 >= sharing * 95, "{relation}: {hit}/{sharing}");
    }
    eprintln!("negatives flagged: {false_hits}/{negatives} ({negatives_at_half} at containment >= 0.5)");
    assert_eq!(per.len(), 8);
    assert!(negatives >= 300 && false_hits * 100 < negatives, "{false_hits}/{negatives}");
}

/// MinHash LSH on the GSM-Plus question and solution pairs: with the default 20 bands x 6 rows, pairs
/// with exact 5-gram Jaccard >= 0.8 become candidates (the exact check then decides), and the share of
/// pairs below 0.5 that become candidates (work for the exact check, never duplicates) stays modest.
#[test]
#[ignore = "needs ../shared/data"]
fn lsh_candidates_follow_exact_jaccard_on_real_pairs() {
    let text = std::fs::read_to_string(shared_data("contamination/derived/pairs_gsmplus.jsonl")).unwrap();
    let hasher = MinHasher::new(MinHashConfig::default());
    let (mut high, mut high_found, mut low, mut low_found) = (0, 0, 0, 0);
    for line in text.lines() {
        let pair: Value = serde_json::from_str(line).unwrap();
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        let j = jaccard(a, b, 5);
        let (ka, kb) = (hasher.band_keys(a).unwrap(), hasher.band_keys(b).unwrap());
        let candidate = ka.iter().zip(&kb).any(|(x, y)| x == y);
        if j >= 0.8 {
            high += 1;
            high_found += usize::from(candidate);
        } else if j < 0.5 {
            low += 1;
            low_found += usize::from(candidate);
        }
    }
    eprintln!("J >= 0.8: {high_found}/{high} candidates; J < 0.5: {low_found}/{low} candidates");
    assert!(high >= 100 && high_found * 100 >= high * 99, "{high_found}/{high}");
    assert!(low >= 1000 && low_found * 100 <= low * 10, "{low_found}/{low}");
}

/// The GSM8K paper's model solutions (4 per test question, labelled by hand) as traces: the filter keeps
/// exactly the labelled-correct ones among rows with gold, and the rejected-as-incorrect ones are
/// exactly the labelled-wrong ones; a tenth of the problems lose their gold and get a majority answer.
#[test]
#[ignore = "needs ../shared/data"]
fn gsm8k_model_solutions_are_kept_exactly_when_labelled_correct() {
    let s = Scratch::new();
    let text = std::fs::read_to_string(shared_data("gsm8k/example_model_solutions.jsonl")).unwrap();
    let (mut rows, mut label) = (Vec::new(), BTreeMap::new());
    for (i, line) in text.lines().enumerate() {
        let d: Value = serde_json::from_str(line).unwrap();
        let gold = d["ground_truth"].as_str().unwrap().rsplit("A:").next().unwrap().trim().to_string();
        let gold = (i % 10 != 0).then_some(gold.as_str());
        for (k, model) in
            ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"].iter().enumerate()
        {
            let t = trace(
                &format!("gsm{i}"),
                k as u32,
                d["question"].as_str().unwrap(),
                gold,
                d[model]["solution"].as_str().unwrap(),
            );
            label.insert(format!("gsm{i}#{k}"), d[model]["is_correct"].as_bool().unwrap());
            rows.push(t);
        }
    }
    let input = s.write("traces.jsonl", jsonl(&rows));
    let out = s.path("out");
    ok(&[&"filter", &"--input", &input, &"-o", &out, &"--no-exact-dup"]);
    let kept = records(&out);
    let gone = rejected(&out);
    assert_eq!(kept.len() + gone.len(), 5276);
    let problem = |id: &str| -> usize { id[3..id.find('#').unwrap()].parse().unwrap() };
    let mut majority = 0;
    for row in &kept {
        let id = row["id"].as_str().unwrap();
        if row["gold_origin"] == "reference" {
            assert!(label[id], "{id} kept but labelled wrong");
        } else {
            assert_eq!(row["gold_origin"], "majority");
            majority += 1;
        }
    }
    for (id, (reason, _)) in &gone {
        if reason == "incorrect" && problem(id) % 10 != 0 {
            assert!(!label[id], "{id} rejected but labelled correct");
        }
    }
    let correct_with_gold = label.iter().filter(|(id, ok)| **ok && problem(id) % 10 != 0).count();
    let kept_with_gold = kept.iter().filter(|r| r["gold_origin"] == "reference").count();
    assert_eq!(kept_with_gold, correct_with_gold, "every labelled-correct row with gold is kept");
    eprintln!("kept {} of 5276 ({kept_with_gold} with gold, {majority} by majority vote)", kept.len());
}

/// MATH-500 is a subset of the MATH test split: decontaminating the imported MATH test problems against
/// it hits every one of the 500 items. The any-shared-8-gram rule (s1, open-r1) also flags about 12% of
/// MATH train, mostly through one shared boilerplate 8-gram ("... is the expression ... undefined?",
/// "... express your answer as a common fraction"): recorded here so a change in either direction shows.
#[test]
#[ignore = "needs ../shared/data"]
fn math500_items_are_all_found_in_math_test() {
    let s = Scratch::new();
    let math500 = shared_data("math500/test.jsonl");
    for (split, expect_all) in [("test", true), ("train", false)] {
        let problems = s.path(split);
        ok(&[&"import", &"--preset", &"math", &shared_data(&format!("math/{split}.jsonl")), &"-o", &problems, &"-q"]);
        let out = s.path(&format!("{split}-clean"));
        ok(&[&"filter", &"--input", &problems, &"-o", &out, &"--decontaminate", &math500, &"-q"]);
        let report: Value = serde_json::from_slice(&std::fs::read(out.join("filter-report.json")).unwrap()).unwrap();
        let hits = &report["contamination"][math500.display().to_string()];
        let rows = report["rejected"]["contaminated"].as_u64().unwrap_or(0);
        eprintln!("MATH {split}: {rows} rows contaminated, {} MATH-500 items hit", hits["items_hit"]);
        if expect_all {
            assert_eq!(hits["items_hit"], 500, "{report}");
            assert!(rows >= 500);
        } else {
            assert!((800..1000).contains(&rows), "{rows}");
        }
    }
}

/// The near-duplicate benchmark set: real solutions (GSM8K test reference solutions, the GSM8K paper's
/// model solutions, MATH test solutions) and edited copies made here with a fixed seed, so the set is the
/// same on every machine (this generator is the committed form of the set: the texts themselves stay in
/// `../shared/data`). A family is one seed solution, its copies and, for GSM8K, four independent
/// solutions of the same problem (negatives).
struct Family {
    docs: Vec<(String, &'static str)>,
}

fn steps_of(text: &str, math: bool) -> Vec<String> {
    if math {
        text.split_inclusive(". ").map(str::to_string).collect()
    } else {
        text.lines().map(|l| format!("{l}\n")).collect()
    }
}

fn edited_family(seed: &str, math: bool, negatives: &[&str], rng: &mut impl FnMut() -> u64) -> Family {
    let mut docs = vec![(seed.to_string(), "seed")];
    // format: spacing, case, punctuation, calculator annotations, a <think> wrapper
    let mut format = seed.replace('\n', "  \n ").to_uppercase().replace([',', '.', '$'], " ");
    while let (Some(a), Some(b)) = (format.find("<<"), format.find(">>")) {
        if b < a {
            break;
        }
        format.replace_range(a..b + 2, "");
    }
    docs.push((format!("<think>\n{format}\n</think>"), "format"));
    let steps = steps_of(seed, math);
    let body = steps.len().saturating_sub(1); // the last step states the answer
    if body >= 2 {
        let at = (rng() as usize) % (body - 1);
        let mut swapped = steps.clone();
        swapped.swap(at, at + 1);
        docs.push((swapped.concat(), "swap_steps"));
        let mut dropped = steps.clone();
        dropped.remove((rng() as usize) % body);
        docs.push((dropped.concat(), "drop_step"));
    }
    let numbers: Vec<(usize, usize)> = {
        let b = seed.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push((s, i));
            } else {
                i += 1;
            }
        }
        out
    };
    if !numbers.is_empty() {
        let renumber = |which: &dyn Fn(usize) -> bool, rng: &mut dyn FnMut() -> u64| {
            let mut out = String::new();
            let mut last = 0;
            for (k, &(s, e)) in numbers.iter().enumerate() {
                out.push_str(&seed[last..s]);
                let n: u64 = seed[s..e].parse().unwrap_or(0);
                out.push_str(&if which(k) { (n + 1 + rng() % 9).to_string() } else { seed[s..e].to_string() });
                last = e;
            }
            out.push_str(&seed[last..]);
            out
        };
        let one = (rng() as usize) % numbers.len();
        docs.push((renumber(&|k| k == one, rng), "renumber_one"));
        docs.push((renumber(&|_| true, rng), "renumber_all"));
    }
    docs.extend(negatives.iter().map(|n| (n.to_string(), "independent")));
    Family { docs }
}

/// Precision and recall of `forge filter --near-dup` (exact dedup included) on the benchmark set against
/// the exact 5-gram Jaccard ground truth at 0.8. Recall: of the pairs in a family at J >= 0.8, the share
/// that are not both kept. Precision: of the rows removed as duplicates, the share whose kept row has
/// J >= 0.8 with them. Printed per edit type, for forge's defaults and for datatrove's settings.
#[test]
#[ignore = "needs ../shared/data"]
fn near_dup_benchmark_precision_and_recall() {
    let s = Scratch::new();
    let mut stream = forge::rng::Rng::for_row(2, "test", 0);
    let mut rng = move || stream.next_u64();
    let mut families = Vec::new();
    let gsm = std::fs::read_to_string(shared_data("gsm8k/example_model_solutions.jsonl")).unwrap();
    for line in gsm.lines() {
        let d: Value = serde_json::from_str(line).unwrap();
        let models = ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"];
        let negatives: Vec<&str> = models.iter().map(|m| d[*m]["solution"].as_str().unwrap()).collect();
        let negatives: Vec<String> = negatives.iter().map(std::string::ToString::to_string).collect();
        let refs: Vec<&str> = negatives.iter().map(String::as_str).collect();
        families.push(edited_family(d["ground_truth"].as_str().unwrap(), false, &refs, &mut rng));
    }
    let math = std::fs::read_to_string(shared_data("math/test.jsonl")).unwrap();
    for line in math.lines().take(1500) {
        let d: Value = serde_json::from_str(line).unwrap();
        families.push(edited_family(d["solution"].as_str().unwrap(), true, &[], &mut rng));
    }
    let mut rows = Vec::new();
    let mut kind_of = BTreeMap::new();
    let mut text_of = BTreeMap::new();
    for (f, family) in families.iter().enumerate() {
        for (k, (text, kind)) in family.docs.iter().enumerate() {
            let id = format!("f{f}-{k}");
            rows.push(
                json!({"id": id, "source": "bench", "domain": "math", "prompt": text, "gold": null, "metadata": "{}"}),
            );
            kind_of.insert(id.clone(), *kind);
            text_of.insert(id, text.clone());
        }
    }
    let input = s.write("docs.jsonl", jsonl(&rows));
    // Ground truth: every pair inside a family.
    let mut truth = Vec::new(); // (a, b, jaccard, kind of b)
    for (f, family) in families.iter().enumerate() {
        for i in 0..family.docs.len() {
            for j in i + 1..family.docs.len() {
                let jac = jaccard(&family.docs[i].0, &family.docs[j].0, 5);
                truth.push((format!("f{f}-{i}"), format!("f{f}-{j}"), jac, family.docs[j].1));
            }
        }
    }
    let above = truth.iter().filter(|t| t.2 >= 0.8).count();
    let config = MinHashConfig::default();
    let expected_misses: f64 =
        truth.iter().filter(|t| t.2 >= 0.8).map(|t| 1.0 - config.candidate_probability(t.2)).sum();
    eprintln!("LSH misses expected at 20 x 6 for the pairs at J >= 0.8: {expected_misses:.1}");
    eprintln!("{} documents in {} families; {} pairs, {above} at J >= 0.8", rows.len(), families.len(), truth.len());
    for (label, extra) in [
        ("forge defaults (20 x 6, exact check 0.8)", vec![]),
        ("datatrove settings (14 x 8, no exact check)", vec!["--bands", "14", "--rows", "8", "--jaccard", "0"]),
    ] {
        let out = s.path(&format!("out-{}", extra.len()));
        let mut args: Vec<std::ffi::OsString> = vec![
            "filter".into(),
            "--input".into(),
            input.clone().into(),
            "-o".into(),
            out.clone().into(),
            "--near-dup".into(),
            "-q".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let (code, _, stderr) = run(&args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect::<Vec<_>>());
        assert_eq!(code, 0, "{stderr}");
        let gone = rejected(&out);
        // per kind: (pairs at J >= 0.8, resolved, removed, removed correctly)
        let mut per: BTreeMap<&str, (usize, usize, usize, usize)> = BTreeMap::new();
        for (a, b, jac, kind) in &truth {
            if *jac >= 0.8 {
                let e = per.entry(kind).or_default();
                e.0 += 1;
                e.1 += usize::from(gone.contains_key(a) || gone.contains_key(b));
                if !(gone.contains_key(a) || gone.contains_key(b)) && std::env::var("SHOW").is_ok() {
                    eprintln!("MISSED {a} {b} {jac:.3} {kind}: {:?} ||| {:?}", &text_of[a], &text_of[b]);
                }
            }
        }
        for (id, (_, detail)) in &gone {
            let kept = detail["kept"].as_str().unwrap();
            let e = per.entry(kind_of[id]).or_default();
            e.2 += 1;
            e.3 += usize::from(jaccard(&text_of[id], &text_of[kept], 5) >= 0.8);
        }
        let (mut pairs, mut resolved, mut removed, mut right) = (0, 0, 0, 0);
        eprintln!(
            "{label}:\n  {:14} {:>14} {:>8} {:>9} {:>10}",
            "edit", "pairs J>=0.8", "recall", "removed", "precision"
        );
        for (kind, (p, r, m, c)) in &per {
            let ratio =
                |a: usize, b: usize| if b == 0 { "-".to_string() } else { format!("{:.4}", a as f64 / b as f64) };
            eprintln!("  {kind:14} {p:>14} {:>8} {m:>9} {:>10}", ratio(*r, *p), ratio(*c, *m));
            (pairs, resolved, removed, right) = (pairs + p, resolved + r, removed + m, right + c);
        }
        let (recall, precision) = (resolved as f64 / pairs as f64, right as f64 / removed as f64);
        eprintln!("  {:14} {pairs:>14} {recall:>8.4} {removed:>9} {precision:>10.4}", "all");
        if extra.is_empty() {
            assert!(recall >= 0.95 && precision >= 0.95, "recall {recall}, precision {precision}");
        }
    }
}

/// The reasons the first test does not reach: an HTTP teacher's error row, the verifier's language, format
/// and answer checks, the length limits, and the pass-rate window (a problem answered right by 1 of 3
/// samples is outside 0.5:1).
#[test]
fn language_format_answer_length_and_pass_rate_rejections() {
    let s = Scratch::new();
    let q = |n: u32| format!("Tom has 3 boxes with 4 apples in each of them (case {n}). How many apples are there?");
    let rows = vec![
        trace("ok", 0, &q(0), Some("12"), "Three boxes of four apples make 3 * 4 = 12. The answer is \\boxed{12}."),
        trace(
            "lang",
            0,
            &q(1),
            Some("12"),
            "汤姆有三个盒子，每个盒子里有四个苹果，所以一共有十二个苹果。答案是 \\boxed{12}。",
        ),
        trace("fmt", 0, &q(2), Some("12"), "<think>3 * 4</think> wait <think>= 12</think> The answer is \\boxed{12}."),
        trace("none", 0, &q(3), Some("12"), "I cannot tell how many apples Tom has from what is written here."),
        trace("short", 0, &q(4), Some("12"), "\\boxed{12}"),
        {
            let mut row = trace("failed", 0, &q(7), Some("12"), "");
            row["finish_reason"] = "error".into();
            row["error"] = "HTTP 503 after 8 retries".into();
            row
        },
        trace("long", 0, &q(5), Some("18"), &long_solution("18", "own")),
        trace("hard", 0, &q(6), Some("12"), "Three boxes of four apples make 3 * 4 = 12. The answer is \\boxed{12}."),
        trace("hard", 1, &q(6), Some("12"), "Three boxes and four apples make 3 + 4 = 7. The answer is \\boxed{7}."),
        trace("hard", 2, &q(6), Some("12"), "Three boxes and four apples make 4 - 3 = 1. The answer is \\boxed{1}."),
    ];
    let input = s.write("traces.jsonl", jsonl(&rows));
    let out = s.path("curated");
    let args = [&"--min-chars" as &dyn AsRef<std::ffi::OsStr>, &"20", &"--max-chars", &"300", &"--pass-rate", &"0.5:1"];
    ok(&[&[&"filter" as &dyn AsRef<std::ffi::OsStr>, &"--input", &input, &"-o", &out, &"-q"][..], &args[..]].concat());
    let expected = by_id(&[
        ("lang#0", "language"),
        ("fmt#0", "bad_format"),
        ("none#0", "no_answer"),
        ("failed#0", "teacher_error"),
        ("short#0", "too_short"),
        ("long#0", "too_long"),
        ("hard#0", "pass_rate"),
        ("hard#1", "pass_rate"),
        ("hard#2", "pass_rate"),
    ]);
    assert_eq!(reasons(&out), expected);
    let kept: Vec<String> = records(&out).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(kept, ["ok#0"]);
}
