//! What every stage reports: rows in, rows kept, rows rejected by reason, time. The report goes to the
//! terminal and into the output manifest; [`StageReport::check`] enforces in = kept + rejected.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a stage did: rows in and out, why rows were rejected or marked, how long it took. Written into
/// the manifest and the stage's report file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage (`filter`, `generate`, ...).
    pub stage: String,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Rejected rows by reason code (snake_case, stable).
    pub rejected: BTreeMap<String, u64>,
    /// Rows kept but marked, by reason (e.g. `no_gold`: a problem without a gold answer).
    #[serde(default)]
    pub flagged: BTreeMap<String, u64>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Rows read per second.
    pub rows_per_second: f64,
}

impl StageReport {
    /// A report without reasons.
    pub fn new(stage: &str, rows_in: u64, rows_out: u64, seconds: f64) -> Self {
        StageReport {
            stage: stage.to_string(),
            rows_in,
            rows_out,
            rejected: BTreeMap::new(),
            flagged: BTreeMap::new(),
            seconds,
            rows_per_second: if seconds > 0.0 { rows_in as f64 / seconds } else { 0.0 },
        }
    }

    /// Every input row is either kept or rejected with a reason; nothing is silently lost.
    pub fn check(&self) -> bool {
        self.rows_in == self.rows_out + self.rejected.values().sum::<u64>()
    }
}

impl fmt::Display for StageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} rows in, {} out in {:.2}s ({:.0} rows/s)",
            self.stage, self.rows_in, self.rows_out, self.seconds, self.rows_per_second
        )?;
        for (reason, n) in &self.rejected {
            write!(f, "\n  rejected {reason}: {n}")?;
        }
        for (reason, n) in &self.flagged {
            write!(f, "\n  flagged {reason}: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_in_must_equal_kept_plus_rejected() {
        let mut r = StageReport::new("filter", 10, 7, 1.0);
        assert!(!r.check());
        r.rejected.insert("near_dup".into(), 3);
        assert!(r.check());
        r.flagged.insert("no_gold".into(), 5); // flagged rows are kept rows: they do not count twice
        assert!(r.check());
    }
}
