//! Helpers shared by the test modules.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Test results: any error fails the test with its message.
pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The state letter of `pid` in `/proc/<pid>/stat` (`R`, `S`, `T` for
/// stopped, `Z` for a zombie...), or `None` once it is gone.
pub(crate) fn pid_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
}

/// Whether `pid` is a live (non-zombie) process.
pub(crate) fn pid_alive(pid: u32) -> bool {
    pid_state(pid).is_some_and(|state| state != 'Z')
}

/// Whether `pid` is stopped by a signal (SIGSTOP).
pub(crate) fn pid_stopped(pid: u32) -> bool {
    pid_state(pid) == Some('T')
}

/// Whether something accepts TCP connections on `addr`.
pub(crate) fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}
