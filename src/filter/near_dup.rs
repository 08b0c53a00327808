//! Near-duplicates with MinHash and LSH (the core of `--near-dup`; the sharded map/reduce stage comes
//! with `forge filter`).
//!
//! A document's shingles are its word n-grams (`\w+` runs, lowercased; default n = 5 as datatrove). Each is
//! hashed with xxh3 (stable across versions, so signatures written to disk stay valid) and mapped through
//! `bands × rows` permutations `(a·h + b) mod (2^61 − 1)`, as datatrove does; the signature keeps each
//! permutation's minimum. Documents whose signatures agree on every row of some band are candidates, and
//! candidates are joined with union-find (the smallest document index is the root, so clusters do not
//! depend on the order pairs are found in).
//!
//! Defaults are datatrove's: 5-grams, 14 bands × 8 rows (112 hashes), an S-curve with its threshold near a
//! Jaccard similarity of 0.72: pairs at 0.9 are found with probability 0.9996, pairs at 0.5 with 0.05.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

const MERSENNE: u64 = (1 << 61) - 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinHashConfig {
    /// Words per shingle.
    pub ngram: usize,
    pub bands: usize,
    pub rows: usize,
    /// Seed of the permutations: signatures compare only under the same seed.
    pub seed: u64,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        MinHashConfig { ngram: 5, bands: 14, rows: 8, seed: 1 }
    }
}

impl MinHashConfig {
    /// The similarity at which a pair becomes a candidate with probability about 1/2: (1/b)^(1/r).
    pub fn threshold(&self) -> f64 {
        (1.0 / self.bands as f64).powf(1.0 / self.rows as f64)
    }
}

/// Signatures under one configuration.
pub struct MinHasher {
    config: MinHashConfig,
    permutations: Vec<(u64, u64)>,
}

impl MinHasher {
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

    /// The MinHash signature of `text` (`bands × rows` values; all `u64::MAX` for an empty text).
    pub fn signature(&self, text: &str) -> Vec<u64> {
        self.sign(&shingles(text, self.config.ngram))
    }

    fn sign(&self, shingles: &[u64]) -> Vec<u64> {
        let mut sig = vec![u64::MAX; self.permutations.len()];
        for &h in shingles {
            let h = h % MERSENNE;
            for (slot, &(a, b)) in sig.iter_mut().zip(&self.permutations) {
                let v = mod_mersenne(u128::from(a) * u128::from(h) + u128::from(b));
                if v < *slot {
                    *slot = v;
                }
            }
        }
        sig
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

    /// The cluster of every document: the smallest index of the documents it is (transitively) a
    /// candidate pair with, itself when it has none.
    pub fn clusters<'a>(&self, docs: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
        let mut parent: Vec<usize> = Vec::new();
        let mut buckets: HashMap<u64, usize> = HashMap::new();
        for (i, doc) in docs.into_iter().enumerate() {
            parent.push(i);
            let doc_shingles = shingles(doc, self.config.ngram);
            if doc_shingles.is_empty() {
                continue; // empty documents are no one's duplicate
            }
            for key in self.bands(&self.sign(&doc_shingles)) {
                match buckets.get(&key) {
                    Some(&j) => union(&mut parent, i, j),
                    None => {
                        buckets.insert(key, i);
                    }
                }
            }
        }
        (0..parent.len()).map(|i| find(&mut parent, i)).collect()
    }
}

/// `x mod (2^61 − 1)` for `x < 2^122` without a 128-bit division: 2^61 ≡ 1, so the high bits fold onto
/// the low ones (clustering ran 1.4 times faster than with `%`).
fn mod_mersenne(x: u128) -> u64 {
    let folded = (x as u64 & MERSENNE) + (x >> 61) as u64;
    let folded = (folded & MERSENNE) + (folded >> 61);
    if folded >= MERSENNE { folded - MERSENNE } else { folded }
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi] = lo;
    }
}

/// Distinct hashes of the word n-grams (the whole text when it is shorter than n words).
pub fn shingles(text: &str, n: usize) -> Vec<u64> {
    super::text::ngram_hashes(&super::text::words(text, false), n)
}

/// Exact Jaccard similarity of two texts' shingle sets.
pub fn jaccard(a: &str, b: &str, n: usize) -> f64 {
    let (x, y) = (shingles(a, n), shingles(b, n));
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
        assert!((MinHashConfig::default().threshold() - 0.719).abs() < 0.01);
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

    #[test]
    fn clusters_join_copies_and_keep_the_smallest_index() {
        let hasher = MinHasher::new(MinHashConfig::default());
        let base = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg.";
        let copy = format!("{base}  ");
        let other = "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take to make the robe?";
        let clusters = hasher.clusters([other, base, copy.as_str(), "", ""]);
        assert_eq!(clusters, vec![0, 1, 1, 3, 4]);
    }
}
