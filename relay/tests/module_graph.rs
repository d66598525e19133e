//! Dependencies inside `relay/src` point one way: the graph of which module imports which,
//! read from the `crate::` and `super::` paths of the source (test modules excluded), has no
//! cycle.
//!
//! A node is a top-level module (`server`, `kafka`, ...), except that a subsystem's
//! `config.rs` and `error.rs` are nodes of their own (`server::config`): a subsystem's
//! configuration and errors are the layer that `crate::config` and `crate::error` compose, and
//! they must not reach back into the subsystem's machinery. Run with `--nocapture` to print
//! the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The node a file belongs to, from its path relative to `src` (`server/config.rs` ->
/// `server::config`, `upstream/pool.rs` -> `upstream`, `app.rs` -> `app`).
fn node_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [top] => top.clone(),
        [top, leaf] if leaf == "config" || leaf == "error" => format!("{top}::{leaf}"),
        [top, ..] => top.clone(),
        [] => unreachable!(),
    }
}

/// The source without `#[cfg(test)]` items (test modules may import anything).
fn without_tests(src: &str) -> String {
    let mut out = String::new();
    let mut lines = src.lines().peekable();
    while let Some(l) = lines.next() {
        if l.trim() == "#[cfg(test)]" {
            // Skip the item that follows: one line (`mod tests;`) or a braced block.
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                opened |= l.contains('{');
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = l.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Module paths named after `prefix` (`crate::` or `super::`), including each name of a
/// `prefix{a, b::c}` group.
fn paths_after(src: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                found.push(segments(item.trim()));
            }
        } else {
            found.push(segments(rest));
        }
    }
    found
}

/// The leading `a::b::c` identifiers of `s`.
fn segments(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segs
}

/// The node a path names, given the set of nodes.
fn target(segs: &[String], nodes: &BTreeSet<String>) -> Option<String> {
    let top = segs.first()?;
    if let Some(second) = segs.get(1) {
        let sub = format!("{top}::{second}");
        if nodes.contains(&sub) {
            return Some(sub);
        }
    }
    nodes.contains(top).then(|| top.clone())
}

/// Builds the graph: node -> the nodes it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<(PathBuf, String)> = files
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_path_buf();
            let node = node_of(&rel);
            (rel, node)
        })
        .collect();
    let nodes: BTreeSet<String> = files.iter().map(|(_, n)| n.clone()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, node) in &files {
        let text = without_tests(&std::fs::read_to_string(src.join(rel)).unwrap());
        let edges = g.entry(node.clone()).or_default();
        for segs in paths_after(&text, "crate::") {
            if let Some(t) = target(&segs, &nodes) {
                edges.insert(t);
            }
        }
        // `super::x` from `top/file.rs` means `top::x`; from `top/a/b.rs`, still inside `top`.
        let top = rel
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .replace(".rs", "");
        if rel.components().count() == 2 {
            for segs in paths_after(&text, "super::") {
                let mut full = vec![top.clone()];
                full.extend(segs);
                if let Some(t) = target(&full, &nodes) {
                    edges.insert(t);
                }
            }
        }
        edges.remove(node);
    }
    g
}

/// Every strongly connected component with more than one node (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        g: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn module_imports_form_no_cycle() {
    let g = graph();
    for (node, deps) in &g {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("{node:18} -> {}", deps.join(", "));
    }
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "import cycles between relay's modules (each line is a set of modules that reach each other): {found:#?}"
    );
}

#[test]
fn the_problem_collector_and_subsystem_configs_are_lower_layers() {
    let g = graph();
    assert!(
        g["problems"].is_empty(),
        "problems must be a leaf; it imports {:?}",
        g["problems"]
    );
    for (node, deps) in &g {
        if node.ends_with("::config") || node.ends_with("::error") {
            for d in deps {
                assert!(
                    d.ends_with("::config") || d.ends_with("::error") || d == "problems",
                    "{node} imports {d}: a subsystem's config and error types may use only other config/error modules and `problems`"
                );
            }
        }
    }
}

#[test]
fn the_graph_reader_sees_groups_and_skips_tests() {
    let src = "use crate::{a::b, c};\nfn f() { crate::d::e(); }\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\n";
    let text = without_tests(src);
    let found = paths_after(&text, "crate::");
    assert_eq!(
        found,
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["c".to_string()],
            vec!["d".to_string(), "e".to_string()],
        ]
    );
}
