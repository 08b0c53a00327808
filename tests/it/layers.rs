//! The layer rule of README's Layout section, read from README itself: a module imports (`crate::…`) only
//! from layers below its own, never from a sibling of its layer (no stage imports another stage). Test
//! modules (`#[cfg(test)] mod tests`) are not scanned.

use std::collections::BTreeMap;
use std::path::Path;

/// README's layer diagram: (layer name, its modules), top layer first.
fn layers() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme.split("<!-- layers -->").nth(1).expect("README has a `<!-- layers -->` block");
    let block = block.split("```text").nth(1).and_then(|b| b.split("```").next()).expect("a text block");
    block
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, modules)| (name.trim().to_string(), modules.split_whitespace().map(str::to_string).collect()))
        .collect()
}

/// The top-level modules `text` names after `crate::`, in paths and in `crate::{a, b::c}` groups.
fn imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // the top-level names of the group: those at brace depth 0
            let (mut depth, mut start) = (0, 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(first_ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(first_ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(first_ident(rest));
        }
    }
    found.retain(|m| m.starts_with(|c: char| c.is_ascii_lowercase()));
    found
}

fn first_ident(s: &str) -> String {
    s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// `src/`'s files by top-level module, test modules cut off.
fn sources() -> BTreeMap<String, Vec<(String, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top =
                rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            out.entry(top).or_default().push((rel.display().to_string(), text));
        }
    }
    out
}

#[test]
fn modules_import_only_from_layers_below() {
    let layers = layers();
    assert!(layers.len() >= 5, "README's layer block has too few layers: {layers:?}");
    let n = layers.len();
    let rank: BTreeMap<&str, usize> =
        layers.iter().enumerate().flat_map(|(i, (_, ms))| ms.iter().map(move |m| (m.as_str(), n - i))).collect();
    let sources = sources();
    let mut problems = Vec::new();
    for (module, files) in &sources {
        if module == "lib" || module == "main" {
            continue; // the crate root declares the modules; main is the binary's entry
        }
        let Some(&own) = rank.get(module.as_str()) else {
            problems.push(format!("`src/{module}` is in no layer of README's diagram"));
            continue;
        };
        for (file, text) in files {
            for used in imports(text) {
                if used == *module {
                    continue;
                }
                match rank.get(used.as_str()) {
                    // a crate-root item (`crate::Context`, a macro): the root is beneath every layer
                    None if !sources.contains_key(&used) => {}
                    Some(&r) if r < own => {}
                    _ => problems.push(format!("src/{file} imports `{used}`, which is not below `{module}`'s layer")),
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "layer rule broken:\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_finds_paths_and_groups() {
    let text = "use crate::dataset::{A, B};\nuse crate::{error::Error, model::{chat::M, tiny}, Context};\nlet x = crate::filter::run();";
    assert_eq!(imports(text), ["dataset", "error", "model", "filter"]);
}
