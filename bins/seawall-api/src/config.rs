//! Configuration: embedded defaults, then a TOML file, then environment
//! variables, then command-line flags; each layer overrides the one before it.
//!
//! The TOML file is read only when `--config PATH` or `SEAWALL_CONFIG` names
//! it; there is no implicit lookup. Every key is optional, unknown keys are an
//! error. A file showing every section:
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//! shutdown_timeout = "30s"   # humantime: "250ms", "1m 30s", ...
//! max_body_bytes = 65536
//!
//! [database]
//! url = "postgres://seawall:secret@localhost:5432/seawall"   # or "sqlite://seawall.db?mode=rwc"
//! max_connections = 16
//!
//! [redis]
//! url = "redis://127.0.0.1:6379/0"   # leave out for in-memory backends
//!
//! [admin]
//! token = "at-least-16-visible-ascii-chars"   # better: SEAWALL_ADMIN_TOKEN
//!
//! [demo]
//! seed = true
//! users = 1000
//! contents = 5000
//! schedules_per_user = 200
//! history_per_user = 1000
//!
//! [perfmon]
//! http_layer = true
//! slow_query = "1s"
//! slow_api = "2s"
//!
//! [log]
//! filter = "seawall_api=debug,info"
//! format = "json"   # or "text"
//! ```
//!
//! The environment variables and flags are listed in [`ENV_VARS`] and by
//! `seawall-api --help`. The admin token has no flag: command lines are
//! visible to every local user through `ps`.
//!
//! ```
//! use seawall_api::config::{self, ConfigError};
//!
//! let env = |name: &str| {
//!     (name == "DATABASE_URL").then(|| "postgres://app:secret@db:5432/seawall".to_owned())
//! };
//! let config = config::from_sources(["seawall-api", "--listen", "0.0.0.0:9000"], env)?;
//! assert!(config.is_postgres());
//! assert_eq!(config.server.listen.port(), 9000);
//! assert_eq!(config.masked().database.url, "postgres://app:***@db:5432/seawall");
//! # Ok::<(), ConfigError>(())
//! ```

use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// The service's whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    pub server: ServerConfig,
    /// The relational database.
    pub database: DatabaseConfig,
    /// Redis, when configured; in-memory backends stand in otherwise.
    pub redis: RedisConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// The demo dataset written into an empty database.
    pub demo: DemoConfig,
    /// Performance monitoring.
    pub perfmon: PerfmonConfig,
    /// Logging.
    pub log: LogConfig,
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long in-flight requests may take to finish after SIGINT or SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

/// The relational database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user:password@host/db`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
}

/// Redis.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`; `None` means in-memory backends.
    pub url: Option<String>,
}

/// The admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The bearer token admin routes require; generated at start when `None`.
    pub token: Option<String>,
}

/// The demo dataset: written once into an empty database, deterministic for
/// given sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Write the dataset when the database holds none.
    pub seed: bool,
    /// Number of users.
    pub users: u32,
    /// Number of contents.
    pub contents: u32,
    /// Review schedules per user (each for a distinct content).
    pub schedules_per_user: u32,
    /// Review-history rows per user.
    pub history_per_user: u32,
}

/// Performance monitoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerfmonConfig {
    /// Put the perfmon layer on the HTTP routes (off only to measure its cost).
    pub http_layer: bool,
    /// Queries slower than this enter the slow-query log.
    #[serde(with = "duration")]
    pub slow_query: Duration,
    /// Requests slower than this enter the slow-API log.
    #[serde(with = "duration")]
    pub slow_api: Duration,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `seawall_api=debug,info`.
    pub filter: String,
    /// Human-readable text or one JSON object per line.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Every environment variable the configuration reads, for tools that need
/// to clear or forward them (such as tests that spawn the binary).
pub const ENV_VARS: [&str; 21] = [
    "SEAWALL_CONFIG",
    "SEAWALL_LISTEN",
    "SEAWALL_DATABASE_URL",
    "DATABASE_URL",
    "SEAWALL_REDIS_URL",
    "REDIS_URL",
    "SEAWALL_ADMIN_TOKEN",
    "SEAWALL_SHUTDOWN_TIMEOUT",
    "SEAWALL_MAX_BODY_BYTES",
    "SEAWALL_DEMO_SEED",
    "SEAWALL_DEMO_USERS",
    "SEAWALL_DEMO_CONTENTS",
    "SEAWALL_DEMO_SCHEDULES_PER_USER",
    "SEAWALL_DEMO_HISTORY_PER_USER",
    "SEAWALL_DB_MAX_CONNECTIONS",
    "SEAWALL_SLOW_QUERY",
    "SEAWALL_SLOW_API",
    "SEAWALL_PERFMON_LAYER",
    "SEAWALL_LOG",
    "RUST_LOG",
    "SEAWALL_LOG_FORMAT",
];

const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
const SHUTDOWN_TIMEOUT_LIMIT: Duration = Duration::from_secs(60 * 60);
const MAX_CONNECTIONS_LIMIT: u32 = 1_000;
const DEMO_SIZE_LIMIT: u32 = 10_000_000;
const DEMO_HISTORY_ROWS_LIMIT: u64 = 100_000_000;
const ADMIN_TOKEN_MIN_LEN: usize = 16;
const MASK: &str = "***";

/// Why the configuration could not be loaded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line did not parse. This is also how `--help` and
    /// `--version` come back from [`from_sources`]; [`load`] lets clap print
    /// those and exit instead.
    #[error("invalid command line")]
    Cli(#[source] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or does not match [`Config`] (an
    /// unknown key, a wrong type, a malformed value).
    ///
    /// The message never quotes the file's text, which may hold secrets.
    #[error("invalid config file {}{}: {message}", path.display(), at.map(|(line, column)| format!(", line {line}, column {column}")).unwrap_or_default())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Line and column (from 1) of the fault, when known.
        at: Option<(usize, usize)>,
        /// What is wrong, e.g. which key is unknown or which type was expected.
        message: String,
    },
    /// An environment variable holds bytes that are not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode {
        /// The variable.
        name: &'static str,
    },
    /// An environment variable's value does not parse.
    #[error("invalid value {value:?} in environment variable {name}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it does not parse.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The merged configuration breaks a rule.
    #[error("invalid {key} = {value}: {reason}")]
    Invalid {
        /// The setting, as `section.key` in the TOML file.
        key: &'static str,
        /// Its value, with secrets masked.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
}

/// Command-line flags. Each one overrides its environment variable, which
/// overrides the config file, which overrides the embedded defaults.
#[derive(Debug, Parser)]
#[command(
    name = "seawall-api",
    version,
    about = "The seawall API service: the reference workload on SQLite or PostgreSQL, admin API, metrics and a dashboard",
    long_about = "The seawall API service: the reference workload on SQLite or PostgreSQL, admin API, \
                  metrics and a dashboard.\n\n\
                  Settings come from embedded defaults, then the TOML file named by --config or \
                  SEAWALL_CONFIG (none is read otherwise), then environment variables, then flags; \
                  each layer overrides the one before it. Empty environment variables count as unset.",
    after_long_help = "The admin token has no flag, because command lines are visible through ps: set \
                       SEAWALL_ADMIN_TOKEN or `token` in the [admin] section of the config file (at \
                       least 16 visible ASCII characters). Without one, a random token is generated at \
                       start."
)]
pub struct Cli {
    /// TOML config file [env: SEAWALL_CONFIG] [default: none, no file is read]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Address to listen on, IP:PORT [env: SEAWALL_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Database URL, sqlite:... or postgres://... [env: SEAWALL_DATABASE_URL, then DATABASE_URL] [default: sqlite://seawall.db?mode=rwc]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// Redis URL, redis://... or rediss://... [env: SEAWALL_REDIS_URL, then REDIS_URL] [default: none, in-memory backends]
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,

    /// Time in-flight requests get to finish after SIGINT or SIGTERM, at most 1h [env: SEAWALL_SHUTDOWN_TIMEOUT] [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    shutdown_timeout: Option<Duration>,

    /// Largest accepted request body in bytes, 1 to 67108864 [env: SEAWALL_MAX_BODY_BYTES] [default: 65536]
    #[arg(long, value_name = "N")]
    max_body_bytes: Option<usize>,

    /// Don't write the demo dataset into an empty database [env: SEAWALL_DEMO_SEED=false] [default: the dataset is written]
    #[arg(long)]
    no_seed: bool,

    /// Demo dataset: number of users [env: SEAWALL_DEMO_USERS] [default: 1000]
    #[arg(long, value_name = "N")]
    demo_users: Option<u32>,

    /// Demo dataset: number of contents [env: SEAWALL_DEMO_CONTENTS] [default: 5000]
    #[arg(long, value_name = "N")]
    demo_contents: Option<u32>,

    /// Demo dataset: review schedules per user, at most the number of contents [env: SEAWALL_DEMO_SCHEDULES_PER_USER] [default: 200]
    #[arg(long, value_name = "N")]
    demo_schedules_per_user: Option<u32>,

    /// Demo dataset: review-history rows per user [env: SEAWALL_DEMO_HISTORY_PER_USER] [default: 1000]
    #[arg(long, value_name = "N")]
    demo_history_per_user: Option<u32>,

    /// Database pool size, 1 to 1000 [env: SEAWALL_DB_MAX_CONNECTIONS] [default: 8]
    #[arg(long, value_name = "N")]
    db_max_connections: Option<u32>,

    /// Queries slower than this enter the slow-query log [env: SEAWALL_SLOW_QUERY] [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    slow_query: Option<Duration>,

    /// Requests slower than this enter the slow-API log [env: SEAWALL_SLOW_API] [default: 2s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    slow_api: Option<Duration>,

    /// Leave the perfmon layer off the HTTP routes, to measure its cost [env: SEAWALL_PERFMON_LAYER=false] [default: the layer is on]
    #[arg(long)]
    no_perfmon_layer: bool,

    /// Log filter such as `info` or `seawall_api=debug,info` [env: SEAWALL_LOG, then RUST_LOG] [default: info]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,

    /// Log line format [env: SEAWALL_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

/// Loads the configuration from the process's command line and environment.
///
/// `--help` and `--version` print and exit with status 0, as usual; any other
/// command-line error is printed by clap (with usage and suggestions) and
/// exits with status 2. Everything else (the file, the environment,
/// validation) comes back as a [`ConfigError`].
pub fn load() -> Result<Config, ConfigError> {
    let cli = Cli::try_parse().unwrap_or_else(|error| error.exit());
    for name in ENV_VARS {
        if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(name) {
            return Err(ConfigError::EnvNotUnicode { name });
        }
    }
    from_cli(cli, &|name| std::env::var(name).ok())
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
    let cli = Cli::try_parse_from(args).map_err(ConfigError::Cli)?;
    from_cli(cli, &env)
}

fn from_cli(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let env = Env(env);
    let path = cli.config.clone().or_else(|| {
        env.first(&["SEAWALL_CONFIG"])
            .map(|(_, value)| PathBuf::from(value))
    });
    let mut config = match path {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    config.apply_env(&env)?;
    config.apply_cli(cli);
    config.validate()?;
    Ok(config)
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

    fn string(&self, names: &[&'static str]) -> Option<String> {
        self.first(names).map(|(_, value)| value)
    }

    fn parse<T, E>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ConfigError>
    where
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        let Some((name, value)) = self.first(&[name]) else {
            return Ok(None);
        };
        match parse(&value) {
            Ok(parsed) => Ok(Some(parsed)),
            Err(error) => Err(ConfigError::Env {
                name,
                value,
                source: error.into(),
            }),
        }
    }
}

fn parse_from_str<T: std::str::FromStr>(text: &str) -> Result<T, T::Err> {
    text.parse()
}

fn parse_bool(text: &str) -> Result<bool, &'static str> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0"),
    }
}

fn parse_log_format(text: &str) -> Result<LogFormat, &'static str> {
    LogFormat::from_str(text, true).map_err(|_| "expected text or json")
}

/// Sets `target` when the variable is set, leaving it alone otherwise.
fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

impl Config {
    fn from_file(path: &Path) -> Result<Self, ConfigError> {
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

    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        set(
            &mut self.server.listen,
            env.parse("SEAWALL_LISTEN", parse_from_str)?,
        );
        set(
            &mut self.server.shutdown_timeout,
            env.parse("SEAWALL_SHUTDOWN_TIMEOUT", humantime::parse_duration)?,
        );
        set(
            &mut self.server.max_body_bytes,
            env.parse("SEAWALL_MAX_BODY_BYTES", parse_from_str)?,
        );
        set(
            &mut self.database.url,
            env.string(&["SEAWALL_DATABASE_URL", "DATABASE_URL"]),
        );
        set(
            &mut self.database.max_connections,
            env.parse("SEAWALL_DB_MAX_CONNECTIONS", parse_from_str)?,
        );
        if let Some(url) = env.string(&["SEAWALL_REDIS_URL", "REDIS_URL"]) {
            self.redis.url = Some(url);
        }
        if let Some(token) = env.string(&["SEAWALL_ADMIN_TOKEN"]) {
            self.admin.token = Some(token);
        }
        set(
            &mut self.demo.seed,
            env.parse("SEAWALL_DEMO_SEED", parse_bool)?,
        );
        set(
            &mut self.demo.users,
            env.parse("SEAWALL_DEMO_USERS", parse_from_str)?,
        );
        set(
            &mut self.demo.contents,
            env.parse("SEAWALL_DEMO_CONTENTS", parse_from_str)?,
        );
        set(
            &mut self.demo.schedules_per_user,
            env.parse("SEAWALL_DEMO_SCHEDULES_PER_USER", parse_from_str)?,
        );
        set(
            &mut self.demo.history_per_user,
            env.parse("SEAWALL_DEMO_HISTORY_PER_USER", parse_from_str)?,
        );
        set(
            &mut self.perfmon.http_layer,
            env.parse("SEAWALL_PERFMON_LAYER", parse_bool)?,
        );
        set(
            &mut self.perfmon.slow_query,
            env.parse("SEAWALL_SLOW_QUERY", humantime::parse_duration)?,
        );
        set(
            &mut self.perfmon.slow_api,
            env.parse("SEAWALL_SLOW_API", humantime::parse_duration)?,
        );
        set(
            &mut self.log.filter,
            env.string(&["SEAWALL_LOG", "RUST_LOG"]),
        );
        set(
            &mut self.log.format,
            env.parse("SEAWALL_LOG_FORMAT", parse_log_format)?,
        );
        Ok(())
    }

    fn apply_cli(&mut self, cli: Cli) {
        let Cli {
            config: _,
            listen,
            database_url,
            redis_url,
            shutdown_timeout,
            max_body_bytes,
            no_seed,
            demo_users,
            demo_contents,
            demo_schedules_per_user,
            demo_history_per_user,
            db_max_connections,
            slow_query,
            slow_api,
            no_perfmon_layer,
            log,
            log_format,
        } = cli;
        set(&mut self.server.listen, listen);
        set(&mut self.server.shutdown_timeout, shutdown_timeout);
        set(&mut self.server.max_body_bytes, max_body_bytes);
        set(&mut self.database.url, database_url);
        set(&mut self.database.max_connections, db_max_connections);
        if redis_url.is_some() {
            self.redis.url = redis_url;
        }
        if no_seed {
            self.demo.seed = false;
        }
        set(&mut self.demo.users, demo_users);
        set(&mut self.demo.contents, demo_contents);
        set(&mut self.demo.schedules_per_user, demo_schedules_per_user);
        set(&mut self.demo.history_per_user, demo_history_per_user);
        if no_perfmon_layer {
            self.perfmon.http_layer = false;
        }
        set(&mut self.perfmon.slow_query, slow_query);
        set(&mut self.perfmon.slow_api, slow_api);
        set(&mut self.log.filter, log);
        set(&mut self.log.format, log_format);
    }

    /// Checks every rule a usable configuration follows: URL schemes, size
    /// and time limits, demo dataset bounds, the admin token's shape and a
    /// non-empty, parseable log filter. Error values have secrets masked.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_database()?;
        self.validate_redis()?;
        self.validate_admin()?;
        self.validate_demo()?;
        self.validate_perfmon()?;
        self.validate_log()
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let ServerConfig {
            shutdown_timeout,
            max_body_bytes,
            ..
        } = &self.server;
        if !(1..=MAX_BODY_BYTES_LIMIT).contains(max_body_bytes) {
            return Err(invalid(
                "server.max_body_bytes",
                max_body_bytes,
                format!("must be between 1 and {MAX_BODY_BYTES_LIMIT} (64 MiB)"),
            ));
        }
        if *shutdown_timeout > SHUTDOWN_TIMEOUT_LIMIT {
            return Err(invalid(
                "server.shutdown_timeout",
                humantime::format_duration(*shutdown_timeout),
                "must be at most 1h",
            ));
        }
        Ok(())
    }

    fn validate_database(&self) -> Result<(), ConfigError> {
        let DatabaseConfig {
            url,
            max_connections,
        } = &self.database;
        let rest = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme));
        match rest {
            None => {
                return Err(invalid(
                    "database.url",
                    format!("{:?}", mask_url(url)),
                    "the scheme must be sqlite:, postgres:// or postgresql://",
                ));
            }
            Some("") => {
                return Err(invalid(
                    "database.url",
                    format!("{url:?}"),
                    "nothing follows the scheme",
                ));
            }
            Some(_) => {}
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(max_connections) {
            return Err(invalid(
                "database.max_connections",
                max_connections,
                format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.redis.url else {
            return Ok(());
        };
        let rest = ["redis://", "rediss://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme));
        match rest {
            None => Err(invalid(
                "redis.url",
                format!("{:?}", mask_url(url)),
                "the scheme must be redis:// or rediss://",
            )),
            Some("") => Err(invalid(
                "redis.url",
                format!("{url:?}"),
                "nothing follows the scheme",
            )),
            Some(_) => Ok(()),
        }
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let Some(token) = &self.admin.token else {
            return Ok(());
        };
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(invalid(
                "admin.token",
                MASK,
                "must hold only visible ASCII characters (no whitespace)",
            ));
        }
        if token.len() < ADMIN_TOKEN_MIN_LEN {
            return Err(invalid(
                "admin.token",
                MASK,
                format!(
                    "must be at least {ADMIN_TOKEN_MIN_LEN} characters long, is {}",
                    token.len()
                ),
            ));
        }
        Ok(())
    }

    fn validate_demo(&self) -> Result<(), ConfigError> {
        let DemoConfig {
            seed: _,
            users,
            contents,
            schedules_per_user,
            history_per_user,
        } = self.demo;
        for (key, value) in [
            ("demo.users", users),
            ("demo.contents", contents),
            ("demo.schedules_per_user", schedules_per_user),
            ("demo.history_per_user", history_per_user),
        ] {
            if value > DEMO_SIZE_LIMIT {
                return Err(invalid(
                    key,
                    value,
                    format!("must be at most {DEMO_SIZE_LIMIT}"),
                ));
            }
        }
        if users == 0 {
            return Err(invalid("demo.users", users, "must be at least 1"));
        }
        if contents == 0 {
            return Err(invalid("demo.contents", contents, "must be at least 1"));
        }
        if schedules_per_user == 0 && history_per_user > 0 {
            return Err(invalid(
                "demo.schedules_per_user",
                schedules_per_user,
                "must be at least 1 when demo.history_per_user is not 0: every review is of a scheduled content",
            ));
        }
        if schedules_per_user > contents {
            return Err(invalid(
                "demo.schedules_per_user",
                schedules_per_user,
                format!(
                    "must be at most demo.contents ({contents}): each schedule is for a distinct content"
                ),
            ));
        }
        let history_rows = u64::from(users).checked_mul(u64::from(history_per_user));
        if history_rows.is_none_or(|rows| rows > DEMO_HISTORY_ROWS_LIMIT) {
            return Err(invalid(
                "demo.history_per_user",
                history_per_user,
                format!(
                    "demo.users × demo.history_per_user ({users} × {history_per_user}) must be at most {DEMO_HISTORY_ROWS_LIMIT}"
                ),
            ));
        }
        Ok(())
    }

    fn validate_perfmon(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("perfmon.slow_query", self.perfmon.slow_query),
            ("perfmon.slow_api", self.perfmon.slow_api),
        ] {
            if value.is_zero() {
                return Err(invalid(
                    key,
                    humantime::format_duration(value),
                    "must be greater than 0",
                ));
            }
        }
        Ok(())
    }

    fn validate_log(&self) -> Result<(), ConfigError> {
        let filter = &self.log.filter;
        if filter.trim().is_empty() {
            return Err(invalid(
                "log.filter",
                format!("{filter:?}"),
                "must not be empty",
            ));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(filter) {
            return Err(invalid(
                "log.filter",
                format!("{filter:?}"),
                error.to_string(),
            ));
        }
        Ok(())
    }

    /// A copy that is safe to log: passwords in the database and Redis URLs
    /// and the admin token are replaced by `***`.
    ///
    /// URL passwords are found without a URL parser. When a URL is malformed
    /// (an unescaped `/` or `#` in the password, say), everything from the
    /// first `:` after `://` up to the last `@` is masked: too much rather
    /// than too little. `password` query parameters are masked as well.
    #[must_use]
    pub fn masked(&self) -> Self {
        let mut masked = self.clone();
        masked.database.url = mask_url(&self.database.url);
        masked.redis.url = self.redis.url.as_deref().map(mask_url);
        if masked.admin.token.is_some() {
            masked.admin.token = Some(MASK.to_owned());
        }
        masked
    }

    /// Whether the database is PostgreSQL (`postgres://` or `postgresql://`).
    pub fn is_postgres(&self) -> bool {
        self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://")
    }

    /// Whether the database is SQLite (`sqlite:`).
    pub fn is_sqlite(&self) -> bool {
        self.database.url.starts_with("sqlite:")
    }
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

fn invalid(key: &'static str, value: impl Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Masks the password of a URL's user info and the values of query
/// parameters whose name contains `password`.
fn mask_url(url: &str) -> String {
    mask_query_passwords(&mask_userinfo_password(url))
}

fn mask_userinfo_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + "://".len();
    let rest = &url[rest_start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    // A well-formed URL has its user info inside the authority; otherwise the
    // password may hold an unescaped `/`, `?` or `#`, so take the last `@`.
    let Some(at) = authority.rfind('@').or_else(|| rest.rfind('@')) else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) if colon + 1 < userinfo.len() => {
            let password_start = rest_start + colon + 1;
            let password_end = rest_start + at;
            format!("{}{MASK}{}", &url[..password_start], &url[password_end..])
        }
        _ => url.to_owned(),
    }
}

fn mask_query_passwords(url: &str) -> String {
    let Some(query_start) = url.find('?').map(|question| question + 1) else {
        return url.to_owned();
    };
    let query_end = url[query_start..]
        .find('#')
        .map_or(url.len(), |hash| query_start + hash);
    let query = url[query_start..query_end]
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value))
                if !value.is_empty() && name.to_ascii_lowercase().contains("password") =>
            {
                format!("{name}={MASK}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{}{query}{}", &url[..query_start], &url[query_end..])
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://seawall.db?mode=rwc".to_owned(),
            max_connections: 8,
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            seed: true,
            users: 1_000,
            contents: 5_000,
            schedules_per_user: 200,
            history_per_user: 1_000,
        }
    }
}

impl Default for PerfmonConfig {
    fn default() -> Self {
        Self {
            http_layer: true,
            slow_query: Duration::from_secs(1),
            slow_api: Duration::from_secs(2),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Durations as human-readable strings (`"30s"`, `"1m 30s"`, `"250ms"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write as _;

    use clap::CommandFactory as _;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|&(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_with(args: &[&str], pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        from_sources(
            std::iter::once("seawall-api").chain(args.iter().copied()),
            env(pairs),
        )
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("create temp file");
        file.write_all(text.as_bytes()).expect("write temp file");
        file
    }

    fn path_of(file: &tempfile::NamedTempFile) -> &str {
        file.path().to_str().expect("temp path is UTF-8")
    }

    fn expect_invalid(result: Result<Config, ConfigError>, expected_key: &str) -> String {
        match result {
            Err(error @ ConfigError::Invalid { key, .. }) if key == expected_key => {
                error.to_string()
            }
            other => panic!("expected Invalid {{ key: {expected_key:?} }}, got {other:?}"),
        }
    }

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
        let config = from_sources(["seawall-api"], no_env).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(
            config.server.listen,
            "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.server.max_body_bytes, 65_536);
        assert_eq!(config.database.url, "sqlite://seawall.db?mode=rwc");
        assert_eq!(config.database.max_connections, 8);
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
    fn the_doc_example_file_is_valid() {
        let source = include_str!("config.rs");
        let start = source
            .find("//! ```toml\n")
            .expect("the module docs hold a TOML example");
        let text: String = source[start..]
            .lines()
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .map(|line| format!("{}\n", line.trim_start_matches("//!").trim_start()))
            .collect();
        let config: Config = toml::from_str(&text).expect("the example parses");
        config.validate().expect("the example validates");
        // Every section is set to something other than its default.
        let defaults = Config::default();
        assert_ne!(config.server, defaults.server);
        assert_ne!(config.database, defaults.database);
        assert_ne!(config.redis, defaults.redis);
        assert_ne!(config.admin, defaults.admin);
        assert_ne!(config.log, defaults.log);
    }

    #[test]
    fn the_file_overrides_defaults() {
        let file = toml_file(FULL_FILE);
        let config = load_with(&["--config", path_of(&file)], &[]).expect("file loads");
        assert_eq!(config.server.listen.to_string(), "10.0.0.1:1000");
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.server.max_body_bytes, 1000);
        assert_eq!(config.database.url, "postgres://file:filepw@db/file");
        assert_eq!(config.database.max_connections, 10);
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
        assert_eq!(config.database.max_connections, 20);
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
        assert_eq!(config.database.max_connections, 30);
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
        let mut pairs: Vec<(&str, &str)> = ENV_VARS.iter().map(|&name| (name, "")).collect();
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
        let version = Cli::command().render_version();
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    }

    #[test]
    fn help_names_every_variable_and_default() {
        let help = Cli::command().render_long_help().to_string();
        for name in ENV_VARS {
            assert!(
                help.contains(name),
                "--help does not mention {name}:\n{help}"
            );
        }
        let defaults = Config::default();
        for default in [
            defaults.server.listen.to_string(),
            humantime::format_duration(defaults.server.shutdown_timeout).to_string(),
            defaults.server.max_body_bytes.to_string(),
            defaults.database.url.clone(),
            defaults.database.max_connections.to_string(),
            defaults.demo.users.to_string(),
            defaults.demo.contents.to_string(),
            defaults.demo.schedules_per_user.to_string(),
            defaults.demo.history_per_user.to_string(),
            humantime::format_duration(defaults.perfmon.slow_query).to_string(),
            humantime::format_duration(defaults.perfmon.slow_api).to_string(),
            defaults.log.filter.clone(),
            "text".to_owned(),
        ] {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "--help lacks [default: {default}]:\n{help}"
            );
        }
        for flag in [
            "--config",
            "--listen",
            "--database-url",
            "--redis-url",
            "--shutdown-timeout",
            "--max-body-bytes",
            "--no-seed",
            "--demo-users",
            "--demo-contents",
            "--demo-schedules-per-user",
            "--demo-history-per-user",
            "--db-max-connections",
            "--slow-query",
            "--slow-api",
            "--no-perfmon-layer",
            "--log",
            "--log-format",
            "--version",
        ] {
            assert!(help.contains(flag), "--help lacks {flag}");
        }
        assert!(
            !help.contains("--admin-token"),
            "the token must not be a flag"
        );
        Cli::command().debug_assert();
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

    #[test]
    fn database_and_redis_schemes() {
        for url in [
            "sqlite://x.db",
            "sqlite::memory:",
            "postgres://h/db",
            "postgresql://u:p@h:5432/db",
        ] {
            load_with(&["--database-url", url], &[]).expect(url);
        }
        for url in [
            "mysql://h/db",
            "postgres:/h",
            "http://h",
            "",
            "sqlite:",
            "postgres://",
            "SQLITE://x.db",
        ] {
            expect_invalid(
                load_with(&[], &[("SEAWALL_DATABASE_URL", "sqlite://ok.db")]).and_then(
                    |mut config| {
                        config.database.url = url.to_owned();
                        config.validate().map(|()| config)
                    },
                ),
                "database.url",
            );
        }
        let message = expect_invalid(
            load_with(&["--database-url", "mysql://app:hunter2@h/db"], &[]),
            "database.url",
        );
        assert!(
            !message.contains("hunter2"),
            "the error masks the password: {message}"
        );

        for url in ["redis://h:6379", "rediss://:pw@h:6380/1"] {
            load_with(&["--redis-url", url], &[]).expect(url);
        }
        for url in ["http://h", "redis:/h", "redis://", "valkey://h"] {
            expect_invalid(load_with(&["--redis-url", url], &[]), "redis.url");
        }
        let file = toml_file("[redis]\nurl = \"\"\n");
        expect_invalid(load_with(&["--config", path_of(&file)], &[]), "redis.url");
    }

    #[test]
    fn admin_token_rules() {
        load_with(&[], &[("SEAWALL_ADMIN_TOKEN", "0123456789abcdef")]).expect("16 characters");
        for token in [
            "short",
            "0123456789abcde",
            "0123456789 abcdef",
            "0123456789abcdef\n",
            "0123456789abcdéf",
        ] {
            let message = expect_invalid(
                load_with(&[], &[("SEAWALL_ADMIN_TOKEN", token)]),
                "admin.token",
            );
            assert!(
                !message.contains(token.trim()),
                "the error hides the token: {message}"
            );
        }
        let file = toml_file("[admin]\ntoken = \"\"\n");
        expect_invalid(load_with(&["--config", path_of(&file)], &[]), "admin.token");
    }

    #[test]
    fn size_and_time_limits() {
        for (args, key) in [
            (&["--max-body-bytes", "0"][..], "server.max_body_bytes"),
            (&["--max-body-bytes", "67108865"], "server.max_body_bytes"),
            (&["--shutdown-timeout", "1h 1s"], "server.shutdown_timeout"),
            (&["--db-max-connections", "0"], "database.max_connections"),
            (
                &["--db-max-connections", "1001"],
                "database.max_connections",
            ),
            (&["--slow-query", "0s"], "perfmon.slow_query"),
            (&["--slow-api", "0ms"], "perfmon.slow_api"),
            (&["--log", ""], "log.filter"),
            (&["--log", "  "], "log.filter"),
            (&["--log", "=="], "log.filter"),
        ] {
            expect_invalid(load_with(args, &[]), key);
        }
        for args in [
            &["--max-body-bytes", "1"][..],
            &["--max-body-bytes", "67108864"],
            &["--shutdown-timeout", "1h"],
            &["--shutdown-timeout", "0s"],
            &["--db-max-connections", "1"],
            &["--db-max-connections", "1000"],
            &["--slow-query", "1ns"],
            &["--log", "seawall_api=debug,info"],
        ] {
            load_with(args, &[]).expect(args[1]);
        }
    }

    #[test]
    fn demo_size_limits() {
        for (args, key) in [
            (&["--demo-users", "0"][..], "demo.users"),
            (
                &["--demo-contents", "0", "--demo-schedules-per-user", "0"],
                "demo.contents",
            ),
            (
                &["--demo-contents", "10", "--demo-schedules-per-user", "11"],
                "demo.schedules_per_user",
            ),
            (&["--demo-users", "10000001"], "demo.users"),
            (&["--demo-contents", "4294967295"], "demo.contents"),
            (
                &["--demo-history-per-user", "10000001"],
                "demo.history_per_user",
            ),
            // 10^7 × 10^7 = 10^14 rows; u32 arithmetic would overflow.
            (
                &[
                    "--demo-users",
                    "10000000",
                    "--demo-history-per-user",
                    "10000000",
                ],
                "demo.history_per_user",
            ),
            (
                &["--demo-users", "100001", "--demo-history-per-user", "1000"],
                "demo.history_per_user",
            ),
        ] {
            expect_invalid(load_with(args, &[]), key);
        }
        load_with(
            &["--demo-users", "100000", "--demo-history-per-user", "1000"],
            &[],
        )
        .expect("exactly the limit");
        load_with(
            &[
                "--demo-users",
                "1",
                "--demo-contents",
                "1",
                "--demo-schedules-per-user",
                "1",
            ],
            &[],
        )
        .expect("the smallest dataset");

        // Values past every limit go through validate without panicking.
        let mut config = Config {
            demo: DemoConfig {
                seed: true,
                users: u32::MAX,
                contents: u32::MAX,
                schedules_per_user: u32::MAX,
                history_per_user: u32::MAX,
            },
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { .. })
        ));
        config.demo.users = DEMO_SIZE_LIMIT;
        config.demo.contents = DEMO_SIZE_LIMIT;
        config.demo.schedules_per_user = DEMO_SIZE_LIMIT;
        config.demo.history_per_user = DEMO_SIZE_LIMIT;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                key: "demo.history_per_user",
                ..
            })
        ));
    }

    #[test]
    fn masked_hides_passwords_and_the_token_only() {
        let config = load_with(
            &[
                "--database-url",
                "postgres://app:s3cret@db:5432/seawall",
                "--redis-url",
                "redis://:r3dis@cache:6379/0",
            ],
            &[("SEAWALL_ADMIN_TOKEN", "0123456789abcdef-secret")],
        )
        .expect("loads");
        let masked = config.masked();
        assert_eq!(masked.database.url, "postgres://app:***@db:5432/seawall");
        assert_eq!(
            masked.redis.url.as_deref(),
            Some("redis://:***@cache:6379/0")
        );
        assert_eq!(masked.admin.token.as_deref(), Some("***"));

        let mut unmasked = masked.clone();
        unmasked.database.url.clone_from(&config.database.url);
        unmasked.redis.url.clone_from(&config.redis.url);
        unmasked.admin.token.clone_from(&config.admin.token);
        assert_eq!(unmasked, config, "nothing else changes");

        assert_eq!(Config::default().masked(), Config::default());
    }

    #[test]
    fn masking_urls() {
        for (url, expected) in [
            (
                "postgres://app:pw@db:5432/seawall",
                "postgres://app:***@db:5432/seawall",
            ),
            (
                "postgres://app@db:5432/seawall",
                "postgres://app@db:5432/seawall",
            ),
            ("postgres://app:@db/seawall", "postgres://app:@db/seawall"),
            ("postgres://db:5432/seawall", "postgres://db:5432/seawall"),
            ("postgresql://app:p:w@db/x", "postgresql://app:***@db/x"),
            ("postgres://app:p@ss@db/x", "postgres://app:***@db/x"),
            (
                "postgres://app:pw@db/x?user=a@b",
                "postgres://app:***@db/x?user=a@b",
            ),
            // Unescaped `/`, `#` or `?` in the password: mask up to the last `@`.
            ("postgres://app:pa/ss@db/x", "postgres://app:***@db/x"),
            ("postgres://app:pa#ss@db/x", "postgres://app:***@db/x"),
            ("postgres://app:p?a/s@s@db/x", "postgres://app:***@db/x"),
            (
                "postgres://db/x?password=pw&sslmode=require",
                "postgres://db/x?password=***&sslmode=require",
            ),
            (
                "postgres://db/x?sslmode=require&PassWord=pw#frag",
                "postgres://db/x?sslmode=require&PassWord=***#frag",
            ),
            ("redis://:pw@cache:6379", "redis://:***@cache:6379"),
            ("redis://user:pw@cache", "redis://user:***@cache"),
            ("redis://cache:6379/0", "redis://cache:6379/0"),
            (
                "sqlite://seawall.db?mode=rwc",
                "sqlite://seawall.db?mode=rwc",
            ),
            ("sqlite:///tmp/a@b.db", "sqlite:///tmp/a@b.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("", ""),
            ("://", "://"),
            ("://:@", "://:@"),
            ("x://é:ü@ö", "x://é:***@ö"),
        ] {
            assert_eq!(mask_url(url), expected, "{url}");
        }
    }

    #[test]
    fn the_masked_config_serializes() {
        let file = toml_file(FULL_FILE);
        let config = load_with(&["--config", path_of(&file)], &[]).expect("loads");
        let masked = config.masked();

        let text = toml::to_string(&masked).expect("TOML");
        assert!(
            !text.contains("filepw") && !text.contains("file-token"),
            "{text}"
        );
        let back: Config = toml::from_str(&text).expect("the TOML reads back");
        assert_eq!(back, masked);

        let json = serde_json::to_string(&masked).expect("JSON");
        assert!(
            !json.contains("filepw") && !json.contains("file-token"),
            "{json}"
        );
        let back: Config = serde_json::from_str(&json).expect("the JSON reads back");
        assert_eq!(back, masked);

        // `None` fields serialize too.
        let text = toml::to_string(&Config::default().masked()).expect("TOML of the defaults");
        assert_eq!(
            toml::from_str::<Config>(&text).expect("reads back"),
            Config::default()
        );
    }

    #[test]
    fn errors_are_send_sync_and_static() {
        fn assert_traits<T: Send + Sync + 'static>() {}
        assert_traits::<ConfigError>();
    }
}
