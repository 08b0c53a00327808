//! Settings files: a stage's config struct is read from TOML (`--config filter.toml`, a pipeline's
//! stage table) and flags given on the command line override it, so a file and a command line say the
//! same thing in the same words.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Location, Result};

/// Read `T` from the TOML file `path`, then apply the values of `cli` whose flags were given on the
/// command line (`given`: clap argument ids, which are the config's field names).
pub fn load<T: Serialize + DeserializeOwned>(path: &Path, cli: &T, given: &[String]) -> Result<T> {
    let text = fs_err::read_to_string(path)?;
    let file: toml::Table = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    let mut base = serde_json::to_value(file).expect("TOML is JSON-representable");
    let cli = serde_json::to_value(cli).expect("serialisable");
    for id in given {
        if let Some((path_in, value)) = find(&cli, id, &mut Vec::new()) {
            set(&mut base, &path_in, value.clone());
        }
    }
    serde_json::from_value(base).map_err(|e| {
        Error::data(Location::file(path), format!("{e}"))
            .with_hint("`--show-config` prints every setting with its default")
    })
}

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let mut location = Location::file(path);
    if let Some(span) = e.span() {
        location.line = Some(text[..span.start].matches('\n').count() as u64 + 1);
    }
    Error::data(location, e.message().to_string())
}

/// Where key `id` sits in `value`: a dotted id (`minhash.seed`) is a path, a plain one is looked up at
/// the top level first, then in nested tables.
pub(crate) fn find<'a>(value: &'a Value, id: &str, path: &mut Vec<String>) -> Option<(Vec<String>, &'a Value)> {
    if id.contains('.') {
        let keys: Vec<String> = id.split('.').map(str::to_string).collect();
        let found = keys.iter().try_fold(value, |v, k| v.get(k))?;
        return Some((keys, found));
    }
    let map = value.as_object()?;
    if let Some(v) = map.get(id) {
        let mut p = path.clone();
        p.push(id.to_string());
        return Some((p, v));
    }
    for (key, v) in map {
        if v.is_object() {
            path.push(key.clone());
            let found = find(v, id, path);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

fn set(base: &mut Value, path: &[String], value: Value) {
    let mut at = base;
    for key in &path[..path.len() - 1] {
        let map = at.as_object_mut().expect("objects along the path");
        at = map.entry(key.clone()).or_insert_with(|| Value::Object(Default::default()));
    }
    if let Some(map) = at.as_object_mut() {
        map.insert(path[path.len() - 1].clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        bands: u32,
        rows: u32,
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        near_dup: bool,
        max: Option<u32>,
        minhash: Inner,
    }

    #[test]
    fn flags_given_override_the_file_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        fs_err::write(&path, "near_dup = true\nmax = 3\n[minhash]\nbands = 20\nrows = 5\n").unwrap();
        let cli = Outer { near_dup: false, max: None, minhash: Inner { bands: 14, rows: 8 } };
        let got = load(&path, &cli, &["rows".into()]).unwrap();
        assert_eq!(got, Outer { near_dup: true, max: Some(3), minhash: Inner { bands: 20, rows: 8 } });
        let got = load(&path, &cli, &["minhash.bands".into(), "near_dup".into()]).unwrap();
        assert_eq!(got, Outer { near_dup: false, max: Some(3), minhash: Inner { bands: 14, rows: 5 } });
        fs_err::write(&path, "near_dup = true\nbandz = 3\n").unwrap();
        let err = load::<Outer>(&path, &cli, &[]).unwrap_err().to_string();
        assert!(err.contains("bandz"), "{err}");
        fs_err::write(&path, "near_dup = \n").unwrap();
        let err = load::<Outer>(&path, &cli, &[]).unwrap_err().to_string();
        assert!(err.contains("f.toml:1"), "{err}");
    }
}
