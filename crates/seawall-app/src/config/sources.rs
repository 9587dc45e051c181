//! Where settings come from: the TOML file, the environment and the command
//! line, layered in that order over the defaults. The environment variables
//! and flags are those [`SETTINGS`] names; the command line is built from the
//! same table.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::error::ConfigError;
use super::schema::{Config, Flag, SETTINGS, Setting};

/// The variable that names the config file, read before any other.
const CONFIG_ENV: &str = "SEAWALL_CONFIG";
const CONFIG_FLAG: &str = "config";

/// Every environment variable the configuration reads, for tools that need
/// to clear or forward them (such as tests that spawn the binary).
pub fn env_vars() -> impl Iterator<Item = &'static str> {
    std::iter::once(CONFIG_ENV).chain(
        SETTINGS
            .iter()
            .flat_map(|setting| setting.env.iter().copied()),
    )
}

/// Loads the configuration from the process's command line and environment.
///
/// `--help` and `--version` print and exit with status 0, as usual; any other
/// command-line error is printed by clap (with usage and suggestions) and
/// exits with status 2. Everything else (the file, the environment,
/// validation) comes back as a [`ConfigError`].
pub fn load() -> Result<Config, ConfigError> {
    load_for(Program::Api)
}

/// [`load`] for `program`: its name in `--help` and errors, and only the
/// flags of the settings it uses. Both programs read the same file and
/// environment variables, so one configuration serves a deployment.
pub fn load_for(program: Program) -> Result<Config, ConfigError> {
    let matches = command_for(program)
        .try_get_matches()
        .unwrap_or_else(|error| error.exit());
    for name in env_vars() {
        if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(name) {
            return Err(ConfigError::EnvNotUnicode { name });
        }
    }
    from_matches(program, &matches, &|name| std::env::var(name).ok())
}

/// Loads the configuration from the given command line (starting with the
/// program name) and environment lookup, then validates it.
///
/// Nothing is read from the process's environment, so tests can pass a map.
/// Command-line errors, `--help` and `--version` included, come back as
/// [`ConfigError::Cli`].
pub fn from_sources<I, T>(
    args: I,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    from_sources_for(Program::Api, args, env)
}

/// [`from_sources`] for `program`.
pub fn from_sources_for<I, T>(
    program: Program,
    args: I,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command_for(program)
        .try_get_matches_from(args)
        .map_err(ConfigError::Cli)?;
    from_matches(program, &matches, &env)
}

/// The two programs that read this configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `seawall-api`.
    Api,
    /// `seawall-worker`.
    Worker,
}

impl Program {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "seawall-api",
            Self::Worker => "seawall-worker",
        }
    }

    /// Whether the program uses `setting` (and so has its flag).
    pub fn uses(self, setting: &Setting) -> bool {
        let section = setting.key.split('.').next().unwrap_or_default();
        match self {
            Self::Api => section != "worker",
            Self::Worker => !matches!(section, "server" | "admin" | "demo" | "ratelimit"),
        }
    }

    fn about(self) -> &'static str {
        match self {
            Self::Api => {
                "The seawall API service: the reference workload on SQLite or PostgreSQL, admin \
                 API, metrics and a dashboard"
            }
            Self::Worker => {
                "The seawall worker: runs the processors of the nine job queues on Redis, with \
                 /livez, /readyz and /metrics on a port of its own"
            }
        }
    }
}

fn from_matches(
    program: Program,
    matches: &ArgMatches,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let env = Env(env);
    let path = matches
        .get_one::<PathBuf>(CONFIG_FLAG)
        .cloned()
        .or_else(|| {
            env.first(&[CONFIG_ENV])
                .map(|(_, value)| PathBuf::from(value))
        });
    let mut config = match path {
        Some(path) => from_file(&path)?,
        None => Config::default(),
    };
    apply_env(&mut config, &env)?;
    apply_flags(program, &mut config, matches);
    config.validate()?;
    Ok(config)
}

/// The command line: `--config` plus one flag per setting that has one.
pub fn command() -> Command {
    command_for(Program::Api)
}

/// The command line of `program`: `--config` plus one flag per setting it
/// uses that has one.
pub fn command_for(program: Program) -> Command {
    let config = Arg::new(CONFIG_FLAG)
        .long(CONFIG_FLAG)
        .value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf))
        .help(format!(
            "TOML config file [env: {CONFIG_ENV}] [default: none, no file is read]"
        ));
    Command::new(program.name())
        .version(env!("CARGO_PKG_VERSION"))
        .about(program.about())
        .long_about(format!(
            "{}.\n\n\
             Settings come from embedded defaults, then the TOML file named by --config or \
             SEAWALL_CONFIG (none is read otherwise), then environment variables, then flags; \
             each layer overrides the one before it. Empty environment variables count as unset.",
            program.about()
        ))
        .after_long_help(match program {
            Program::Api => {
                "The admin token has no flag, because command lines are visible through ps: set \
                 SEAWALL_ADMIN_TOKEN or `token` in the [admin] section of the config file (at \
                 least 16 visible ASCII characters). Without one, a random token is generated at \
                 start."
            }
            Program::Worker => {
                "The worker takes jobs from Redis, so it needs a Redis URL (--redis-url, \
                 REDIS_URL). It reads the same file and environment variables as seawall-api, \
                 so one configuration serves both."
            }
        })
        .arg(config)
        .args(
            SETTINGS
                .iter()
                .filter(|setting| program.uses(setting))
                .filter_map(arg),
        )
}

fn arg(setting: &'static Setting) -> Option<Arg> {
    let help = format!(
        "{} [env: {}] [default: {}]",
        setting.help,
        setting.env.join(", then "),
        setting.default_text()
    );
    match setting.flag {
        Flag::None => None,
        Flag::Value { long, value_name } => Some(
            Arg::new(setting.key)
                .long(long)
                .value_name(value_name)
                .help(help)
                // Checked by the setting's own reader, so a bad value is a
                // command-line error with clap's usage and suggestions.
                .value_parser(move |text: &str| {
                    setting
                        .apply(&mut Config::default(), text)
                        .map(|()| text.to_owned())
                }),
        ),
        Flag::Switch { long, .. } => Some(
            Arg::new(setting.key)
                .long(long)
                .help(help)
                .action(ArgAction::SetTrue),
        ),
    }
}

fn apply_flags(program: Program, config: &mut Config, matches: &ArgMatches) {
    for setting in SETTINGS.iter().filter(|setting| program.uses(setting)) {
        let text = match setting.flag {
            Flag::None => None,
            Flag::Value { .. } => matches.get_one::<String>(setting.key).map(String::as_str),
            Flag::Switch { value, .. } => matches.get_flag(setting.key).then_some(value),
        };
        if let Some(text) = text {
            // The value parser has read this text already.
            if let Err(error) = setting.apply(config, text) {
                tracing::error!(key = setting.key, %error, "a checked flag did not apply");
            }
        }
    }
}

fn apply_env(config: &mut Config, env: &Env<'_>) -> Result<(), ConfigError> {
    for setting in SETTINGS {
        if let Some((name, value)) = env.first(setting.env) {
            setting
                .apply(config, &value)
                .map_err(|source| ConfigError::Env {
                    name,
                    value,
                    source,
                })?;
        }
    }
    Ok(())
}

/// The injected environment lookup; empty values count as unset.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The first of `names` that is set, with its value.
    fn first(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|&name| {
            (self.0)(name)
                .filter(|value| !value.is_empty())
                .map(|value| (name, value))
        })
    }
}

fn from_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::ParseFile {
        path: path.to_owned(),
        at: error.span().map(|span| line_and_column(&text, span.start)),
        message: error.message().trim_end().to_owned(),
    })
}

/// Line and column, both from 1, of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::config::schema::{DemoConfig, LogFormat};
    use crate::config::test_support::*;

    const FULL_FILE: &str = r#"
        [server]
        listen = "10.0.0.1:1000"
        shutdown_timeout = "10s"
        max_body_bytes = 1000

        [database]
        url = "postgres://file:filepw@db/file"
        max_connections = 10

        [redis]
        url = "redis://file-redis:6379"

        [admin]
        token = "file-token-0123456789"

        [demo]
        seed = false
        users = 10
        contents = 100
        schedules_per_user = 10
        history_per_user = 10

        [perfmon]
        http_layer = false
        slow_query = "10ms"
        slow_api = "10s"

        [log]
        filter = "debug"
        format = "json"
    "#;

    const FULL_ENV: [(&str, &str); 18] = [
        ("SEAWALL_LISTEN", "10.0.0.2:2000"),
        ("SEAWALL_SHUTDOWN_TIMEOUT", "20s"),
        ("SEAWALL_MAX_BODY_BYTES", "2000"),
        ("DATABASE_URL", "postgres://env:envpw@db/env"),
        ("SEAWALL_DB_MAX_CONNECTIONS", "20"),
        ("REDIS_URL", "redis://env-redis:6379"),
        ("SEAWALL_ADMIN_TOKEN", "env-token-0123456789"),
        ("SEAWALL_DEMO_SEED", "true"),
        ("SEAWALL_DEMO_USERS", "20"),
        ("SEAWALL_DEMO_CONTENTS", "200"),
        ("SEAWALL_DEMO_SCHEDULES_PER_USER", "20"),
        ("SEAWALL_DEMO_HISTORY_PER_USER", "20"),
        ("SEAWALL_PERFMON_LAYER", "1"),
        ("SEAWALL_SLOW_QUERY", "20ms"),
        ("SEAWALL_SLOW_API", "20s"),
        ("RUST_LOG", "warn"),
        ("SEAWALL_LOG_FORMAT", "text"),
        ("SEAWALL_CONFIG", "/nonexistent/overridden-by-flag.toml"),
    ];

    const FULL_FLAGS: [&str; 27] = [
        "--listen",
        "10.0.0.3:3000",
        "--shutdown-timeout",
        "30s",
        "--max-body-bytes",
        "3000",
        "--database-url",
        "sqlite::memory:",
        "--db-max-connections",
        "30",
        "--redis-url",
        "rediss://flag-redis:6380",
        "--no-seed",
        "--demo-users",
        "30",
        "--demo-contents",
        "300",
        "--demo-schedules-per-user",
        "30",
        "--demo-history-per-user",
        "30",
        "--no-perfmon-layer",
        "--slow-query",
        "30ms",
        "--slow-api",
        "30s",
        "--log=error",
    ];

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = from_sources(["seawall-api"], |_: &str| None).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(
            config.server.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.server.max_body_bytes, 65_536);
        assert_eq!(config.database.url, "sqlite://seawall.db?mode=rwc");
        assert_eq!(config.database.max_connections, None);
        assert_eq!(config.redis.url, None);
        assert_eq!(config.admin.token, None);
        assert_eq!(
            config.demo,
            DemoConfig {
                seed: true,
                users: 1_000,
                contents: 5_000,
                schedules_per_user: 200,
                history_per_user: 1_000,
            }
        );
        assert!(config.perfmon.http_layer);
        assert_eq!(config.perfmon.slow_query, Duration::from_secs(1));
        assert_eq!(config.perfmon.slow_api, Duration::from_secs(2));
        assert_eq!(config.log.filter, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(config.is_sqlite());
        assert!(!config.is_postgres());
    }

    #[test]
    fn the_file_overrides_defaults() {
        let file = toml_file(FULL_FILE);
        let config = load_with(&["--config", path_of(&file)], &[]).expect("file loads");
        assert_eq!(config.server.listen.to_string(), "10.0.0.1:1000");
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.server.max_body_bytes, 1000);
        assert_eq!(config.database.url, "postgres://file:filepw@db/file");
        assert_eq!(config.database.max_connections, Some(10));
        assert_eq!(config.redis.url.as_deref(), Some("redis://file-redis:6379"));
        assert_eq!(config.admin.token.as_deref(), Some("file-token-0123456789"));
        assert_eq!(
            config.demo,
            DemoConfig {
                seed: false,
                users: 10,
                contents: 100,
                schedules_per_user: 10,
                history_per_user: 10,
            }
        );
        assert!(!config.perfmon.http_layer);
        assert_eq!(config.perfmon.slow_query, Duration::from_millis(10));
        assert_eq!(config.perfmon.slow_api, Duration::from_secs(10));
        assert_eq!(config.log.filter, "debug");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let file = toml_file("[demo]\nusers = 7\n");
        let config = load_with(&["--config", path_of(&file)], &[]).expect("file loads");
        let mut expected = Config::default();
        expected.demo.users = 7;
        assert_eq!(config, expected);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let file = toml_file(FULL_FILE);
        let config = load_with(&["--config", path_of(&file)], &FULL_ENV).expect("env loads");
        assert_eq!(config.server.listen.to_string(), "10.0.0.2:2000");
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(config.server.max_body_bytes, 2000);
        assert_eq!(config.database.url, "postgres://env:envpw@db/env");
        assert_eq!(config.database.max_connections, Some(20));
        assert_eq!(config.redis.url.as_deref(), Some("redis://env-redis:6379"));
        assert_eq!(config.admin.token.as_deref(), Some("env-token-0123456789"));
        assert_eq!(
            config.demo,
            DemoConfig {
                seed: true,
                users: 20,
                contents: 200,
                schedules_per_user: 20,
                history_per_user: 20,
            }
        );
        assert!(config.perfmon.http_layer);
        assert_eq!(config.perfmon.slow_query, Duration::from_millis(20));
        assert_eq!(config.perfmon.slow_api, Duration::from_secs(20));
        assert_eq!(config.log.filter, "warn");
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn flags_override_the_environment() {
        let file = toml_file(FULL_FILE);
        let mut args = vec!["--config", path_of(&file)];
        args.extend(FULL_FLAGS);
        args.extend(["--log-format", "json"]);
        let config = load_with(&args, &FULL_ENV).expect("flags load");
        assert_eq!(config.server.listen.to_string(), "10.0.0.3:3000");
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.server.max_body_bytes, 3000);
        assert_eq!(config.database.url, "sqlite::memory:");
        assert_eq!(config.database.max_connections, Some(30));
        assert_eq!(
            config.redis.url.as_deref(),
            Some("rediss://flag-redis:6380")
        );
        // No flag for the token: the environment's stands.
        assert_eq!(config.admin.token.as_deref(), Some("env-token-0123456789"));
        assert_eq!(
            config.demo,
            DemoConfig {
                seed: false,
                users: 30,
                contents: 300,
                schedules_per_user: 30,
                history_per_user: 30,
            }
        );
        assert!(!config.perfmon.http_layer);
        assert_eq!(config.perfmon.slow_query, Duration::from_millis(30));
        assert_eq!(config.perfmon.slow_api, Duration::from_secs(30));
        assert_eq!(config.log.filter, "error");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn flags_override_defaults_without_file_or_environment() {
        let config = load_with(&FULL_FLAGS, &[]).expect("flags load");
        assert_eq!(config.server.listen.to_string(), "10.0.0.3:3000");
        assert_eq!(config.database.url, "sqlite::memory:");
        assert_eq!(config.demo.users, 30);
        assert_eq!(config.perfmon.slow_api, Duration::from_secs(30));
    }

    #[test]
    fn seawall_config_names_the_file_and_the_flag_wins_over_it() {
        let env_file = toml_file("[demo]\nusers = 11\n");
        let flag_file = toml_file("[demo]\nusers = 22\n");
        let config = load_with(&[], &[("SEAWALL_CONFIG", path_of(&env_file))]).expect("loads");
        assert_eq!(config.demo.users, 11);
        let config = load_with(
            &["--config", path_of(&flag_file)],
            &[("SEAWALL_CONFIG", path_of(&env_file))],
        )
        .expect("loads");
        assert_eq!(config.demo.users, 22);
    }

    #[test]
    fn prefixed_variables_beat_the_conventional_ones() {
        let config = load_with(
            &[],
            &[
                ("DATABASE_URL", "postgres://plain@db/x"),
                ("SEAWALL_DATABASE_URL", "postgresql://prefixed@db/x"),
                ("REDIS_URL", "redis://plain"),
                ("SEAWALL_REDIS_URL", "rediss://prefixed"),
                ("RUST_LOG", "warn"),
                ("SEAWALL_LOG", "debug"),
            ],
        )
        .expect("loads");
        assert_eq!(config.database.url, "postgresql://prefixed@db/x");
        assert!(config.is_postgres());
        assert_eq!(config.redis.url.as_deref(), Some("rediss://prefixed"));
        assert_eq!(config.log.filter, "debug");

        let config = load_with(
            &[],
            &[
                ("DATABASE_URL", "postgres://plain@db/x"),
                ("REDIS_URL", "redis://plain"),
            ],
        )
        .expect("loads");
        assert_eq!(config.database.url, "postgres://plain@db/x");
        assert_eq!(config.redis.url.as_deref(), Some("redis://plain"));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let mut pairs: Vec<(&str, &str)> = env_vars().map(|name| (name, "")).collect();
        assert_eq!(load_with(&[], &pairs).expect("loads"), Config::default());

        pairs.retain(|&(name, _)| name != "DATABASE_URL" && name != "RUST_LOG");
        pairs.push(("DATABASE_URL", "postgres://plain@db/x"));
        pairs.push(("RUST_LOG", "trace"));
        let config = load_with(&[], &pairs).expect("loads");
        assert_eq!(config.database.url, "postgres://plain@db/x");
        assert_eq!(config.log.filter, "trace");
    }

    #[test]
    fn booleans_in_the_environment() {
        for (text, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("false", false),
            ("0", false),
        ] {
            let config = load_with(
                &[],
                &[("SEAWALL_DEMO_SEED", text), ("SEAWALL_PERFMON_LAYER", text)],
            )
            .expect("loads");
            assert_eq!(config.demo.seed, expected, "{text}");
            assert_eq!(config.perfmon.http_layer, expected, "{text}");
        }
        let error = load_with(&[], &[("SEAWALL_DEMO_SEED", "yes please")]).expect_err("bad bool");
        assert!(
            matches!(&error, ConfigError::Env { name: "SEAWALL_DEMO_SEED", value, .. } if value == "yes please"),
            "{error:?}"
        );
    }

    #[test]
    fn a_bad_environment_value_names_the_variable_and_the_value() {
        let error = load_with(&[], &[("SEAWALL_LISTEN", "nonsense")]).expect_err("bad listen");
        assert!(
            matches!(&error, ConfigError::Env { name: "SEAWALL_LISTEN", value, .. } if value == "nonsense"),
            "{error:?}"
        );
        let message = crate::error_chain(&error);
        assert!(
            message.contains("SEAWALL_LISTEN") && message.contains("nonsense"),
            "{message}"
        );

        for (name, value) in [
            ("SEAWALL_SHUTDOWN_TIMEOUT", "soon"),
            ("SEAWALL_SLOW_QUERY", "10 parsecs"),
            ("SEAWALL_SLOW_API", "-1s"),
            ("SEAWALL_MAX_BODY_BYTES", "1e6"),
            ("SEAWALL_DEMO_USERS", "-1"),
            ("SEAWALL_DEMO_CONTENTS", "99999999999"),
            ("SEAWALL_DEMO_SCHEDULES_PER_USER", "x"),
            ("SEAWALL_DEMO_HISTORY_PER_USER", "1.5"),
            ("SEAWALL_DB_MAX_CONNECTIONS", "many"),
            ("SEAWALL_PERFMON_LAYER", "maybe"),
            ("SEAWALL_LOG_FORMAT", "xml"),
        ] {
            let error = load_with(&[], &[(name, value)]).expect_err(name);
            match &error {
                ConfigError::Env {
                    name: got,
                    value: got_value,
                    ..
                } => {
                    assert_eq!((*got, got_value.as_str()), (name, value));
                }
                other => panic!("{name}: expected Env, got {other:?}"),
            }
            assert!(error.source().is_some(), "{name}: the parse error is kept");
        }
    }

    #[test]
    fn bad_flag_values_are_command_line_errors() {
        for args in [
            &["--listen", "nonsense"][..],
            &["--shutdown-timeout", "soon"],
            &["--slow-query", "fast"],
            &["--demo-users", "-5"],
            &["--max-body-bytes", "lots"],
            &["--log-format", "xml"],
            &["--admin-token", "0123456789abcdef0123"],
            &["--unknown-flag"],
        ] {
            match load_with(args, &[]) {
                Err(ConfigError::Cli(error)) => {
                    assert!(
                        !matches!(
                            error.kind(),
                            clap::error::ErrorKind::DisplayHelp
                                | clap::error::ErrorKind::DisplayVersion
                        ),
                        "{args:?}"
                    );
                }
                other => panic!("{args:?}: expected a Cli error, got {other:?}"),
            }
        }
    }

    #[test]
    fn help_and_version_come_back_as_display_kinds() {
        for (flag, kind) in [
            ("--help", clap::error::ErrorKind::DisplayHelp),
            ("-h", clap::error::ErrorKind::DisplayHelp),
            ("--version", clap::error::ErrorKind::DisplayVersion),
            ("-V", clap::error::ErrorKind::DisplayVersion),
        ] {
            match load_with(&[flag], &[]) {
                Err(ConfigError::Cli(error)) => assert_eq!(error.kind(), kind, "{flag}"),
                other => panic!("{flag}: got {other:?}"),
            }
        }
        let version = command().render_version();
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    }

    #[test]
    fn help_names_every_variable_flag_and_default() {
        for program in [Program::Api, Program::Worker] {
            let help = command_for(program).render_long_help().to_string();
            assert!(help.contains(CONFIG_ENV), "{help}");
            for setting in SETTINGS {
                let flag = match setting.flag {
                    Flag::Value { long, .. } | Flag::Switch { long, .. } => format!("--{long}"),
                    // Named in the text after the options instead.
                    Flag::None => continue,
                };
                if !program.uses(setting) {
                    assert!(
                        !help.contains(&format!("{flag} ")),
                        "{} has {flag}",
                        program.name()
                    );
                    continue;
                }
                for name in setting.env {
                    assert!(
                        help.contains(name),
                        "--help does not mention {name}:\n{help}"
                    );
                }
                let default = format!("[default: {}]", setting.default_text());
                assert!(help.contains(&default), "--help lacks {default}:\n{help}");
                assert!(
                    help.contains(&flag),
                    "{} --help lacks {flag}",
                    program.name()
                );
            }
        }
        let worker = command_for(Program::Worker).render_long_help().to_string();
        assert!(
            worker.contains("--worker-listen") && !worker.contains("--listen "),
            "{worker}"
        );
    }

    #[test]
    fn file_errors_name_the_file_and_the_problem() {
        let file = toml_file("[server]\nlisten = \"127.0.0.1:1\"\nbogus_key = 1\n");
        let error = load_with(&["--config", path_of(&file)], &[]).expect_err("unknown key");
        assert!(
            matches!(&error, ConfigError::ParseFile { path, .. } if path == file.path()),
            "{error:?}"
        );
        let message = crate::error_chain(&error);
        assert!(
            message.contains("bogus_key") && message.contains(path_of(&file)),
            "{message}"
        );

        let file = toml_file("[nonsense]\nx = 1\n");
        let message = crate::error_chain(
            &load_with(&["--config", path_of(&file)], &[]).expect_err("unknown section"),
        );
        assert!(message.contains("nonsense"), "{message}");

        for text in [
            "[server]\nmax_body_bytes = \"big\"\n",
            "[server]\nlisten = \"nonsense\"\n",
            "[server]\nshutdown_timeout = 30\n",
            "[server]\nshutdown_timeout = \"soon\"\n",
            "[demo]\nusers = -1\n",
            "[demo]\nusers = 99999999999\n",
            "[log]\nformat = \"xml\"\n",
            "server = 1\n",
            "not toml at all",
        ] {
            let file = toml_file(text);
            let error = load_with(&["--config", path_of(&file)], &[]).expect_err(text);
            assert!(
                matches!(error, ConfigError::ParseFile { .. }),
                "{text}: {error:?}"
            );
        }
    }

    #[test]
    fn file_errors_point_at_the_line_without_quoting_it() {
        let file = toml_file("[admin]\ntoken = sw_unquoted_secret_value\n");
        let message = crate::error_chain(
            &load_with(&["--config", path_of(&file)], &[]).expect_err("unquoted string"),
        );
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("unquoted_secret"), "{message}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing.toml");
        let path_text = path.to_str().expect("UTF-8 path");
        for result in [
            load_with(&["--config", path_text], &[]),
            load_with(&[], &[("SEAWALL_CONFIG", path_text)]),
        ] {
            match result {
                Err(ConfigError::ReadFile { path: got, source }) => {
                    assert_eq!(got, path);
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                }
                other => panic!("expected ReadFile, got {other:?}"),
            }
        }
    }
}
