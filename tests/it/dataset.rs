use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, LargeStringArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use forge::dataset::{Input, TableKind};

use crate::util::{Scratch, forge, ok, problems, run, shard_bytes};

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn large(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(LargeStringArray::from(values.to_vec()))
}

/// polars writes `large_string` and marks every column nullable; optional columns may be absent.
#[test]
fn parquet_from_other_tools_is_cast_to_the_table_schema() {
    let s = Scratch::new();
    let f = s.path("polars.parquet");
    let three = |v: &'static str| large(&[Some(v), Some(v), Some(v)]);
    write_parquet(
        &f,
        vec![
            ("id", large(&[Some("a"), Some("b"), Some("c")])),
            ("source", three("s")),
            ("domain", three("math")),
            ("prompt", large(&[Some("1+1"), Some("2+2"), Some("3+3")])),
            ("metadata", three("{}")),
            ("extra", three("ignored")),
        ],
    );
    let input = Input::open(&f).unwrap();
    let batches: Vec<RecordBatch> = input.batches(TableKind::Problems, 0..3).map(|b| b.unwrap()).collect();
    assert_eq!(batches[0].schema(), TableKind::Problems.schema());
    assert_eq!(batches[0].column_by_name("gold").unwrap().null_count(), 3);
    assert_eq!(batches[0].column_by_name("prompt").unwrap().data_type(), &DataType::Utf8);
}

#[test]
fn null_in_a_required_column_names_the_row() {
    let s = Scratch::new();
    let f = s.path("nulls.parquet");
    let three = |v: &'static str| large(&[Some(v), Some(v), Some(v)]);
    write_parquet(
        &f,
        vec![
            ("id", three("x")),
            ("source", three("s")),
            ("domain", three("math")),
            ("prompt", large(&[Some("1+1"), Some("2+2"), None])),
            ("metadata", three("{}")),
        ],
    );
    let input = Input::open(&f).unwrap();
    let err = input.batches(TableKind::Problems, 0..3).find_map(Result::err).expect("an error");
    assert_eq!(
        err.to_string(),
        format!("{}, row 2, column `prompt`: is null, but the column is required", f.display())
    );
}

#[test]
fn jsonl_rows_are_checked_against_the_schema_down_to_nested_columns() {
    let s = Scratch::new();
    let good = r#"{"id": "a", "source": "s", "domain": "math", "prompt": "p", "gold": "1", "steps": [{"text": "1 = 1", "calcs": []}], "metadata": "{}"}"#;
    let bad = r#"{"id": "b", "source": "s", "domain": "math", "prompt": "p", "steps": [{"text": 7, "calcs": []}], "metadata": "{}"}"#;
    let f = s.write("p.jsonl", format!("{good}\n{bad}\n"));
    let input = Input::open(&f).unwrap();
    let err = input.batches(TableKind::Problems, 0..2).find_map(Result::err).expect("an error");
    assert_eq!(err.to_string(), format!("{}:2, column `steps[0].text`: expected string, found a number", f.display()));
    let rows: Vec<forge::dataset::Problem> =
        input.rows_of(TableKind::Problems, 0..1).flat_map(|b| b.unwrap()).collect();
    assert_eq!(rows[0].steps.as_ref().unwrap()[0].text, "1 = 1");
}

#[test]
fn sharded_runs_together_equal_the_unsharded_run() {
    let s = Scratch::new();
    let whole = s.path("whole");
    let parts = s.path("parts");
    ok(&[&"synth", &"igsm", &"--n", &"1000", &"--seed", &"5", &"-o", &whole, &"-q"]);
    for i in 0..3 {
        let shard = format!("{i}/3");
        if i == 1 {
            let (code, _, stderr) = run(&[&"stats", &parts]);
            assert_eq!(code, 2);
            assert!(stderr.contains("the dataset is incomplete: shard(s) 1, 2 of 3 have not finished"), "{stderr}");
        }
        ok(&[&"synth", &"igsm", &"--n", &"1000", &"--seed", &"5", &"--shard", &shard, &"-o", &parts, &"-q"]);
    }
    assert_eq!(problems(&parts), problems(&whole));
    // Import slices its input the same way.
    let src = whole.join("part-00000.parquet");
    let imported = s.path("imported");
    for i in 0..4 {
        let shard = format!("{i}/4");
        ok(&[
            &"import",
            &"--prompt-col",
            &"prompt",
            &"--id-col",
            &"id",
            &"--shard",
            &shard,
            &src,
            &"-o",
            &imported,
            &"-q",
        ]);
    }
    let ids: Vec<String> = problems(&imported).into_iter().map(|p| p.id).collect();
    let expected: Vec<String> = problems(&whole).into_iter().map(|p| p.id).collect();
    assert_eq!(ids, expected);
}

#[test]
fn rerun_is_up_to_date_and_a_different_command_needs_overwrite() {
    let s = Scratch::new();
    let d = s.path("d");
    ok(&[&"synth", &"arith", &"--n", &"100", &"-o", &d, &"-q"]);
    let (code, _, stderr) = run(&[&"synth", &"arith", &"--n", &"100", &"-o", &d]);
    assert_eq!(code, 0);
    assert!(stderr.contains("is up to date (100 rows)"), "{stderr}");
    let (code, _, stderr) = run(&[&"synth", &"arith", &"--n", &"200", &"-o", &d]);
    assert_eq!(code, 2);
    assert!(stderr.contains("hint: pass `--overwrite`"), "{stderr}");
    ok(&[&"synth", &"arith", &"--n", &"200", &"--overwrite", &"-o", &d, &"-q"]);
    assert_eq!(problems(&d).len(), 200);
    // Never deletes what it did not write.
    std::fs::write(d.join("notes.txt"), "mine").unwrap();
    let (code, _, stderr) = run(&[&"synth", &"arith", &"--n", &"300", &"--overwrite", &"-o", &d]);
    assert_eq!(code, 2);
    assert!(stderr.contains("is not a forge dataset (it holds `notes.txt`)"), "{stderr}");
    assert!(d.join("notes.txt").exists());
}

/// SIGKILL a run once `kills[0]` shards are on disk, rerun and kill it again at `kills[1]` shards, and so on;
/// check nothing looks finished that is not, then rerun to the end: the shards finished before the last kill
/// are kept as they were, and the result equals an uninterrupted run byte for byte.
pub fn kill_and_resume(args: &[&str], out: &Path, clean: &Path, rows_per_shard: i64, kills: &[usize]) {
    for &shards in kills {
        let mut child = forge().args(args).arg("-o").arg(out).arg("-q").spawn().unwrap();
        let started = Instant::now();
        while crate::util::part_files(out).len() < shards {
            assert!(started.elapsed() < Duration::from_secs(60), "no shard {shards} appeared");
            if child.try_wait().unwrap().is_some() {
                panic!("the run finished before shard {shards}; make it longer");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(!out.join("manifest.json").exists(), "a killed run must not look finished");
    let (code, _, stderr) = run(&[&"stats", &out]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unfinished forge run"), "{stderr}");
    let kept: Vec<(String, u64)> = shard_bytes(out)
        .into_iter()
        .map(|(name, _)| {
            let file = std::fs::File::open(out.join(&name)).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(file).expect("a complete Parquet file");
            assert_eq!(
                parquet::file::reader::FileReader::metadata(&reader).file_metadata().num_rows(),
                rows_per_shard,
                "{name}"
            );
            let inode = std::fs::metadata(out.join(&name)).unwrap().ino();
            (name, inode)
        })
        .collect();
    assert!(!kept.is_empty());

    let mut rerun: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
    rerun.extend([&"-o" as &dyn AsRef<std::ffi::OsStr>, &out, &"-q"]);
    ok(&rerun);
    for (name, inode) in &kept {
        assert_eq!(std::fs::metadata(out.join(name)).unwrap().ino(), *inode, "{name} was rewritten");
    }
    let mut clean_args = rerun.clone();
    clean_args[rerun.len() - 2] = &clean;
    ok(&clean_args);
    assert_eq!(shard_bytes(out), shard_bytes(clean));
    if out.join("rejected").exists() {
        assert_eq!(shard_bytes(&out.join("rejected")), shard_bytes(&clean.join("rejected")));
    }
}

#[test]
fn killed_synth_resumes_without_redoing_or_duplicating() {
    let s = Scratch::new();
    let args = ["synth", "igsm", "--n", "100000", "--ops", "8", "--rows-per-shard", "5000"];
    kill_and_resume(&args, &s.path("killed"), &s.path("clean"), 5000, &[1]);
}

#[test]
fn killed_import_resumes_without_redoing_or_duplicating() {
    let s = Scratch::new();
    let mut text = String::new();
    for i in 0..150_000 {
        text.push_str(&format!("{{\"q\": \"What is {i} + {i}?\", \"a\": \"{}\", \"n\": {i}}}\n", 2 * i));
    }
    let f = s.write("big.jsonl", text);
    let f = f.to_str().unwrap();
    let args = ["import", "--prompt-col", "q", "--answer-col", "a", f, "--rows-per-shard", "5000"];
    kill_and_resume(&args, &s.path("killed"), &s.path("clean"), 5000, &[1]);
}

/// A second process writing an output (a shard-run of it) that a first is writing stops at once, naming
/// the first (pid and host), while another shard of the same output runs beside it; once the first is
/// gone, the output is free again and no lock file stays behind.
#[test]
fn a_second_writer_of_one_output_is_told_who_holds_it() {
    use forge::dataset::{DatasetWriter, Provenance, Shard, Start, WriteOptions};
    let s = Scratch::new();
    let dir = s.path("out");
    let provenance = Provenance::start("test", &[], &"held", vec![]);
    let shard: Shard = "0/2".parse().unwrap();
    let Ok(Start::Write(held)) =
        DatasetWriter::create(&dir, TableKind::Problems, shard, &WriteOptions::default(), provenance)
    else {
        panic!("a fresh directory is written")
    };
    let (code, _, stderr) = run(&[&"synth", &"arith", &"--n", &"6", &"--shard", &"0/2", &"-o", &dir]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("is being written by process {} on host", std::process::id())), "{stderr}");
    ok(&[&"synth", &"arith", &"--n", &"6", &"--shard", &"1/2", &"-o", &dir, &"-q"]);
    drop(held);
    ok(&[&"synth", &"arith", &"--n", &"6", &"--shard", &"0/2", &"-o", &dir, &"-q"]);
    assert_eq!(Input::open(&dir).unwrap().rows(), 6);
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(!names.iter().any(|n| n.starts_with(".forge-lock")), "{names:?}");
}

/// A Hugging Face dataset directory (`data/train-*.parquet` shards, a README card) reads as one dataset,
/// the shards in name order.
#[test]
fn hf_nested_data_layout_reads_as_one_dataset() {
    let s = Scratch::new();
    let dir = s.path("hf");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("README.md"), "---\nconfigs: []\n---\n").unwrap();
    for (i, ids) in [["a", "b"], ["c", "d"]].iter().enumerate() {
        let column = |v: &'static str| large(&[Some(v), Some(v)]);
        write_parquet(
            &dir.join(format!("data/train-0000{i}-of-00002.parquet")),
            vec![
                ("id", large(&[Some(ids[0]), Some(ids[1])])),
                ("source", column("hf")),
                ("domain", column("math")),
                ("prompt", column("1+1")),
                ("metadata", column("{}")),
            ],
        );
    }
    let rows = problems(&dir);
    assert_eq!(rows.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
}
