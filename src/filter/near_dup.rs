//! Near-duplicates with MinHash and LSH: the signatures and band keys of `forge filter --near-dup`.
//!
//! A document's shingles are its word n-grams (`\w+` runs, NFKC, lowercased; n = 5 as datatrove). Each is
//! hashed with xxh3 (stable across versions, so signatures written to disk stay valid) and mapped through
//! `bands × rows` permutations `(a·h + b) mod (2^61 − 1)`, as datatrove does; the signature keeps each
//! permutation's minimum. Documents whose signatures agree on every row of some band are candidates.
//!
//! Defaults differ from datatrove's 14 bands × 8 rows on purpose: forge checks every candidate pair's
//! exact Jaccard similarity (`--jaccard`, 0.8) before calling it a duplicate, so the bands only have to
//! find pairs, and 20 × 6 (120 hashes, about the same cost) finds a pair at similarity 0.8 with
//! probability 0.998 where 14 × 8 finds it with 0.924. The false candidates this lets through (a pair at
//! 0.5 becomes one with probability 0.27) are removed by the exact check. `--bands 14 --rows 8
//! --jaccard 0` is datatrove's behaviour.

use serde::{Deserialize, Serialize};

const MERSENNE: u64 = (1 << 61) - 1;

/// MinHash LSH settings of near-duplicate detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct MinHashConfig {
    /// Words per MinHash shingle
    #[arg(long = "shingle", id = "minhash.ngram", default_value_t = DEFAULT.ngram, value_name = "WORDS")]
    pub ngram: usize,
    /// LSH bands: a pair is a candidate when all rows of one band agree
    #[arg(long, default_value_t = DEFAULT.bands)]
    pub bands: usize,
    /// Rows (hashes) per band; bands × rows permutations in all
    #[arg(long, default_value_t = DEFAULT.rows)]
    pub rows: usize,
    /// Seed of the permutations: signatures compare only under the same seed
    #[arg(long = "minhash-seed", id = "minhash.seed", default_value_t = DEFAULT.seed)]
    pub seed: u64,
    /// Candidate pairs are duplicates only at this exact Jaccard similarity of their shingles or above
    /// (0: every LSH candidate is one, as datatrove)
    #[arg(long, default_value_t = DEFAULT.jaccard, value_name = "SIMILARITY")]
    pub jaccard: f64,
}

/// The defaults, one place for flags, TOML and the library.
const DEFAULT: MinHashConfig = MinHashConfig { ngram: 5, bands: 20, rows: 6, seed: 1, jaccard: 0.8 };

impl Default for MinHashConfig {
    fn default() -> Self {
        DEFAULT
    }
}

impl MinHashConfig {
    /// The probability that a pair of Jaccard similarity `j` becomes a candidate: 1 − (1 − j^r)^b.
    pub fn candidate_probability(&self, j: f64) -> f64 {
        1.0 - (1.0 - j.powi(self.rows as i32)).powi(self.bands as i32)
    }
}

/// Signatures under one configuration.
pub struct MinHasher {
    config: MinHashConfig,
    permutations: Vec<(u64, u64)>,
}

impl MinHasher {
    /// A hasher with `config`'s shingles, bands and rows.
    pub fn new(config: MinHashConfig) -> Self {
        let mut state = config.seed;
        let mut next = || {
            // SplitMix64: the permutations depend only on the seed.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % MERSENNE
        };
        let permutations = (0..config.bands * config.rows).map(|_| (next().max(1), next())).collect();
        MinHasher { config, permutations }
    }

    /// One bucket key per band for `text`, or `None` when it has no words (no one's duplicate).
    pub fn band_keys(&self, text: &str) -> Option<Vec<u64>> {
        let shingles = shingles(text, self.config.ngram);
        (!shingles.is_empty()).then(|| self.bands(&self.sign(&shingles)))
    }

    /// The MinHash signature of `text` (`bands × rows` values; all `u64::MAX` for an empty text).
    pub fn signature(&self, text: &str) -> Vec<u64> {
        self.sign(&shingles(text, self.config.ngram))
    }

    fn sign(&self, shingles: &[u64]) -> Vec<u64> {
        let reduced: Vec<u64> = shingles.iter().map(|h| h % MERSENNE).collect();
        // One permutation at a time over all shingles: the running minimum stays in a register.
        self.permutations
            .iter()
            .map(|&(a, b)| {
                reduced
                    .iter()
                    .map(|&h| mod_mersenne(u128::from(a) * u128::from(h) + u128::from(b)))
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }

    /// One bucket key per band.
    pub fn bands(&self, signature: &[u64]) -> Vec<u64> {
        signature
            .chunks(self.config.rows)
            .enumerate()
            .map(|(band, rows)| {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(&(band as u64).to_le_bytes());
                for r in rows {
                    h.update(&r.to_le_bytes());
                }
                h.digest()
            })
            .collect()
    }
}

/// `x mod (2^61 − 1)` for `x < 2^122` without a 128-bit division: 2^61 ≡ 1, so the high bits fold onto
/// the low ones (clustering ran 1.4 times faster than with `%`).
fn mod_mersenne(x: u128) -> u64 {
    let folded = (x as u64 & MERSENNE) + (x >> 61) as u64;
    let folded = (folded & MERSENNE) + (folded >> 61);
    if folded >= MERSENNE { folded - MERSENNE } else { folded }
}

/// Distinct hashes of the word n-grams (the whole text when it is shorter than n words).
pub fn shingles(text: &str, n: usize) -> Vec<u64> {
    super::text::ngram_hashes(text, n, false)
}

/// Exact Jaccard similarity of two texts' shingle sets.
pub fn jaccard(a: &str, b: &str, n: usize) -> f64 {
    jaccard_sorted(&shingles(a, n), &shingles(b, n))
}

/// Jaccard similarity of two sorted, distinct hash sets (1 for two empty ones).
pub fn jaccard_sorted(x: &[u64], y: &[u64]) -> f64 {
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut both) = (0, 0, 0);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / (x.len() + y.len() - both) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_agreement_estimates_jaccard() {
        let hasher = MinHasher::new(MinHashConfig::default());
        let a = "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May. So the answer is 72 and we are done here.";
        let b = "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May. So the answer is 72 and we are finished here.";
        let (sa, sb) = (hasher.signature(a), hasher.signature(b));
        let agree = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / sa.len() as f64;
        let exact = jaccard(a, b, 5);
        assert!((agree - exact).abs() < 0.15, "estimate {agree} vs exact {exact}");
        let datatrove = MinHashConfig { bands: 14, rows: 8, ..Default::default() };
        assert!((datatrove.candidate_probability(0.8) - 0.924).abs() < 0.001);
        assert!(MinHashConfig::default().candidate_probability(0.8) > 0.997);
    }

    #[test]
    fn mersenne_reduction_matches_the_remainder() {
        let mut x: u128 = 0x1234_5678_9abc_def0;
        for _ in 0..10_000 {
            x = (x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)) % (1u128 << 122);
            assert_eq!(u128::from(mod_mersenne(x)), x % u128::from(MERSENNE));
        }
        assert_eq!(mod_mersenne(u128::from(MERSENNE)), 0);
    }
}
