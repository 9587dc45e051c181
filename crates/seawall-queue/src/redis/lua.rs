//! Builds each script from the shared prelude and the script's own body,
//! keeping only the prelude's definitions the body needs.
//!
//! Redis runs a script's whole text on every call: each `local function`
//! of the prelude makes a new closure, each key name is concatenated again,
//! and each setting is parsed again, whether the script uses them or not.
//! The prelude is written as a sequence of top-level definitions (a line
//! that starts with `local`, with the comment lines above it and every
//! indented or `end` line below it), so a definition that no kept text
//! names is left out of the script.

use std::collections::HashSet;

/// One top-level definition of the prelude: its text and the names it defines.
struct Definition<'a> {
    text: &'a str,
    names: Vec<&'a str>,
}

/// The script made of the prelude's definitions that `body` needs (those it
/// names, and those they name, in the prelude's order) followed by `body`.
pub(super) fn assemble(prelude: &str, body: &str) -> String {
    let definitions = definitions(prelude);
    let mut wanted: HashSet<&str> = words(body).collect();
    // Later definitions only use earlier ones, so one pass from the end
    // sees every user of a definition before the definition itself.
    let mut kept = vec![false; definitions.len()];
    for (index, definition) in definitions.iter().enumerate().rev() {
        if definition.names.iter().any(|name| wanted.contains(name)) {
            kept[index] = true;
            wanted.extend(words(definition.text));
        }
    }
    let mut script = String::with_capacity(prelude.len() + body.len() + 1);
    for (definition, kept) in definitions.iter().zip(kept) {
        if kept {
            script.push_str(definition.text);
        }
    }
    script.push('\n');
    script.push_str(body);
    script
}

/// Splits the prelude into its top-level definitions; a comment line at the
/// left margin starts the text of the definition below it.
fn definitions(prelude: &str) -> Vec<Definition<'_>> {
    let mut starts = Vec::new();
    let mut comment_start = None;
    let mut offset = 0;
    for line in prelude.split_inclusive('\n') {
        if line.starts_with("--") {
            comment_start.get_or_insert(offset);
        } else if line.starts_with("local ") {
            starts.push(comment_start.take().unwrap_or(offset));
        } else if !line.trim().is_empty() {
            comment_start = None;
        }
        offset += line.len();
    }
    starts.push(prelude.len());
    let mut definitions: Vec<Definition<'_>> = starts
        .windows(2)
        .map(|pair| {
            let text = &prelude[pair[0]..pair[1]];
            Definition {
                text,
                names: defined_names(text),
            }
        })
        .collect();
    // Text above the first definition (the file's header) has no names.
    if let Some(&first) = starts.first()
        && first > 0
    {
        definitions.insert(
            0,
            Definition {
                text: &prelude[..first],
                names: Vec::new(),
            },
        );
    }
    definitions
}

/// The names a definition's `local` line binds: `local function name(` or
/// `local a, b = …`.
fn defined_names(text: &str) -> Vec<&str> {
    let Some(line) = text.lines().find(|line| line.starts_with("local ")) else {
        return Vec::new();
    };
    let rest = &line["local ".len()..];
    if let Some(function) = rest.strip_prefix("function ") {
        return function
            .split('(')
            .next()
            .map(str::trim)
            .into_iter()
            .collect();
    }
    rest.split('=')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect()
}

/// The identifiers of Lua text outside its `--` comments.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(code_of)
        .flat_map(|code| code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

/// A line without its `--` comment. A `--` inside a quoted string is not
/// one; a line with a long bracket (`[[`, `[=`) is kept whole, as is
/// everything after an unclosed quote: keeping more text only keeps more
/// definitions.
fn code_of(line: &str) -> &str {
    if line.contains("[[") || line.contains("[=") {
        return line;
    }
    let bytes = line.as_bytes();
    let mut quote = None;
    let mut at = 0;
    while at < bytes.len() {
        match (quote, bytes[at]) {
            (Some(_), b'\\') => at += 1,
            (Some(open), byte) if byte == open => quote = None,
            (None, b'\'' | b'"') => quote = Some(bytes[at]),
            (None, b'-') if bytes.get(at + 1) == Some(&b'-') => return &line[..at],
            _ => {}
        }
        at += 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRELUDE: &str = "\
-- The header.
local base = ARGV[1]

-- A key.
local done_key = base .. 'done'
local unused_key = base .. 'unused'
local a, b = 1, 2

-- Two lines
-- of comment.
local function helper(x)
  return x .. done_key
end

local function other()
  return helper(a)
end
";

    #[test]
    fn keeps_what_the_body_names_and_what_that_names_in_order() {
        let script = assemble(PRELUDE, "return other()");
        assert_eq!(
            script,
            "-- The header.\nlocal base = ARGV[1]\n\n-- A key.\nlocal done_key = base .. 'done'\n\
             local a, b = 1, 2\n\n-- Two lines\n-- of comment.\nlocal function helper(x)\n  \
             return x .. done_key\nend\n\nlocal function other()\n  return helper(a)\nend\n\n\
             return other()"
        );
    }

    #[test]
    fn a_body_that_names_nothing_gets_nothing() {
        assert_eq!(
            assemble(PRELUDE, "-- helper\nreturn 1"),
            "\n-- helper\nreturn 1"
        );
    }

    #[test]
    fn a_comment_marker_inside_a_string_hides_nothing() {
        assert_eq!(code_of("x('a--b', helper) -- other"), "x('a--b', helper) ");
        assert_eq!(code_of(r#"x("q\"--", helper)"#), r#"x("q\"--", helper)"#);
        assert_eq!(code_of("s = [[ -- ]] .. helper"), "s = [[ -- ]] .. helper");
        let script = assemble(PRELUDE, "return '--' .. other()");
        assert!(script.contains("local function other()"), "{script}");
    }

    #[test]
    fn names_of_every_form_are_found() {
        let names: Vec<Vec<&str>> = definitions(PRELUDE)
            .iter()
            .map(|definition| definition.names.clone())
            .collect();
        assert_eq!(
            names,
            [
                vec!["base"],
                vec!["done_key"],
                vec!["unused_key"],
                vec!["a", "b"],
                vec!["helper"],
                vec!["other"],
            ]
        );
    }

    /// The prelude holds definitions only: a statement at its left margin
    /// that is not one would be bound to the definition above it.
    #[test]
    fn the_prelude_is_made_of_definitions() {
        for line in crate::redis::PRELUDE
            .iter()
            .flat_map(|(_, text)| text.lines())
        {
            assert!(
                line.is_empty()
                    || ["local ", "--", " ", "end"]
                        .iter()
                        .any(|start| line.starts_with(start)),
                "{line}"
            );
        }
    }

    /// scripts/queue-lua-instructions assembles the scripts it measures
    /// with a Python copy of [`assemble`] (so that it can measure them as of
    /// any revision without building it): its `--print` of the enqueue and
    /// the fetch is byte for byte what the store sends.
    #[test]
    fn the_instruction_harness_assembles_the_scripts_as_the_store_does() {
        let scripts = crate::redis::Scripts::new();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        for (case, script) in [
            ("enqueue", &scripts.enqueue),
            ("enqueue_one", &scripts.enqueue_one),
            ("fetch", &scripts.fetch),
        ] {
            let printed = std::process::Command::new("bash")
                .arg(format!("{root}/scripts/queue-lua-instructions"))
                .args(["--print", case])
                .output()
                .expect("the harness runs");
            assert!(printed.status.success(), "{case}: {printed:?}");
            assert_eq!(
                String::from_utf8_lossy(&printed.stdout),
                script.lua().map(|lua| &**lua).unwrap_or_default(),
                "{case}"
            );
        }
    }

    /// `DEFAULT_SCORE` is `DEFAULT_LEVEL * STRIDE` written out, as `int`
    /// would write it.
    #[test]
    fn the_default_score_is_the_default_level_times_the_stride() {
        let prelude = crate::redis::prelude();
        let value = |name: &str| -> String {
            let start = format!("local {name} = ");
            prelude
                .lines()
                .find_map(|line| line.strip_prefix(start.as_str()))
                .unwrap_or_else(|| panic!("no {name}"))
                .trim_matches('\'')
                .to_owned()
        };
        let stride: u64 = value("STRIDE").parse().expect("a number");
        let level: u64 = value("DEFAULT_LEVEL").parse().expect("a number");
        assert_eq!(value("DEFAULT_SCORE"), (level * stride).to_string());
    }

    /// Each real script keeps the prelude's definitions it calls, and leaves
    /// out some it does not.
    #[test]
    fn the_queue_scripts_leave_out_what_they_do_not_call() {
        let prelude = &crate::redis::prelude();
        let enqueue = assemble(prelude, include_str!("enqueue.lua"));
        for kept in [
            "local function ring(",
            "local function chunked(",
            "local now =",
        ] {
            assert!(enqueue.contains(kept), "{kept}");
        }
        for left in [
            "local function recover(",
            "local function add_history(",
            "local dead_key",
        ] {
            assert!(!enqueue.contains(left), "{left}");
        }
        // enqueue_one.lua takes its own arguments where a prelude call has
        // the settings after the first (ARGV[3..6]): no definition that
        // reads those may be kept.
        let one = assemble(prelude, include_str!("enqueue_one.lua"));
        for left in [
            "local keep_completed",
            "local keep_completed_ms",
            "local keep_dead",
            "local max_stalls",
        ] {
            assert!(!one.contains(left), "{left}");
        }
        assert!(one.contains("local events_max ="));
        let renew = assemble(prelude, include_str!("renew.lua"));
        for kept in [
            "local function recover(",
            "local function make_dead(",
            "local function trim_count(",
        ] {
            assert!(renew.contains(kept), "{kept}");
        }
    }
}
