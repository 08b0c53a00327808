//! The library's error type. Every data error carries a [`Location`] (file, line or row, column) so the
//! message says where the problem is; hints say what to do about it. `anyhow` appears only in `cli/`.

use std::fmt;
use std::path::PathBuf;

/// The library's result: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in an input a problem was found. Lines are 1-based (text formats), rows 0-based (Parquet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// The line (1-based) in a text file.
    pub line: Option<u64>,
    /// The row (0-based) in a table.
    pub row: Option<u64>,
    /// The column or field.
    pub column: Option<String>,
}

impl Location {
    /// A whole file.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Location { file: file.into(), ..Default::default() }
    }
    /// A line (1-based) of a text file.
    pub fn line(file: impl Into<PathBuf>, line: u64) -> Self {
        Location { line: Some(line), ..Location::file(file) }
    }
    /// A row (0-based) of a table.
    pub fn row(file: impl Into<PathBuf>, row: u64) -> Self {
        Location { row: Some(row), ..Location::file(file) }
    }
    /// The same place, narrowed to a column.
    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(row) = self.row {
            write!(f, ", row {row}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column `{column}`")?;
        }
        Ok(())
    }
}

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input data is wrong: bad syntax, a missing column, a wrong type, a truncated file.
    #[error("{location}: {message}")]
    Data {
        /// Where.
        location: Box<Location>,
        /// What is wrong there.
        message: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// The request cannot be carried out as asked (bad flag values, an existing output, ...).
    #[error("{message}")]
    Usage {
        /// What cannot be done.
        message: String,
        /// What to do instead.
        hint: Option<String>,
    },
    /// File system errors; `fs-err` puts the path into the message.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    // The cause is part of the message, not a `source`, so it is not printed twice as "Caused by".
    /// A Parquet file could not be read or written.
    #[error("{path}: {error}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet library's error.
        error: parquet::errors::ParquetError,
    },
    /// Arrow data did not fit what was expected.
    #[error("{context}: {error}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The Arrow library's error.
        error: arrow_schema::ArrowError,
        /// What to do about it.
        hint: Option<String>,
    },
}

impl Error {
    /// Wrong input data at `location`.
    pub fn data(location: Location, message: impl Into<String>) -> Self {
        Error::Data { location: Box::new(location), message: message.into(), hint: None }
    }
    /// A request that cannot be carried out as asked.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage { message: message.into(), hint: None }
    }
    /// Attach a `hint:` line telling the user what to do next.
    pub fn with_hint(mut self, text: impl Into<String>) -> Self {
        match &mut self {
            Error::Data { hint, .. } | Error::Usage { hint, .. } | Error::Arrow { hint, .. } => {
                *hint = Some(text.into());
            }
            _ => {}
        }
        self
    }
    /// The hint, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Data { hint, .. } | Error::Usage { hint, .. } | Error::Arrow { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
    /// A Parquet error on `path`.
    pub fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet { path: path.into(), error: source }
    }
    /// An Arrow error while doing `context`.
    pub fn arrow(context: impl Into<String>, source: arrow_schema::ArrowError) -> Self {
        Error::Arrow { context: context.into(), error: source, hint: None }
    }
}
