use std::path::Path;

use forge::dataset::{TableKind, type_name};

/// (column, type, nullable) rows of the table in a `schemas/*.md` file, and its schema version.
fn documented(kind: TableKind) -> (u32, Vec<(String, String, bool)>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(format!("{}.md", kind.name()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Schema version: "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a `Schema version: N` line");
    let columns = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            let nullable = match cells[3] {
                "yes" => true,
                "no" => false,
                other => panic!("{}: nullable must be yes or no, not {other}", path.display()),
            };
            (cells[1].to_string(), cells[2].to_string(), nullable)
        })
        .collect();
    (version, columns)
}

#[test]
fn schema_files_match_the_code() {
    for kind in TableKind::ALL {
        let (version, documented) = documented(kind);
        assert_eq!(version, kind.version(), "schema version of {}", kind.name());
        let code: Vec<(String, String, bool)> = kind
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), type_name(f.data_type()), f.is_nullable()))
            .collect();
        assert_eq!(documented, code, "schemas/{}.md differs from the code", kind.name());
    }
}
