//! Text as the curation filters see it: Unicode NFKC, `\w+` words, lowercased (optionally with every digit
//! read as `0`), and hashed word n-grams (xxh3, stable across versions).

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// The words of `text`, NFKC-folded and lowercased.
pub fn words(text: &str, normalize_digits: bool) -> Vec<String> {
    // NFKC changes nothing in ASCII text, which most of it is: skip the pass there.
    let text: Cow<str> = if text.is_ascii() { Cow::Borrowed(text) } else { Cow::Owned(text.nfkc().collect()) };
    text.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_lowercase();
            if normalize_digits { w.chars().map(|c| if c.is_ascii_digit() { '0' } else { c }).collect() } else { w }
        })
        .collect()
}

/// Distinct hashes of the `n`-word windows, sorted (the whole text as one gram when it has fewer words).
pub fn ngram_hashes(words: &[String], n: usize) -> Vec<u64> {
    let hash = |ws: &[String]| {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for w in ws {
            h.update(w.as_bytes());
            h.update(b" ");
        }
        h.digest()
    };
    let n = n.max(1);
    let mut out: Vec<u64> = if words.len() < n {
        if words.is_empty() { vec![] } else { vec![hash(words)] }
    } else {
        words.windows(n).map(hash).collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}
