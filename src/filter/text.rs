//! Text as the curation filters see it: Unicode NFKC, `\w+` words, lowercased (optionally with every digit
//! read as `0`), and hashed word n-grams (xxh3, stable across versions and machines, so hashes written to
//! disk stay valid).

use unicode_normalization::UnicodeNormalization;
use xxhash_rust::xxh3::xxh3_64;

/// The hash of every word of `text` in order: NFKC-folded, lowercased, `\w+` runs.
pub fn word_hashes(text: &str, normalize_digits: bool) -> Vec<u64> {
    let mut out = Vec::with_capacity(text.len() / 5);
    if text.is_ascii() {
        // The common case, byte by byte: NFKC changes nothing in ASCII.
        let bytes = text.as_bytes();
        let mut buf = Vec::with_capacity(32);
        let mut i = 0;
        while i < bytes.len() {
            if !is_word_byte(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_word_byte(bytes[i]) {
                i += 1;
            }
            let word = &bytes[start..i];
            let plain = !word.iter().any(|b| b.is_ascii_uppercase() || (normalize_digits && b.is_ascii_digit()));
            out.push(if plain {
                xxh3_64(word)
            } else {
                buf.clear();
                buf.extend(
                    word.iter()
                        .map(|&b| if normalize_digits && b.is_ascii_digit() { b'0' } else { b.to_ascii_lowercase() }),
                );
                xxh3_64(&buf)
            });
        }
        return out;
    }
    let text: String = text.nfkc().collect();
    let mut buf = String::new();
    for word in text.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty()) {
        buf.clear();
        for c in word.chars().flat_map(char::to_lowercase) {
            buf.push(if normalize_digits && c.is_ascii_digit() { '0' } else { c });
        }
        out.push(xxh3_64(buf.as_bytes()));
    }
    out
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Distinct hashes of the `n`-word windows of `text`, sorted (the whole text as one gram when it has
/// fewer words; none when it has no words).
pub fn ngram_hashes(text: &str, n: usize, normalize_digits: bool) -> Vec<u64> {
    let words = word_hashes(text, normalize_digits);
    let n = n.max(1).min(words.len().max(1));
    let mut out: Vec<u64> = words.windows(n).map(|w| xxh3_64(as_bytes(w))).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8; the slice covers the same memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_unicode_paths_agree() {
        let ascii = word_hashes("Hello, World_2 x", false);
        let wide = word_hashes("Ｈｅｌｌｏ， Ｗｏｒｌｄ_２ x", false);
        assert_eq!(ascii, wide);
        assert_eq!(ascii.len(), 3);
        assert_eq!(word_hashes("a1 b22", true), word_hashes("A7 B93", true));
        assert_ne!(word_hashes("a1 b22", false), word_hashes("a7 b93", false));
    }

    #[test]
    fn ngrams_of_short_texts_are_the_whole_text() {
        assert_eq!(ngram_hashes("what is 2 + 2", 8, false).len(), 1);
        assert_eq!(ngram_hashes("one two three", 2, false).len(), 2);
        assert!(ngram_hashes(" ,. ", 8, false).is_empty());
        assert_eq!(ngram_hashes("a b a b a b", 2, false).len(), 2, "distinct grams only");
    }
}
