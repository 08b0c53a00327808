//! JSON values and Arrow arrays: checking a JSON row against a table schema (so a wrong type is reported
//! with its line and column, before Arrow sees it), and converting rows to and from record batches.

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, SchemaRef};
use serde::Serialize;
use serde_json::{Map, Value};

use super::schema::type_name;
use crate::error::{Error, Result};

/// Rows (typed structs or checked JSON objects) to one record batch of `schema`.
pub fn to_batch<T: Serialize>(schema: &SchemaRef, rows: &[T]) -> Result<RecordBatch> {
    let batch = serde_arrow::to_record_batch(schema.fields(), &rows)
        .map_err(|e| Error::usage(format!("cannot convert rows to Arrow: {e}")))?;
    // serde_arrow builds the batch's schema from the fields, without the schema's metadata.
    Ok(batch.with_schema(schema.clone()).expect("same fields"))
}

/// A record batch of any schema to JSON objects, one per row.
pub(crate) fn to_objects(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>> {
    serde_arrow::from_record_batch(batch)
        .map_err(|e| Error::usage(format!("cannot read these Arrow columns as JSON: {e}")))
}

/// A mismatch between a JSON row and a schema: the column path (`steps[2].text`) and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub column: String,
    pub message: String,
}

/// Check one JSON object against `fields`; keys not in the schema are ignored.
pub(crate) fn check_object(object: &Map<String, Value>, fields: &Fields, prefix: &str) -> Result<(), Mismatch> {
    for field in fields {
        let path = if prefix.is_empty() { field.name().clone() } else { format!("{prefix}.{}", field.name()) };
        match object.get(field.name()) {
            None if !field.is_nullable() => {
                return Err(Mismatch { column: path, message: "required column is missing".into() });
            }
            None => {}
            Some(value) => check_value(value, field, &path)?,
        }
    }
    Ok(())
}

fn check_value(value: &Value, field: &Field, path: &str) -> Result<(), Mismatch> {
    let mismatch = |message: String| Err(Mismatch { column: path.to_string(), message });
    let expected = field.data_type();
    match (value, expected) {
        (Value::Null, _) if field.is_nullable() => Ok(()),
        (Value::Null, _) => mismatch("is null, but the column is required".into()),
        (Value::String(_), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => Ok(()),
        (Value::Bool(_), DataType::Boolean) => Ok(()),
        (Value::Number(n), t) if t.is_integer() => {
            let fits = match t {
                DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                    n.as_u64().is_some_and(|v| t != &DataType::UInt32 || v <= u64::from(u32::MAX))
                }
                _ => n.as_i64().is_some(),
            };
            if fits { Ok(()) } else { mismatch(format!("expected {}, found {n}", type_name(t))) }
        }
        (Value::Number(_), t) if t.is_floating() => Ok(()),
        (Value::Array(items), DataType::List(item) | DataType::LargeList(item)) => {
            for (i, v) in items.iter().enumerate() {
                check_value(v, item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Object(object), DataType::Struct(fields)) => check_object(object, fields, path),
        (value, expected) => mismatch(format!("expected {}, found {}", type_name(expected), json_type_name(value))),
    }
}

/// How a JSON value's type is named in error messages (`a string`, `a number`, ...).
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Calc, Problem, Step, problems_schema};

    fn problem() -> Problem {
        Problem {
            id: "p1".into(),
            source: "test".into(),
            domain: "math".into(),
            prompt: "1+1?".into(),
            gold: Some("2".into()),
            tests: None,
            steps: Some(vec![Step {
                text: "1 + 1 = 2".into(),
                calcs: vec![Calc { expr: "1 + 1".into(), result: "2".into() }],
            }]),
            metadata: "{}".into(),
        }
    }

    #[test]
    fn typed_rows_and_json_rows_make_the_same_batch() {
        let schema = problems_schema();
        let typed = to_batch(&schema, &[problem()]).unwrap();
        let json = serde_json::to_value(problem()).unwrap();
        check_object(json.as_object().unwrap(), schema.fields(), "").unwrap();
        let from_json = to_batch(&schema, &[json]).unwrap();
        assert_eq!(typed, from_json);
        let back: Vec<Problem> = serde_arrow::from_record_batch(&typed).unwrap();
        assert_eq!(back, vec![problem()]);
        let objects = to_objects(&typed).unwrap();
        assert_eq!(objects[0]["steps"][0]["calcs"][0]["result"], "2");
    }

    #[test]
    fn mismatch_names_the_nested_column() {
        let schema = problems_schema();
        let mut json = serde_json::to_value(problem()).unwrap();
        json["steps"][0]["calcs"][0]["expr"] = Value::from(5);
        let err = check_object(json.as_object().unwrap(), schema.fields(), "").unwrap_err();
        assert_eq!(err.column, "steps[0].calcs[0].expr");
        assert_eq!(err.message, "expected string, found a number");

        let mut json = serde_json::to_value(problem()).unwrap();
        json.as_object_mut().unwrap().remove("prompt");
        let err = check_object(json.as_object().unwrap(), schema.fields(), "").unwrap_err();
        assert_eq!((err.column.as_str(), err.message.as_str()), ("prompt", "required column is missing"));
    }
}
