//! Language consistency: the reasoning is in the prompt's language, and does not drift into another
//! script (DeepSeek-R1's language mixing, made a filter).
//!
//! Only prose counts: code blocks, inline code, LaTeX math (`$…$`, `$$…$$`, `\[…\]`, `\(…\)`), LaTeX commands,
//! digits and symbols are removed first, so a Python block or `\frac{\alpha}{2}` is not a language switch.
//! The language of each side comes from whatlang (when it is confident); the foreign-script share is the
//! share of letters that are not in the prompt's main script (Greek letters, common in math, are ignored).

use serde::Serialize;

/// Above this share of letters in another script, the reasoning is mixing languages.
pub const DEFAULT_MAX_FOREIGN_SHARE: f64 = 0.05;

/// The language-consistency check of one output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LanguageCheck {
    /// ISO 639-3 codes, when whatlang is confident.
    pub prompt_language: Option<String>,
    /// The output's language (ISO 639-3), when whatlang is confident.
    pub output_language: Option<String>,
    /// Share of the output's letters written in a script other than the prompt's main one.
    pub foreign_script_share: f64,
    /// The output keeps to the prompt's language and script.
    pub ok: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Script {
    Latin,
    Cjk,
    Hangul,
    Cyrillic,
    Arabic,
    Hebrew,
    Devanagari,
    Thai,
    Greek,
    Other,
}

fn script(c: char) -> Option<Script> {
    if !c.is_alphabetic() {
        return None;
    }
    Some(match c as u32 {
        0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F | 0x1E00..=0x1EFF => Script::Latin,
        0x370..=0x3FF => Script::Greek,
        0x400..=0x52F => Script::Cyrillic,
        0x590..=0x5FF => Script::Hebrew,
        0x600..=0x6FF | 0x750..=0x77F => Script::Arabic,
        0x900..=0x97F => Script::Devanagari,
        0xE00..=0xE7F => Script::Thai,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF => Script::Cjk,
        0x1100..=0x11FF | 0xAC00..=0xD7AF => Script::Hangul,
        _ => Script::Other,
    })
}

/// The prose of `text`: code, math and LaTeX commands removed.
pub fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let spans: [(&str, &str); 6] =
        [("```", "```"), ("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"), ("`", "`")];
    'outer: while !rest.is_empty() {
        // The earliest opening delimiter decides what comes next.
        let next = spans
            .iter()
            .filter_map(|(o, c)| rest.find(o).map(|i| (i, *o, *c)))
            .min_by_key(|(i, o, _)| (*i, usize::MAX - o.len()));
        match next {
            Some((i, open, close)) => {
                out.push_str(&rest[..i]);
                let after = &rest[i + open.len()..];
                match after.find(close) {
                    Some(j) => rest = &after[j + close.len()..],
                    None => break 'outer,
                }
                out.push(' ');
            }
            None => {
                out.push_str(rest);
                break;
            }
        }
    }
    // LaTeX commands outside math (`\textbf`, `\boxed`) are not words of any language.
    let mut clean = String::with_capacity(out.len());
    let mut in_command = false;
    for c in out.chars() {
        if c == '\\' {
            in_command = true;
            clean.push(' ');
        } else if in_command && c.is_ascii_alphabetic() {
            continue;
        } else {
            in_command = false;
            clean.push(if c.is_alphabetic() || c.is_whitespace() || matches!(c, '\'' | ',' | '.' | '?' | '!') {
                c
            } else {
                ' '
            });
        }
    }
    clean
}

fn main_script(text: &str) -> Option<Script> {
    let mut counts = std::collections::HashMap::new();
    for s in text.chars().filter_map(script) {
        *counts.entry(s).or_insert(0usize) += 1;
    }
    counts.into_iter().max_by_key(|(s, n)| (*n, *s as u8)).map(|(s, _)| s)
}

fn language(text: &str) -> Option<String> {
    let info = whatlang::detect(text)?;
    info.is_reliable().then(|| info.lang().code().to_string())
}

/// Check `output` (the reasoning, or the whole output) against `prompt`.
pub fn check(prompt: &str, output: &str, max_foreign_share: f64) -> LanguageCheck {
    let (p, o) = (prose(prompt), prose(output));
    let main = main_script(&p);
    let letters: Vec<Script> = o.chars().filter_map(script).filter(|s| *s != Script::Greek).collect();
    let foreign = match main {
        Some(m) => letters.iter().filter(|s| **s != m).count(),
        None => 0,
    };
    let share = if letters.is_empty() { 0.0 } else { foreign as f64 / letters.len() as f64 };
    let (pl, ol) = (language(&p), language(&o));
    let same_language = match (&pl, &ol) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    LanguageCheck {
        prompt_language: pl,
        output_language: ol,
        foreign_script_share: share,
        ok: same_language && share <= max_foreign_share,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?";

    #[test]
    fn english_reasoning_with_code_and_latex_is_consistent() {
        let reasoning = "First I find the clips sold in May, which is half of April: $\\frac{48}{2} = 24$. \
            Let me verify with a quick program:\n```python\nprint(48 + 48 // 2)  # 72\n```\nSo in total she sold \
            $48 + 24 = 72$ clips, and the answer is \\boxed{72}. With $\\alpha = 0.5$ as the ratio, it checks out.";
        let c = check(PROMPT, reasoning, DEFAULT_MAX_FOREIGN_SHARE);
        assert!(c.ok, "{c:?}");
        assert_eq!(c.foreign_script_share, 0.0);
        assert_eq!(c.prompt_language.as_deref(), Some("eng"));
    }

    #[test]
    fn reasoning_drifting_into_chinese_is_caught() {
        let reasoning = "First, she sold 48 clips in April. In May she sold half as many, so 24 clips. \
            等一下，我需要重新计算一下五月份卖出的数量，四十八的一半是二十四，所以总数是七十二个夹子。";
        let c = check(PROMPT, reasoning, DEFAULT_MAX_FOREIGN_SHARE);
        assert!(!c.ok, "{c:?}");
        assert!(c.foreign_script_share > 0.2, "{c:?}");
    }

    #[test]
    fn reasoning_entirely_in_another_language_is_caught() {
        let reasoning = "Zuerst berechnen wir, wie viele Klammern sie im Mai verkauft hat. Das ist die Hälfte von \
            achtundvierzig, also vierundzwanzig. Insgesamt hat sie also zweiundsiebzig Klammern verkauft.";
        let c = check(PROMPT, reasoning, DEFAULT_MAX_FOREIGN_SHARE);
        assert_eq!(c.output_language.as_deref(), Some("deu"));
        assert!(!c.ok, "{c:?}");
    }
}
