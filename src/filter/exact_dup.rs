//! Exact duplicates after normalisation: Unicode NFKC, lowercase, punctuation and whitespace dropped
//! (optionally every digit read as `0`), then an xxh3-128 key per text. Two texts with the same key are
//! duplicates.

use unicode_normalization::UnicodeNormalization;

/// The normalised form two texts are compared in.
pub fn normalize(text: &str, normalize_digits: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    if text.is_ascii() {
        // The common case, byte by byte: NFKC changes nothing in ASCII.
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                out.push(if normalize_digits && b.is_ascii_digit() { '0' } else { b.to_ascii_lowercase() as char });
            } else {
                space = true;
            }
        }
        return out;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_spacing_punctuation_and_compatibility_forms_do_not_matter() {
        let k = key("What is 2 + 2?", false);
        assert_eq!(key("  what IS 2+2 ", false), k);
        assert_eq!(key("Ｗｈａｔ ｉｓ ２ + ２？", false), k); // full-width forms fold under NFKC
        assert_ne!(key("What is 2 + 3?", false), k);
        assert_eq!(key("What is 7 + 9?", true), key("What is 2 + 2?", true));
        assert_eq!(normalize("Ａ-b_C  9", false), normalize("a-B_c 9", false), "the ASCII path agrees with the other");
        assert_eq!(normalize("Hello,   World!", false), "hello world");
    }
}
