use crate::util::{Scratch, ok};

#[test]
fn stats_counts_rows_nulls_lengths_and_top_values() {
    let s = Scratch::new();
    let f = s.write(
        "x.jsonl",
        "{\"id\": \"a\", \"kind\": \"x\", \"text\": \"hello\", \"n\": 1}\n{\"id\": \"b\", \"kind\": \"x\", \"text\": \"hi\"}\n\
         {\"id\": \"c\", \"kind\": \"y\", \"text\": \"hey!\", \"n\": 5}\n{\"id\": \"d\", \"kind\": \"x\", \"text\": null, \"n\": 3}\n",
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&[&"stats", &f, &"--json"])).unwrap();
    assert_eq!(json["rows"], 4);
    let col = |name: &str| json["columns"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(col("kind")["top"], serde_json::json!([["x", 3], ["y", 1]]));
    assert_eq!(col("text")["nulls"], 1);
    assert_eq!(col("text")["length"]["max"], 5.0);
    assert_eq!(col("text")["length"]["p50"], 4.0);
    assert_eq!(col("n")["nulls"], 1);
    assert_eq!(col("n")["numbers"]["mean"], 3.0);
    let table = ok(&[&"stats", &f]);
    assert!(table.contains("(1 file, 4 rows)"), "{table}");
}

#[test]
fn stats_reads_a_forge_dataset_with_its_kind() {
    let s = Scratch::new();
    let d = s.path("d");
    ok(&[&"synth", &"arith", &"--n", &"50", &"-o", &d, &"-q"]);
    let table = ok(&[&"stats", &d]);
    assert!(table.contains("(problems, 1 file, 50 rows)"), "{table}");
    assert!(table.contains("\"synth/arith\" 50"), "{table}");
}
