//! Reference steps in GSM8K's form: a line of text with calculator annotations `<<48/2=24>>`, which
//! become checkable calcs (read by `import --preset gsm8k`, and by the step checker on model outputs).

use crate::dataset::{Calc, Step};

/// One line of a GSM8K solution: text without annotations, plus the annotations as calcs.
pub fn annotated_step(line: &str) -> Step {
    let mut text = String::with_capacity(line.len());
    let mut calcs = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("<<") {
        let Some(len) = rest[start..].find(">>") else { break };
        text.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        if let Some((expr, result)) = inner.rsplit_once('=') {
            calcs.push(Calc { expr: expr.trim().to_string(), result: result.trim().to_string() });
        }
        rest = &rest[start + len + 2..];
    }
    text.push_str(rest);
    Step { text: text.trim().to_string(), calcs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_calcs() {
        let s = annotated_step("Natalia sold 48/2 = <<48/2=24>>24 clips in May.");
        assert_eq!(s.text, "Natalia sold 48/2 = 24 clips in May.");
        assert_eq!(s.calcs, vec![Calc { expr: "48/2".into(), result: "24".into() }]);
        let s = annotated_step("He pays 2*3=<<2*3=6>>6 and 6+1=<<6+1=7>>7 in all");
        assert_eq!(s.calcs.len(), 2);
        assert_eq!(s.text, "He pays 2*3=6 and 6+1=7 in all");
    }
}
