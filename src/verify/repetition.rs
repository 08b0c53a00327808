//! Repetition loops: the same n-gram back to back many times ("Wait, let me recheck. Wait, let me
//! recheck. ..."), the signature of a degenerate generation that ran until its token limit.
//!
//! Tokens are whitespace-separated words, and each CJK character on its own (those scripts use no
//! spaces). A loop is an n-gram (1 ≤ n ≤ [`MAX_NGRAM`]) repeated consecutively at least `min_repeats`
//! times; the scan is linear in the text for each n.

/// Longest n-gram considered, in tokens.
pub const MAX_NGRAM: usize = 32;
/// Consecutive repeats that make a loop.
pub const DEFAULT_MIN_REPEATS: usize = 8;

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// Tokens as hashes: comparing two u64s is what the scan does most.
fn tokens(text: &str) -> Vec<u64> {
    let mut out = Vec::with_capacity(text.len() / 5);
    let mut push = |t: &str| out.push(xxhash_rust::xxh3::xxh3_64(t.as_bytes()));
    // Most outputs are ASCII: no CJK to split out, and ASCII whitespace is all the whitespace there is.
    if text.is_ascii() {
        text.split_ascii_whitespace().for_each(push);
        return out;
    }
    for word in text.split_whitespace() {
        let mut start = 0;
        for (i, c) in word.char_indices() {
            if is_cjk(c) {
                if start < i {
                    push(&word[start..i]);
                }
                push(&word[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < word.len() {
            push(&word[start..]);
        }
    }
    out
}

/// The most repeated back-to-back n-gram: (n, repeats). `(0, 0)` for empty text.
pub fn longest_loop(text: &str) -> (usize, usize) {
    scan(&tokens(text), usize::MAX, 2)
}

/// Does `text` contain a loop of at least `min_repeats`?
pub fn has_loop(text: &str, min_repeats: usize) -> bool {
    scan(&tokens(text), min_repeats, min_repeats).1 >= min_repeats
}

/// The best (n, repeats), stopping early once `enough` repeats are found; n-grams that cannot repeat
/// `at_least` times in `t` are not tried.
fn scan(t: &[u64], enough: usize, at_least: usize) -> (usize, usize) {
    let mut best = (0, 0);
    // `at_least` repeats of an n-gram need n * at_least tokens: longer n-grams cannot loop that often.
    for n in 1..=MAX_NGRAM.min(t.len() / at_least.max(2)) {
        // run[i]: how many tokens from i on equal the tokens n further back, consecutively.
        let mut run = 0usize;
        for i in n..t.len() {
            if t[i] == t[i - n] {
                run += 1;
                let repeats = run / n + 1;
                if repeats > best.1 {
                    best = (n, repeats);
                    if repeats >= enough {
                        return best;
                    }
                }
            } else {
                run = 0;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_loops_of_words_and_of_cjk_characters() {
        let looped = format!("Let us start. {}", "Wait, let me recheck the sum. ".repeat(12));
        assert_eq!(longest_loop(&looped), (6, 12));
        assert!(has_loop(&looped, DEFAULT_MIN_REPEATS));
        assert!(has_loop(&"所以答案是".repeat(10), DEFAULT_MIN_REPEATS));
        let normal = "First, 3 + 4 = 7. Then 7 * 2 = 14. So the answer is 14. Let me check: 14 / 2 = 7, and 7 - 4 = 3.";
        assert!(!has_loop(normal, DEFAULT_MIN_REPEATS));
        assert_eq!(longest_loop(""), (0, 0));
    }
}
