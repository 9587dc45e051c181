//! Helpers shared by the test modules.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Test results: any error fails the test with its message.
pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Whether `pid` is a live (non-zombie) process.
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next());
            state != Some('Z')
        }
        Err(_) => false,
    }
}

/// Whether something accepts TCP connections on `addr`.
pub(crate) fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub(crate) fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
