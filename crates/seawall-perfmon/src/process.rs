//! Process metrics under the standard names of the Prometheus client
//! libraries, read from `/proc` on Linux.
//!
//! Everything is read at scrape time with plain file reads: no `libc`, no
//! `unsafe`. A file that cannot be read or parsed leaves out the metrics it
//! feeds, never the scrape. The clock tick comes from the auxiliary vector
//! (`/proc/self/auxv`, `AT_CLKTCK`), as glibc's `sysconf(_SC_CLK_TCK)` reads
//! it, with Linux's usual 100 as the fallback; memory sizes come in bytes or kB,
//! so the page size is never needed.

use crate::collector::{CollectedFamily, Collector};

/// The clock tick when the auxiliary vector does not say.
const DEFAULT_TICKS_PER_SECOND: u64 = 100;

/// Reports the process's CPU time, memory, file descriptors, threads and start
/// time, under the names every Prometheus client library uses (never prefixed
/// with the monitor's namespace):
///
/// | name | type | from |
/// | --- | --- | --- |
/// | `process_cpu_seconds_total` | counter | `/proc/self/stat` (user + system) |
/// | `process_resident_memory_bytes` | gauge | `/proc/self/status` (`VmRSS`) |
/// | `process_virtual_memory_bytes` | gauge | `/proc/self/stat` (`vsize`) |
/// | `process_open_fds` | gauge | `/proc/self/fd` |
/// | `process_max_fds` | gauge | `/proc/self/limits` (soft limit) |
/// | `process_threads` | gauge | `/proc/self/status` (`Threads`) |
/// | `process_start_time_seconds` | gauge | `/proc/self/stat` and `/proc/stat` |
///
/// On other operating systems it reports nothing. A value that cannot be read
/// is left out of that scrape.
///
/// ```
/// use seawall_perfmon::{Monitor, ProcessCollector};
///
/// # fn main() -> Result<(), seawall_perfmon::Error> {
/// let monitor = Monitor::builder().namespace("app").build()?;
/// monitor.register_collector(ProcessCollector::new())?;
/// if cfg!(target_os = "linux") {
///     assert!(monitor.prometheus().contains("\nprocess_resident_memory_bytes "));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ProcessCollector {
    ticks_per_second: u64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    /// A collector for the current process.
    pub fn new() -> Self {
        let ticks_per_second = read_bytes("/proc/self/auxv")
            .and_then(|auxv| clock_ticks(&auxv))
            .unwrap_or(DEFAULT_TICKS_PER_SECOND);
        Self { ticks_per_second }
    }
}

impl Collector for ProcessCollector {
    fn collect(&self) -> Vec<CollectedFamily> {
        if cfg!(target_os = "linux") {
            self.linux()
        } else {
            Vec::new()
        }
    }
}

impl ProcessCollector {
    #[allow(clippy::cast_precision_loss)] // exposition values
    fn linux(&self) -> Vec<CollectedFamily> {
        let stat = read("/proc/self/stat").and_then(|text| parse_stat(&text));
        let status = read("/proc/self/status").unwrap_or_default();
        let boot_time = read("/proc/stat").and_then(|text| boot_time(&text));
        let ticks = self.ticks_per_second as f64;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.filter(Result::is_ok).count());

        let cpu = CollectedFamily::counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            &[],
        );
        let gauge = |name, help| CollectedFamily::gauge(name, help, &[]);
        [
            (cpu, stat.map(|s| s.cpu_ticks as f64 / ticks)),
            (
                gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                ),
                status_value(&status, "VmRSS").map(|kb| kb.saturating_mul(1024) as f64),
            ),
            (
                gauge(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                ),
                stat.map(|s| s.vsize as f64),
            ),
            (
                gauge("process_open_fds", "Number of open file descriptors."),
                open_fds.map(|n| n as f64),
            ),
            (
                gauge(
                    "process_max_fds",
                    "Maximum number of open file descriptors.",
                ),
                read("/proc/self/limits").and_then(|text| max_open_files(&text)),
            ),
            (
                gauge("process_threads", "Number of OS threads in the process."),
                status_value(&status, "Threads").map(|n| n as f64),
            ),
            (
                gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                ),
                stat.zip(boot_time)
                    .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / ticks),
            ),
        ]
        .into_iter()
        .filter_map(|(family, value)| Some(family.sample(&[], value?).without_namespace()))
        .collect()
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_bytes(path: &str) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The fields of `/proc/self/stat` this collector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// User plus system time, in clock ticks.
    cpu_ticks: u64,
    /// Clock ticks from boot to the process's start.
    start_ticks: u64,
    /// Virtual memory size in bytes.
    vsize: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// The number in a `/proc/self/status` line such as `VmRSS:    1234 kB` or
/// `Threads:  4`.
fn status_value(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_ascii_whitespace().next()?.parse().ok()
    })
}

/// The soft limit on open files from `/proc/self/limits`; `unlimited` is
/// `+Inf`.
fn max_open_files(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .strip_prefix("Max open files")?
        .split_ascii_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(f64::INFINITY);
    }
    #[allow(clippy::cast_precision_loss)] // exposition value
    soft.parse::<u64>().ok().map(|limit| limit as f64)
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// `AT_CLKTCK` from an auxiliary vector: pairs of native-endian words, key
/// then value, ending with `AT_NULL`.
fn clock_ticks(auxv: &[u8]) -> Option<u64> {
    const AT_NULL: u64 = 0;
    const AT_CLKTCK: u64 = 17;
    let word = std::mem::size_of::<usize>();
    let read = |bytes: &[u8]| -> Option<u64> {
        match word {
            8 => Some(u64::from_ne_bytes(bytes.try_into().ok()?)),
            4 => Some(u64::from(u32::from_ne_bytes(bytes.try_into().ok()?))),
            _ => None,
        }
    };
    for pair in auxv.chunks_exact(2 * word) {
        let (key, value) = pair.split_at(word);
        match read(key)? {
            AT_NULL => return None,
            AT_CLKTCK => return read(value).filter(|ticks| *ticks > 0),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    250 50 0 0 20 0 7 0 98765 123456789 2000 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 98765,
                vsize: 123_456_789,
            })
        );
        assert_eq!(parse_stat("1234 (prog) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn status_limits_and_boot_time_are_read() {
        let status = "Name:\tprog\nVmRSS:\t    2048 kB\nThreads:\t7\n";
        assert_eq!(status_value(status, "VmRSS"), Some(2048));
        assert_eq!(status_value(status, "Threads"), Some(7));
        assert_eq!(status_value(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            Some(f64::INFINITY)
        );
        assert_eq!(max_open_files("Max processes 10 10 processes"), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
    }

    #[test]
    fn the_clock_tick_comes_from_the_auxiliary_vector() {
        let word = std::mem::size_of::<usize>();
        let encode = |pairs: &[(u64, u64)]| -> Vec<u8> {
            pairs
                .iter()
                .flat_map(|(k, v)| [*k, *v])
                .flat_map(|w| {
                    let bytes = w.to_ne_bytes();
                    if word == 8 {
                        bytes.to_vec()
                    } else {
                        let narrow = u32::try_from(w).unwrap_or(u32::MAX);
                        narrow.to_ne_bytes().to_vec()
                    }
                })
                .collect()
        };
        assert_eq!(
            clock_ticks(&encode(&[(6, 4096), (17, 250), (0, 0)])),
            Some(250)
        );
        assert_eq!(clock_ticks(&encode(&[(6, 4096), (0, 0), (17, 250)])), None);
        assert_eq!(clock_ticks(&encode(&[(17, 0), (0, 0)])), None);
        assert_eq!(clock_ticks(&[1, 2, 3]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        assert!(
            read_bytes("/proc/self/auxv")
                .and_then(|a| clock_ticks(&a))
                .is_some()
        );
        let families = ProcessCollector::new().collect();
        assert_eq!(families.len(), 7, "{families:?}");
    }
}
