//! Exact duplicates after normalisation: Unicode NFKC, lowercase, punctuation and whitespace dropped
//! (optionally every digit read as `0`), then an xxh3-128 key per text. Two texts with the same key are
//! duplicates; the first one seen is kept.

use std::collections::HashSet;

use unicode_normalization::UnicodeNormalization;

/// The normalised form two texts are compared in.
pub fn normalize(text: &str, normalize_digits: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.nfkc().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(if normalize_digits && c.is_ascii_digit() { '0' } else { c });
        } else {
            space = true;
        }
    }
    out
}

/// The duplicate key of `text`.
pub fn key(text: &str, normalize_digits: bool) -> u128 {
    xxhash_rust::xxh3::xxh3_128(normalize(text, normalize_digits).as_bytes())
}

/// Remembers keys seen so far; memory is 16 bytes per distinct text.
#[derive(Debug, Default)]
pub struct Seen {
    keys: HashSet<u128>,
    normalize_digits: bool,
}

impl Seen {
    pub fn new(normalize_digits: bool) -> Self {
        Seen { keys: HashSet::new(), normalize_digits }
    }

    /// True the first time a text (up to normalisation) is seen.
    pub fn first(&mut self, text: &str) -> bool {
        self.keys.insert(key(text, self.normalize_digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_spacing_punctuation_and_compatibility_forms_do_not_matter() {
        let mut seen = Seen::new(false);
        assert!(seen.first("What is 2 + 2?"));
        assert!(!seen.first("  what IS 2+2 "));
        assert!(!seen.first("Ｗｈａｔ ｉｓ ２ + ２？")); // full-width forms fold under NFKC
        assert!(seen.first("What is 2 + 3?"));
        let mut digits = Seen::new(true);
        assert!(digits.first("What is 2 + 2?"));
        assert!(!digits.first("What is 7 + 9?"));
        assert_eq!(normalize("Hello,   World!", false), "hello world");
    }
}
