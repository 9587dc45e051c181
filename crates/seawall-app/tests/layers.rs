//! The workspace's shape, checked over the sources: the layers point one
//! way (binaries → `seawall-app` → the libraries), and inside every library
//! and binary no module imports, directly or through others, a module that
//! imports it: each crate reads as floors.
//!
//! Modules are files (`a/b.rs` and `a/b/mod.rs` are `a::b`); a module names
//! another with a `crate::` or `super::` path, or a child by its name. Test
//! code (`mod tests` blocks and `#[cfg(test)]` files) is left out: nothing
//! imports it, so it closes no circle of the code that ships.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `src`, by module path (`""` for the crate root).
fn modules(src: &Path) -> BTreeMap<String, String> {
    sources(src)
        .into_iter()
        .map(|(module, (_, text))| (module, text))
        .collect()
}

/// Every `.rs` file under `src`, by module path: its path relative to the
/// crate's directory (`src/a/b.rs`) and its text.
fn sources(src: &Path) -> BTreeMap<String, (String, String)> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<String, (String, String)>) {
        for entry in std::fs::read_dir(dir).expect("a source directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, src, out);
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut segments: Vec<String> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segments.last().is_some_and(|last| last == "mod") {
                segments.pop();
            }
            if segments == ["lib"] || segments == ["main"] {
                segments.clear();
            }
            let text = std::fs::read_to_string(&path).expect("a readable source");
            let file = Path::new("src").join(path.strip_prefix(src).expect("under src"));
            out.insert(segments.join("::"), (file.display().to_string(), text));
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The code of a file that ships: its `mod tests { … }` block (private,
/// or shared with the tests of a sibling as `pub(super)` or `pub(crate)`)
/// and comments left out (a `mod tests;` declaration ends nothing: the
/// file goes on).
fn shipped(text: &str) -> String {
    let end = ["", "pub(super) ", "pub(crate) "]
        .iter()
        .filter_map(|visibility| text.find(&format!("#[cfg(test)]\n{visibility}mod tests {{")))
        .min()
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules declared `#[cfg(test)] mod name;` in `text`.
fn test_children(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "#[cfg(test)]")
        .filter_map(|pair| {
            let declaration = pair[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            declaration
                .strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_owned)
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The path after `text[start..]`: `a::b::c`, or each item of a `{…}`
/// group, as segment lists.
fn paths_at(text: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        segments.push(ident);
        match rest.strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![segments],
        }
    }
    let Some(group) = rest.strip_prefix('{') else {
        return vec![segments];
    };
    let mut depth = 0;
    let mut items = Vec::new();
    let mut item = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    items.push(item);
    items
        .iter()
        .flat_map(|item| {
            let item = item.trim();
            paths_at(item).into_iter().map(|tail| {
                let mut path = segments.clone();
                path.extend(tail);
                path
            })
        })
        .collect()
}

/// The modules `module` names in `code`.
fn references(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parent: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        let mut segments: Vec<String> = module.split("::").map(str::to_owned).collect();
        segments.pop();
        segments
    };
    let own: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut paths: Vec<Vec<String>> = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (at, _) in code.match_indices(prefix) {
            if code[..at].ends_with(|c: char| is_ident(c) || c == ':') {
                continue;
            }
            for tail in paths_at(&code[at + prefix.len()..]) {
                let mut path = base.clone();
                path.extend(tail);
                paths.push(path);
            }
        }
    }
    // A child named by its own name: `child::item`.
    for child in known.iter().filter_map(|candidate| {
        let rest = if own.is_empty() {
            candidate.as_str()
        } else {
            candidate.strip_prefix(module)?.strip_prefix("::")?
        };
        (!rest.is_empty() && !rest.contains("::")).then_some(rest)
    }) {
        let needle = format!("{child}::");
        let named = code
            .match_indices(&needle)
            .any(|(at, _)| !code[..at].ends_with(|c: char| is_ident(c) || c == ':'));
        if named {
            let mut path = own.clone();
            path.push(child.to_owned());
            paths.push(path);
        }
    }
    paths
        .into_iter()
        .filter_map(|path| {
            (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|candidate| known.contains(candidate))
        })
        .filter(|target| target != module)
        .collect()
}

/// The shipped modules of the crate under `src`, each with the modules it
/// names, and the file each lives in.
struct Imports {
    edges: BTreeMap<String, BTreeSet<String>>,
    files: BTreeMap<String, String>,
}

fn imports(src: &Path) -> Imports {
    let all = sources(src);
    let tests: BTreeSet<String> = all
        .iter()
        .flat_map(|(module, (_, text))| {
            test_children(text).into_iter().map(move |child| {
                if module.is_empty() {
                    child
                } else {
                    format!("{module}::{child}")
                }
            })
        })
        .collect();
    let shipped_modules: BTreeMap<&String, String> = all
        .iter()
        .filter(|(module, _)| !module.is_empty() && !tests.contains(*module))
        .map(|(module, (_, text))| (module, shipped(text)))
        .collect();
    let known: BTreeSet<String> = shipped_modules.keys().map(|m| (*m).clone()).collect();
    let edges = shipped_modules
        .iter()
        .map(|(module, code)| ((*module).clone(), references(module, code, &known)))
        .collect();
    let files = all
        .into_iter()
        .map(|(module, (file, _))| (module, file))
        .collect();
    Imports { edges, files }
}

/// The circles among the crate's shipped modules, each as its modules.
fn circles(src: &Path) -> Vec<Vec<String>> {
    components(&imports(src).edges)
}

/// Each circle of the crate under `src` told as a maintainer fixes it: a
/// module, one it imports, and the way that one imports it back, by file.
fn explained_circles(src: &Path) -> Vec<String> {
    let Imports { edges, files } = imports(src);
    let file = |module: &str| format!("`{}`", files[module]);
    components(&edges)
        .into_iter()
        .map(|component| {
            let inside: BTreeSet<&String> = component.iter().collect();
            let first = &component[0];
            // The shortest way back to `first` from each module it imports
            // inside the circle; the shortest of those is told.
            let back = edges[first]
                .iter()
                .filter(|next| inside.contains(next))
                .filter_map(|next| way(&edges, &inside, next, first))
                .min_by_key(Vec::len)
                .expect("a circle leads back to each of its modules");
            let through: Vec<String> = back[1..back.len() - 1]
                .iter()
                .map(|module| file(module))
                .collect();
            let mut told = format!(
                "{} imports {}, which imports it back",
                file(first),
                file(&back[0])
            );
            if !through.is_empty() {
                told.push_str(&format!(" through {}", through.join(" → ")));
            }
            if component.len() > back.len() {
                told.push_str(&format!(
                    " (the circle holds {} modules: {})",
                    component.len(),
                    component.join(", ")
                ));
            }
            told
        })
        .collect()
}

/// The shortest chain of imports from `from` to `to` among `inside`, both
/// ends included.
fn way(
    edges: &BTreeMap<String, BTreeSet<String>>,
    inside: &BTreeSet<&String>,
    from: &String,
    to: &String,
) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut chain = vec![at.clone()];
            let mut step = at;
            while let Some(previous) = came_from.get(step) {
                chain.push((*previous).clone());
                step = previous;
            }
            chain.reverse();
            return Some(chain);
        }
        for next in edges.get(at).into_iter().flatten() {
            if inside.contains(next) && seen.insert(next) {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The strongly connected components of more than one module.
fn components(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components.
    struct Search<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        found: Vec<Vec<String>>,
    }
    impl Search<'_> {
        fn visit(&mut self, node: &str) {
            let at = self.index.len();
            self.index.insert(node.to_owned(), at);
            self.low.insert(node.to_owned(), at);
            self.stack.push(node.to_owned());
            for next in self.edges.get(node).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node.to_owned(), low);
                } else if self.stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node.to_owned(), low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    let done = top == node;
                    component.push(top);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !search.index.contains_key(node) {
            search.visit(node);
        }
    }
    search.found
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let mut found = Vec::new();
    for krate in [
        "crates/seawall-perfmon",
        "crates/seawall-ratelimit",
        "crates/seawall-cache",
        "crates/seawall-queue",
        "crates/seawall-testkit",
        "crates/seawall-history",
        "crates/seawall-app",
        "bins/seawall-api",
        "bins/seawall-worker",
    ] {
        for circle in explained_circles(&workspace().join(krate).join("src")) {
            found.push(format!("{krate}: {circle}"));
        }
    }
    assert!(
        found.is_empty(),
        "import circles inside a crate (move what both need to a module below them):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_circle() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("jobs")).expect("mkdir");
    let write = |path: &str, text: &str| std::fs::write(src.join(path), text).expect("write");
    write("lib.rs", "mod jobs;\nmod routes;\nmod state;\n");
    write("jobs/mod.rs", "mod files;\npub use files::run;\n");
    write("jobs/files.rs", "use crate::routes::{now, other::x};\n");
    write("routes.rs", "use crate::state::State;\n");
    write(
        "state.rs",
        "// crate::nothing\nuse super::jobs::Throughput;\n",
    );
    let found = circles(src);
    assert_eq!(
        found,
        [["jobs", "jobs::files", "routes", "state"]],
        "{found:?}"
    );
    assert_eq!(
        explained_circles(src),
        [
            "`src/jobs/mod.rs` imports `src/jobs/files.rs`, which imports it back \
          through `src/routes.rs` → `src/state.rs`"
        ]
    );
    write(
        "routes.rs",
        "use crate::state::State;\nuse crate::jobs::run;\n",
    );
    assert_eq!(
        explained_circles(src),
        [
            "`src/jobs/mod.rs` imports `src/jobs/files.rs`, which imports it back \
          through `src/routes.rs` (the circle holds 4 modules: jobs, jobs::files, \
          routes, state)"
        ]
    );
    write("routes.rs", "use crate::state::State;\n");
    write(
        "state.rs",
        "#[cfg(test)]\nmod tests {\n    use crate::jobs::x;\n}\n",
    );
    assert!(circles(src).is_empty());
    // A test module shared with a sibling's tests is test code too.
    write(
        "state.rs",
        "#[cfg(test)]\npub(super) mod tests {\n    use crate::jobs::x;\n}\n",
    );
    assert!(circles(src).is_empty());
}

#[test]
fn the_application_names_no_binary_and_no_http_framework() {
    let app = workspace().join("crates/seawall-app");
    for (module, text) in modules(&app.join("src")) {
        for name in [
            "seawall_api",
            "seawall_worker",
            "axum",
            "hyper",
            "tower_http",
        ] {
            assert!(
                !shipped(&text).contains(&format!("{name}::")),
                "seawall-app's `{module}` names `{name}`"
            );
        }
    }
    let manifest = std::fs::read_to_string(app.join("Cargo.toml")).expect("the manifest");
    let dependencies = manifest
        .split("[dev-dependencies]")
        .next()
        .unwrap_or_default();
    for name in [
        "seawall-api",
        "seawall-worker",
        "axum",
        "hyper",
        "tower-http",
        "actix-web",
    ] {
        assert!(
            !dependencies
                .lines()
                .any(|line| line.starts_with(&format!("{name} "))),
            "seawall-app depends on {name}"
        );
    }
}
