//! Decontamination: is a training text a (possibly edited) copy of an evaluation item?
//!
//! Evaluation texts go into an [`Index`] of word n-gram hashes; a candidate is contaminated when it
//! shares at least one n-gram with an indexed item (the s1 / open-r1 rule, default n = 8). Each hit also
//! carries a containment score, the share of the item's n-grams the candidate contains (the Tulu-style
//! coverage), so a stricter threshold is a setting away. Words are `\w+` runs, lowercased; with
//! `normalize_digits` every digit reads as `0`, which catches numerical substitutions ("4 inch heels" for
//! "5 inch heels").
//!
//! Limits: paraphrases share few 8-grams (about 6% of GPT-4 rephrasings of GSM8K questions are caught,
//! `../shared/notes/dedup.md`); catching those needs embeddings.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// n for word n-grams, as s1 and open-r1.
pub const DEFAULT_NGRAM: usize = 8;

/// Word n-gram decontamination's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct DecontamConfig {
    /// Words per decontamination n-gram (8 as s1 and open-r1)
    #[arg(long = "decontam-ngram", id = "decontam.ngram", default_value_t = DEFAULT_NGRAM, value_name = "WORDS")]
    pub ngram: usize,
    /// Read every digit as `0` before matching, to catch copies with the numbers changed
    #[arg(long = "decontam-digits", id = "decontam.normalize_digits")]
    pub normalize_digits: bool,
    /// Read each punctuation or symbol character as a word of its own, so equations keep their operators
    /// (`6 - (1 + 1)` is then not `6 * (1 - 1)`)
    #[arg(long = "decontam-symbols", id = "decontam.symbols")]
    pub symbols: bool,
    /// Flag a row only when it holds at least this share of an item's n-grams (0: any shared n-gram)
    #[arg(long, default_value_t = DecontamConfig::default().min_containment, value_name = "SHARE")]
    pub min_containment: f64,
}

impl Default for DecontamConfig {
    fn default() -> Self {
        DecontamConfig { ngram: DEFAULT_NGRAM, normalize_digits: false, symbols: false, min_containment: 0.0 }
    }
}

/// An evaluation item a candidate overlaps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Index of the item, in the order items were added.
    pub item: usize,
    /// Distinct n-grams the candidate shares with the item.
    pub shared: usize,
    /// `shared` over the item's distinct n-grams.
    pub containment: f64,
}

/// Word n-gram hashes of evaluation items.
#[derive(Debug, Default)]
pub struct Index {
    config: DecontamConfig,
    grams: HashMap<u64, Vec<u32>>,
    sizes: Vec<usize>,
}

impl Index {
    /// An empty index of evaluation n-grams.
    pub fn new(config: DecontamConfig) -> Self {
        Index { config, ..Default::default() }
    }

    /// Add an evaluation item; returns its index.
    pub fn add(&mut self, text: &str) -> usize {
        let item = self.sizes.len();
        let grams = ngrams(text, &self.config);
        self.sizes.push(grams.len());
        for g in grams {
            self.grams.entry(g).or_default().push(item as u32);
        }
        item
    }

    /// The item `text` overlaps most (by shared n-grams), if it shares any.
    pub fn check(&self, text: &str) -> Option<Hit> {
        if self.sizes.is_empty() {
            return None;
        }
        let mut shared: HashMap<u32, usize> = HashMap::new();
        for g in ngrams(text, &self.config) {
            for &item in self.grams.get(&g).into_iter().flatten() {
                *shared.entry(item).or_default() += 1;
            }
        }
        let (item, count) = shared.into_iter().max_by_key(|&(item, n)| (n, std::cmp::Reverse(item)))?;
        let item = item as usize;
        let containment = count as f64 / self.sizes[item].max(1) as f64;
        if containment < self.config.min_containment {
            return None;
        }
        Some(Hit { item, shared: count, containment })
    }
}

fn ngrams(text: &str, config: &DecontamConfig) -> Vec<u64> {
    if config.symbols {
        return super::text::ngram_hashes(&spell_symbols(text), config.ngram, config.normalize_digits);
    }
    super::text::ngram_hashes(text, config.ngram, config.normalize_digits)
}

/// `text` with each character that is neither alphanumeric nor space spelled as a word (`+` as ` _2b_ `).
fn spell_symbols(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_alphanumeric() || c.is_whitespace() || c == '_' {
            out.push(c);
        } else {
            out.push_str(&format!(" _{:x}_ ", u32::from(c)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "Three of the women at the cocktail party are wearing 4 inch heels and three are wearing 2 inch heels. What is the average height of heels at this party?";

    #[test]
    fn edited_copies_hit_and_other_problems_do_not() {
        let mut index = Index::new(DecontamConfig::default());
        index.add("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning.");
        let seed = index.add(SEED);
        let distracted = "Three of the women at the cocktail party are wearing 4 inch heels and three are wearing 2 inch heels. The party started at 8 pm. What is the average height of heels at this party?";
        let hit = index.check(distracted).expect("a distraction insertion keeps 8-grams");
        assert_eq!(hit.item, seed);
        assert!(hit.containment > 0.5, "{hit:?}");
        let renumbered = "Four of the women at the cocktail party are wearing 5 inch heels and two are wearing 3 inch heels. What is the average height of heels at this party?";
        let strict = index.check(renumbered).map(|h| h.shared).unwrap_or(0);
        let mut digits = Index::new(DecontamConfig { normalize_digits: true, ..Default::default() });
        digits.add(SEED);
        let loose = digits.check(renumbered).expect("digits normalised").shared;
        assert!(loose > strict, "{loose} vs {strict}");
        assert_eq!(
            index.check("A train leaves the station at noon and travels 60 miles per hour for three hours."),
            None
        );
    }

    #[test]
    fn short_texts_match_whole() {
        let mut index = Index::new(DecontamConfig::default());
        index.add("What is 2 + 2?");
        assert!(index.check("what is 2 + 2").is_some());
        assert!(index.check("what is 2 + 3").is_none());
        assert!(index.check("Ｗｈａｔ ｉｓ ２ + ２？").is_some(), "full-width forms fold under NFKC");
    }

    /// Words alone do not tell equations apart; with `symbols` the operators count, and a problem is
    /// matched only by itself (short texts are one gram).
    #[test]
    fn symbols_keep_operators() {
        let config = DecontamConfig { symbols: true, ngram: 32, ..Default::default() };
        for (symbols, hits) in [(false, [true, true, true]), (true, [true, false, false])] {
            let mut index = Index::new(DecontamConfig { symbols, ..config.clone() });
            index.add("Compute 6 - (1 + 1).");
            let found = ["compute 6 - (1 + 1).", "Compute 6 * (1 - 1).", "Compute 6 - 1 + 1."]
                .map(|t| index.check(t).is_some());
            assert_eq!(found, hits, "symbols: {symbols}");
        }
    }
}
