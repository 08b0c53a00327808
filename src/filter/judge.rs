//! `--judge SPEC`: a teacher's second opinion on semantic contamination. Each prompt the embeddings flag
//! is shown to the teacher beside the evaluation item it resembles, with llm-decontaminator's question
//! (are these the same problem, names and word order aside? answer True or False); a prompt the judge
//! calls different is kept, one it calls the same (or whose answer says neither) stays rejected, its
//! answer in `reject_detail`. Greedy decoding, one answer per pair; an HTTP judge's answers are journaled
//! like any teacher's, so a rerun asks nothing twice.

use crate::error::Result;
use crate::model::chat::Message;
use crate::progress::Progress;
use crate::teacher::{Connect, HttpConfig, Prompt, SamplingConfig, Teacher};

/// The question, after llm-decontaminator's (Yang et al., 2023).
const QUESTION: &str = "I will give you two questions. Tell me whether they are the same question: disregard \
the names and minor changes in word order or wording in them. If they are the same, answer True; otherwise, \
answer False. Only answer True or False.";

/// A teacher asked whether flagged pairs are the same problem.
pub struct Judge {
    teacher: Box<dyn Teacher>,
    sampling: SamplingConfig,
}

impl Judge {
    /// Open the teacher `spec` (`local:PATH`, `openai:URL`), answering in at most `max_tokens` tokens.
    pub fn open(spec: &str, model: Option<&str>, http: &HttpConfig, max_tokens: u32) -> Result<Judge> {
        // the journal keys this run's requests by what the judge is asked, which is all that matters here
        let teacher = crate::teacher::open(&Connect { spec, model, http, run: 0 })?;
        let sampling = SamplingConfig { temperature: 0.0, max_new_tokens: max_tokens, ..Default::default() };
        Ok(Judge { teacher, sampling })
    }

    /// The judge's answer for each `(training prompt, evaluation item)` pair, and what it means:
    /// `Some(true)` the same problem, `Some(false)` different, `None` neither said.
    pub fn ask(&mut self, pairs: &[(&str, &str)], quiet: bool) -> Result<Vec<(Option<bool>, String)>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let prompts: Vec<Prompt> = pairs
            .iter()
            .map(|(prompt, item)| Prompt {
                key: format!("{:032x}", xxhash_rust::xxh3::xxh3_128(format!("{item}\0{prompt}").as_bytes())),
                messages: vec![Message::new("user", &question(item, prompt))],
                prefill: String::new(),
                n: 1,
                max_new_tokens: None,
                first_sample: 0,
            })
            .collect();
        let progress = Progress::rows("filter: judge", pairs.len() as u64, quiet);
        let samples = self.teacher.generate(&prompts, &self.sampling, &progress)?;
        progress.finish();
        Ok(samples
            .into_iter()
            .map(|mut s| {
                let s = s.swap_remove(0);
                let answer = match s.error {
                    Some(e) => format!("error: {e}"),
                    None => s.text,
                };
                (verdict(&answer), answer)
            })
            .collect())
    }
}

/// What the judge is asked of an evaluation item and a training prompt.
pub fn question(item: &str, prompt: &str) -> String {
    format!("{QUESTION}\n\nQuestion 1: {item}\n\nQuestion 2: {prompt}")
}

/// What an answer says: the first `true`/`yes` or `false`/`no` word after any thinking (`</think>`);
/// nothing when the thinking did not end.
pub fn verdict(answer: &str) -> Option<bool> {
    let after = match answer.rsplit_once("</think>") {
        Some((_, rest)) => rest,
        None if answer.contains("<think>") => return None,
        None => answer,
    };
    after.split(|c: char| !c.is_alphanumeric()).find_map(|word| match word.to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn verdicts_read_the_first_answer_word_after_thinking() {
        use super::verdict;
        assert_eq!(verdict("True"), Some(true));
        assert_eq!(verdict(" false."), Some(false));
        assert_eq!(verdict("**FALSE**"), Some(false));
        assert_eq!(verdict("Yes, they are the same."), Some(true));
        assert_eq!(verdict("<think>maybe true, maybe not</think>\nFalse"), Some(false));
        assert_eq!(verdict("<think>it is false that they differ"), None, "thinking cut short says nothing");
        assert_eq!(verdict("They are identical"), None);
        assert_eq!(verdict("Trueish"), None);
        assert_eq!(verdict(""), None);
    }
}
