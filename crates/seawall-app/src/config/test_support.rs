//! What the tests of each part of the configuration share.

use std::collections::HashMap;
use std::io::Write as _;

use super::error::ConfigError;
use super::schema::Config;
use super::sources::from_sources;

pub(crate) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

pub(crate) fn load_with(args: &[&str], pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    from_sources(
        std::iter::once("seawall-api").chain(args.iter().copied()),
        env(pairs),
    )
}

pub(crate) fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    file
}

pub(crate) fn path_of(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().expect("temp path is UTF-8")
}

pub(crate) fn expect_invalid(result: Result<Config, ConfigError>, expected_key: &str) -> String {
    match result {
        Err(error @ ConfigError::Invalid { key, .. }) if key == expected_key => error.to_string(),
        other => panic!("expected Invalid {{ key: {expected_key:?} }}, got {other:?}"),
    }
}
