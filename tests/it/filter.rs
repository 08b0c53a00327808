use std::collections::BTreeMap;

use forge::filter::decontam::{DecontamConfig, Index};
use forge::filter::near_dup::{MinHashConfig, MinHasher, jaccard};
use serde_json::Value;

use crate::util::shared_data;

/// GSM-Plus variants of GSM8K test questions: the 8-gram rule flags every variant that shares an 8-gram
/// with its seed (per edit type), and under 1% of the different-problem negatives.
#[test]
#[ignore = "needs ../shared/data"]
fn gsm_plus_variants_are_flagged_per_edit_type() {
    let text = std::fs::read_to_string(shared_data("contamination/derived/pairs_gsmplus.jsonl")).unwrap();
    // relation -> (pairs that share a word 8-gram, flagged among them, all pairs, flagged with digits normalised)
    let mut per: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new();
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
        } else {
            negatives += 1;
            false_hits += usize::from(hit);
        }
    }
    for (relation, (sharing, hit, all, digits)) in &per {
        eprintln!(
            "{relation:28} share an 8-gram {hit}/{sharing} flagged; all variants: {}/{all} flagged with digits normalised",
            digits
        );
        assert!(*hit * 100 >= sharing * 95, "{relation}: {hit}/{sharing}");
    }
    eprintln!("negatives flagged: {false_hits}/{negatives}");
    assert_eq!(per.len(), 8);
    assert!(negatives >= 300 && false_hits * 100 < negatives, "{false_hits}/{negatives}");
}

/// MinHash LSH on the GSM-Plus question and solution pairs: pairs with exact 5-gram Jaccard >= 0.9 land in
/// one cluster, pairs below 0.5 almost never do (the S-curve of 14 bands x 8 rows).
#[test]
#[ignore = "needs ../shared/data"]
fn near_dup_clusters_follow_exact_jaccard_on_real_pairs() {
    let text = std::fs::read_to_string(shared_data("contamination/derived/pairs_gsmplus.jsonl")).unwrap();
    let hasher = MinHasher::new(MinHashConfig::default());
    let (mut high, mut high_found, mut low, mut low_found) = (0, 0, 0, 0);
    for line in text.lines() {
        let pair: Value = serde_json::from_str(line).unwrap();
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        let j = jaccard(a, b, 5);
        let together = hasher.clusters([a, b]) == [0, 0];
        if j >= 0.9 {
            high += 1;
            high_found += usize::from(together);
        } else if j < 0.5 {
            low += 1;
            low_found += usize::from(together);
        }
    }
    eprintln!("J >= 0.9: {high_found}/{high} clustered; J < 0.5: {low_found}/{low} clustered");
    assert!(high >= 100 && high_found * 100 >= high * 98, "{high_found}/{high}");
    assert!(low >= 1000 && low_found * 100 <= low * 2, "{low_found}/{low}");
}
