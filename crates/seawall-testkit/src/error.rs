use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting, driving or talking to a test server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required executable is not installed.
    #[error(
        "`{binary}` was not found ({searched}); install it with `{install}` (or run the project's `scripts/setup`)"
    )]
    MissingBinary {
        /// The executable that was looked for, e.g. `redis-server`.
        binary: String,
        /// Where it was looked for.
        searched: String,
        /// The command that installs it on Debian/Ubuntu.
        install: &'static str,
    },

    /// An OS-level operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted, including the path or address involved.
        context: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A server process exited before it became ready.
    #[error("{what} exited during startup; last lines of {log}:\n{log_tail}")]
    Exited {
        /// Which server, e.g. `redis-server on 127.0.0.1:12345`.
        what: String,
        /// The server's log file.
        log: PathBuf,
        /// The end of the server's log, which normally says why it exited.
        log_tail: String,
    },

    /// A server process did not become ready in time.
    #[error(
        "{what} was not ready after {waited:?} ({last_problem}); last lines of {log}:\n{log_tail}"
    )]
    StartTimeout {
        /// Which server, e.g. `redis-server on 127.0.0.1:12345`.
        what: String,
        /// How long startup was waited for.
        waited: Duration,
        /// The last readiness probe failure.
        last_problem: String,
        /// The server's log file.
        log: PathBuf,
        /// The end of the server's log.
        log_tail: String,
    },

    /// No free loopback port could be found.
    #[error("no free loopback port found after {attempts} attempts in {range}")]
    NoFreePort {
        /// How many candidate ports were tried.
        attempts: u32,
        /// The port range that was searched.
        range: String,
    },

    /// A helper command (e.g. `redis-cli --cluster create`, `initdb`, `psql`) failed.
    #[error("`{command}` failed ({status}); output:\n{output}")]
    CommandFailed {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// Its combined stdout and stderr.
        output: String,
    },

    /// The Redis Cluster did not reach a healthy state in time.
    #[error("redis cluster was not healthy after {waited:?}: {problem}")]
    ClusterNotReady {
        /// How long was waited.
        waited: Duration,
        /// The last observed problem, e.g. which node reported `cluster_state:fail`.
        problem: String,
    },

    /// Sending a signal to a process failed.
    #[error("sending {signal} to pid {pid} failed: {source}")]
    Signal {
        /// The target process id.
        pid: u32,
        /// The signal name, e.g. `SIGSTOP`.
        signal: &'static str,
        /// The error reported by the kernel.
        source: nix::errno::Errno,
    },

    /// The operation needs a running server, but it was killed and not restarted.
    #[error("{what} is not running (it was killed); call restart() first")]
    NotRunning {
        /// Which server.
        what: String,
    },

    /// A RESP request got no reply within the connection's timeout.
    #[error(
        "no reply from {addr} within {timeout:?}; the connection is now unusable, open a new one"
    )]
    Timeout {
        /// The server address.
        addr: SocketAddr,
        /// The timeout that elapsed.
        timeout: Duration,
    },

    /// The server sent something that is not valid RESP2.
    #[error("protocol error from {addr}: {detail}")]
    Protocol {
        /// The server address.
        addr: SocketAddr,
        /// What was wrong.
        detail: String,
    },

    /// A connection was used again after an earlier timeout or I/O error left it out of sync.
    #[error(
        "connection to {addr} is unusable after an earlier timeout or I/O error; open a new one"
    )]
    Broken {
        /// The server address.
        addr: SocketAddr,
    },

    /// The server answered with an error reply where success was expected.
    #[error("server replied with an error: {message}")]
    Server {
        /// The error reply text, e.g. `NOAUTH Authentication required.`.
        message: String,
    },

    /// The server answered with an unexpected (non-error) reply.
    #[error("unexpected reply to {command}: {reply}")]
    UnexpectedReply {
        /// The command that was sent.
        command: String,
        /// The reply, rendered for humans.
        reply: String,
    },

    /// Generating the throwaway CA or server certificate for a TLS server failed.
    #[error("generating the throwaway TLS {what} failed: {source}")]
    Certificate {
        /// What was being generated, e.g. `server certificate`.
        what: &'static str,
        /// The error reported by `rcgen`.
        source: rcgen::Error,
    },

    /// A host name that the network or fleet does not have.
    #[error("no host is called {name:?}; the hosts are: {known}")]
    UnknownHost {
        /// The name asked for.
        name: String,
        /// Every host's name.
        known: String,
    },

    /// What was asked needs a fleet on network hosts, or is not available on them.
    #[error("{what}")]
    Unsupported {
        /// What cannot be done, and what to do instead.
        what: String,
    },

    /// The current user cannot run PostgreSQL.
    #[error("cannot run PostgreSQL: {reason}")]
    PostgresUser {
        /// Why, and how to fix it.
        reason: String,
    },
}

/// Result type used throughout this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
