//! The dependency graph between the crate's top-level modules, computed from the source: every
//! `crate::<module>` path (in `use` lines and inline) in a file under `src/<module>` is an edge.
//! Dependencies point one way; a cycle fails this test unless it is listed in `ALLOWED_CYCLES`
//! and the reason stands in the doc comment of the module named first. It also keeps source
//! files short: one over [`MAX_LINES`] lines says why in its leading doc comment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles that stay, each with the module whose doc comment gives the reason and a phrase of it.
const ALLOWED_CYCLES: &[(&[&str], &str, &str)] = &[];

/// Longer source files carry a line `//! Over 700 lines: <reason>` in their leading doc comment.
const MAX_LINES: usize = 700;

/// Files (or folders, ending in `/`) being split now, exempt until that work lands, with who is
/// splitting them.
const BEING_SPLIT: &[(&str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/incident/card.rs` → `incident`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The modules a source text names as `crate::<module>`, with comments left out.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::c}`: each first segment in the group.
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The reason a long file gives in its leading doc comment, if any.
fn length_reason(text: &str) -> Option<&str> {
    text.lines()
        .take_while(|l| l.starts_with("//!"))
        .find_map(|l| l.strip_prefix("//! Over 700 lines:"))
        .map(str::trim)
        .filter(|reason| !reason.is_empty())
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let entry = edges.entry(from.clone()).or_default();
        for to in referenced(&text) {
            if to != from {
                entry.insert(to);
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, node: &'a str) {
        let n = w.index.len();
        w.index.insert(node, n);
        w.low.insert(node, n);
        w.stack.push(node);
        for next in w.edges.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !w.edges.contains_key(next) {
                continue;
            }
            if !w.index.contains_key(next) {
                visit(w, next);
                let low = w.low[node].min(w.low[next]);
                w.low.insert(node, low);
            } else if w.stack.contains(&next) {
                let low = w.low[node].min(w.index[next]);
                w.low.insert(node, low);
            }
        }
        if w.low[node] == w.index[node] {
            let mut component = BTreeSet::new();
            while let Some(top) = w.stack.pop() {
                component.insert(top.to_string());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                w.found.push(component);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !w.index.contains_key(node.as_str()) {
            visit(&mut w, node);
        }
    }
    w.found
}

#[test]
fn the_reader_finds_grouped_and_inline_paths() {
    let text = "use crate::{auth::Auth, store};\nlet x = crate::ids::new_id();\n// crate::web in a comment\nfoo_crate::bar";
    let found: Vec<String> = referenced(text).into_iter().collect();
    assert_eq!(found, ["auth", "ids", "store"]);
}

#[test]
fn top_level_modules_form_no_new_cycle() {
    let edges = graph();
    assert!(
        edges.contains_key("incident") && edges["incident"].contains("store"),
        "{edges:?}"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut unexplained = Vec::new();
    for component in cycles(&edges) {
        let allowed = ALLOWED_CYCLES.iter().find(|(members, _, _)| {
            members.len() == component.len() && members.iter().all(|m| component.contains(*m))
        });
        match allowed {
            Some((_, module, phrase)) => {
                let file = [src.join(format!("{module}.rs")), src.join(module).join("mod.rs")]
                    .into_iter()
                    .find(|p| p.exists())
                    .unwrap();
                let text = std::fs::read_to_string(&file).unwrap();
                let doc: String = text
                    .lines()
                    .filter(|l| l.starts_with("//!"))
                    .collect::<Vec<_>>()
                    .join("\n");
                assert!(
                    doc.contains(phrase),
                    "{module}'s doc must give the reason for the cycle {component:?}"
                );
            }
            None => unexplained.push(component),
        }
    }
    assert!(
        unexplained.is_empty(),
        "cycles between top-level modules: {unexplained:?}\nedges: {edges:#?}"
    );
}

#[test]
fn the_length_reason_is_read_from_the_leading_doc_comment_only() {
    let given = "//! Owns x.\n//!\n//! Over 700 lines: one type's whole life cycle.\n\nfn x() {}";
    assert_eq!(length_reason(given), Some("one type's whole life cycle."));
    assert_eq!(length_reason("//! Owns x.\n//! Over 700 lines:\nfn x() {}"), None);
    assert_eq!(
        length_reason("//! Owns x.\n\n//! Over 700 lines: too late.\n"),
        None
    );
    assert_eq!(length_reason("/// Over 700 lines: not the module's doc.\n"), None);
}

#[test]
fn no_source_file_over_700_lines_without_a_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    let mut unexplained = Vec::new();
    for file in &files {
        let name = file
            .strip_prefix(root)
            .unwrap()
            .components()
            .map(|c| c.as_os_str().to_str().unwrap())
            .collect::<Vec<_>>()
            .join("/");
        if BEING_SPLIT
            .iter()
            .any(|(path, _)| name == *path || (path.ends_with('/') && name.starts_with(path)))
        {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text.lines().count();
        if lines > MAX_LINES && length_reason(&text).is_none() {
            unexplained.push(format!("{name} ({lines} lines)"));
        }
    }
    assert!(files.len() > 50, "{} source files found", files.len());
    assert!(
        unexplained.is_empty(),
        "split these, or give the reason in a `//! Over 700 lines: …` line of their leading doc \
         comment: {unexplained:#?}"
    );
}
