//! Finding the final answer in a model's output.
//!
//! The reasoning is split off first (`<think>…</think>`, `<|begin_of_thought|>…<|end_of_thought|>`), and the
//! solution part is searched before the whole text. Rules, tried in order, each taking the **last** match:
//! `<answer>…</answer>` (TinyZero), `\boxed{}`/`\fbox{}` (several boxes separated only by `,`/`and`/`or`
//! form one set), "final answer is", "the answer is", `Answer:`, GSM8K's `#### N`, and, unless switched
//! off, the last number. The rule that fired is recorded so curation can distrust fallbacks.

use serde::Serialize;

/// Which rule found the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    AnswerTag,
    Boxed,
    FinalAnswerIs,
    AnswerIs,
    AnswerColon,
    Gsm8k,
    /// The whole (short) output is one answer: `\frac12`, `(1, 2)`, `Evelyn`.
    Whole,
    LastNumber,
}

// memchr's SIMD substring search: these scans run over every output, and std's two-way search showed
// up as the largest single cost in profiles of `forge verify`.
fn find(haystack: &str, needle: &str) -> Option<usize> {
    memchr::memmem::find(haystack.as_bytes(), needle.as_bytes())
}

fn rfind(haystack: &str, needle: &str) -> Option<usize> {
    memchr::memmem::rfind(haystack.as_bytes(), needle.as_bytes())
}

/// A model output split into reasoning and solution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    pub reasoning: Option<&'a str>,
    pub solution: &'a str,
    /// The reasoning was opened but never closed (truncated or malformed).
    pub unclosed: bool,
}

/// Split `<think>…</think>` (the opening tag may be missing, as when the template prefills it) or
/// `<|begin_of_thought|>…<|end_of_thought|>` from the solution.
pub fn split(text: &str) -> Split<'_> {
    for (open, close) in [("<think>", "</think>"), ("<|begin_of_thought|>", "<|end_of_thought|>")] {
        if let Some(end) = rfind(text, close) {
            let start = find(&text[..end], open).map_or(0, |i| i + open.len());
            let mut solution = &text[end + close.len()..];
            if let Some(s) = solution.find("<|begin_of_solution|>") {
                solution = &solution[s + "<|begin_of_solution|>".len()..];
                solution = solution.split("<|end_of_solution|>").next().unwrap_or(solution);
            }
            return Split { reasoning: Some(&text[start..end]), solution, unclosed: false };
        }
        if let Some(start) = find(text, open) {
            return Split { reasoning: Some(&text[start + open.len()..]), solution: "", unclosed: true };
        }
    }
    Split { reasoning: None, solution: text, unclosed: false }
}

/// The answer found in `text` and the rule that found it.
pub fn extract(text: &str, last_number: bool) -> Option<(String, Rule)> {
    extract_split(text, &split(text), last_number)
}

/// As [`extract`], for a caller that has split `text` already.
pub fn extract_split(text: &str, parts: &Split<'_>, last_number: bool) -> Option<(String, Rule)> {
    let mut places = vec![parts.solution];
    if parts.reasoning.is_some() {
        places.push(text);
    }
    for place in places {
        if let Some(found) = extract_in(place, false) {
            return Some(found);
        }
    }
    if let Some(whole) = whole_answer(parts.solution) {
        return Some((whole, Rule::Whole));
    }
    if last_number { extract_in(text, true) } else { None }
}

/// A short output that is nothing but an answer: a number or structure the comparer can read, or a
/// few words without digits.
fn whole_answer(text: &str) -> Option<String> {
    let t = text.trim().trim_end_matches('.').trim().trim_matches('$').trim();
    if t.is_empty() || t.chars().count() > 64 {
        return None;
    }
    let answer_like =
        super::answer::is_structured(t) || (t.chars().count() <= 32 && !t.chars().any(|c| c.is_ascii_digit()));
    answer_like.then(|| t.to_string())
}

fn extract_in(text: &str, last_number: bool) -> Option<(String, Rule)> {
    if last_number {
        return last_number_in(text).map(|n| (n, Rule::LastNumber));
    }
    if let Some(i) = rfind(text, "<answer>") {
        let rest = &text[i + "<answer>".len()..];
        let inner = rest.split("</answer>").next().unwrap_or(rest).trim();
        if !inner.is_empty() {
            return Some((inner.to_string(), Rule::AnswerTag));
        }
    }
    if let Some(boxed) = boxed_answer(text) {
        return Some((boxed, Rule::Boxed));
    }
    let lower = text.to_ascii_lowercase();
    for (anchor, rule) in [
        ("final answer is", Rule::FinalAnswerIs),
        ("answer is", Rule::AnswerIs),
        ("answer:", Rule::AnswerColon),
        ("####", Rule::Gsm8k),
    ] {
        if let Some(i) = rfind(&lower, anchor) {
            let after = clean_tail(&text[i + anchor.len()..]);
            if !after.is_empty() {
                return Some((after, rule));
            }
        }
    }
    None
}

/// Every top-level `\boxed{…}` / `\fbox{…}` (or `\boxed 5`) in `text`, in order: the span of the whole
/// box and its content. Braces are matched; `\{` and `\}` do not count.
pub fn boxes(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let bytes = text.as_bytes();
    let mut starts: Vec<(usize, usize)> = memchr::memmem::find_iter(bytes, b"\\boxed")
        .map(|i| (i, i + 6))
        .chain(memchr::memmem::find_iter(bytes, b"\\fbox").map(|i| (i, i + 5)))
        .collect();
    starts.sort_unstable();
    let mut found: Vec<(std::ops::Range<usize>, &str)> = Vec::new();
    for (start, after) in starts {
        if found.last().is_some_and(|(span, _)| start < span.end) {
            continue;
        }
        if let Some((content, end)) = box_content(text, after) {
            found.push((start..end, content));
        }
    }
    found
}

/// The content of the last box in `text`.
pub fn last_boxed(text: &str) -> Option<&str> {
    boxes(text).pop().map(|(_, content)| content)
}

fn box_content(text: &str, at: usize) -> Option<(&str, usize)> {
    let rest = &text[at..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut depth = 1usize;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some((body[..i].trim(), at + 1 + i + 1));
                    }
                }
                _ => {}
            }
        }
        None
    } else if rest.starts_with(' ') {
        let skipped = rest.len() - rest.trim_start().len();
        let token = rest.trim_start().split(|c: char| c.is_whitespace() || c == '$').next()?;
        (!token.is_empty()).then_some((token, at + skipped + token.len()))
    } else {
        None
    }
}

/// The boxed answer: the last box, joined with the boxes just before it when only `,`, `and` or `$`
/// separate them (`are $\boxed{-2}$ and $\boxed{1}$` is the set `-2, 1`). Boxes separated by `or` are
/// alternatives (`$\boxed{x+11}$ or $\boxed{11+x}$`), and any other words break the chain.
pub fn boxed_answer(text: &str) -> Option<String> {
    let all = boxes(text);
    let (mut span, last) = all.last()?.clone();
    let mut items = vec![last];
    for (prev_span, prev) in all.iter().rev().skip(1) {
        let gap = &text[prev_span.end..span.start];
        let gap = gap.replace(['$', ',', ' ', '\n'], "").replace("and", "");
        if !gap.is_empty() {
            break;
        }
        items.push(prev);
        span = prev_span.clone();
    }
    items.reverse();
    Some(items.join(", "))
}

/// The answer text after an anchor: the rest of the line, without markdown bold, `$`s and a final period.
fn clean_tail(rest: &str) -> String {
    let line = rest.trim_start_matches([':', ' ', '\t']).lines().next().unwrap_or("");
    let line = line.trim().trim_matches('*').trim();
    let line = line.strip_prefix('$').and_then(|l| l.split('$').next()).unwrap_or(line);
    line.trim().trim_end_matches(['.', '*']).trim().to_string()
}

fn last_number_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    while end > 0 {
        if bytes[end - 1].is_ascii_digit() {
            let mut start = end;
            while start > 0 && (bytes[start - 1].is_ascii_digit() || matches!(bytes[start - 1], b'.' | b',')) {
                start -= 1;
            }
            if start > 0 && bytes[start - 1] == b'-' {
                start -= 1;
            }
            let n = text[start..end].trim_start_matches([',', '.']);
            return Some(n.replace(',', ""));
        }
        end -= 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_order_and_last_match_wins() {
        let cases: &[(&str, &str, Rule)] = &[
            ("so \\boxed{1} no wait \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", Rule::Boxed),
            ("the roots are $\\boxed{1}$ and $\\boxed{2}$", "1, 2", Rule::Boxed),
            ("$\\boxed{x+11}$ or $\\boxed{11+x}$", "11+x", Rule::Boxed),
            ("radius $\\boxed{1}$ no no $\\boxed{9}$", "9", Rule::Boxed),
            ("<think>maybe \\boxed{3}</think>The answer is 4.", "4", Rule::AnswerIs),
            ("<think>x</think><answer> (1 + 2) / 3 </answer>", "(1 + 2) / 3", Rule::AnswerTag),
            ("I think the final answer is $42$. I hope it is correct.", "42", Rule::FinalAnswerIs),
            ("**Answer:** 17", "17", Rule::AnswerColon),
            ("Final Answer: **73**", "73", Rule::AnswerColon),
            ("3 + 4 = 7\n#### 7", "7", Rule::Gsm8k),
            ("She makes 13 * 2 = $<<13*2=26>>26\nA: 26", "26", Rule::LastNumber),
            ("It costs 1,250 dollars.", "1250", Rule::LastNumber),
            ("\\frac12", "\\frac12", Rule::Whole),
            ("$(1, 2)$.", "(1, 2)", Rule::Whole),
            ("Evelyn", "Evelyn", Rule::Whole),
        ];
        for (text, answer, rule) in cases {
            assert_eq!(extract(text, true), Some((answer.to_string(), *rule)), "{text}");
        }
        assert_eq!(extract("There is no number anywhere in this output.", true), None);
        assert_eq!(extract("It is 5", false), None);
    }

    #[test]
    fn reasoning_is_split_off() {
        let s = split("<think>hmm</think>\\boxed{2}");
        assert_eq!((s.reasoning, s.solution, s.unclosed), (Some("hmm"), "\\boxed{2}", false));
        let s = split("prefilled reasoning</think>done");
        assert_eq!(s.reasoning, Some("prefilled reasoning"));
        let s = split("<think>cut off in the middle");
        assert!(s.unclosed);
        let s = split("<|begin_of_thought|>a<|end_of_thought|><|begin_of_solution|>b<|end_of_solution|>");
        assert_eq!((s.reasoning, s.solution), (Some("a"), "b"));
    }

    #[test]
    fn last_box_with_nested_braces_wins() {
        assert_eq!(last_boxed("so $\\boxed{1}$ or $\\boxed{\\frac{1}{2}}$."), Some("\\frac{1}{2}"));
        assert_eq!(last_boxed("\\boxed{\\{1,2\\}}"), Some("\\{1,2\\}"));
        assert_eq!(last_boxed("is $\\boxed 5$"), Some("5"));
        assert_eq!(last_boxed("$\\fbox{204}$ minutes"), Some("204"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        assert_eq!(last_boxed("no box"), None);
    }
}
