//! Process metrics from `/proc`.

use std::sync::Barrier;
use std::time::{SystemTime, UNIX_EPOCH};

use openmetrics_parser::PrometheusValue;
use openmetrics_parser::prometheus::parse_prometheus;
use seawall_perfmon::{Collector, Error, Monitor, ProcessCollector};

use crate::openmetrics::{parse, value};

const NAMES: [&str; 7] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
];

#[cfg(target_os = "linux")]
#[test]
fn process_metrics_are_present_and_plausible() -> Result<(), Error> {
    let monitor = Monitor::builder().namespace("app").build()?;
    monitor.register_collector(ProcessCollector::new())?;

    // Two threads parked at a barrier while the scrape runs.
    let barrier = Barrier::new(3);
    let text = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                barrier.wait();
                barrier.wait();
            });
        }
        barrier.wait();
        let text = monitor.openmetrics();
        barrier.wait();
        text
    });

    // The standard names, never namespaced.
    assert!(
        text.contains("# TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n"),
        "{text}"
    );
    assert!(text.contains("\nprocess_cpu_seconds_total "));
    assert!(text.contains(
        "# TYPE process_resident_memory_bytes gauge\n# UNIT process_resident_memory_bytes bytes\n"
    ));
    assert!(text.contains("# UNIT process_start_time_seconds seconds\n"));
    assert!(!text.contains("app_process_"));

    let exposition = parse(&text);
    let get = |family: &str| value(&exposition, family, &[]);
    let cpu = get("process_cpu_seconds");
    let resident = get("process_resident_memory_bytes");
    let virtual_memory = get("process_virtual_memory_bytes");
    let open = get("process_open_fds");
    let max = get("process_max_fds");
    let threads = get("process_threads");
    let start = get("process_start_time_seconds");
    assert!(cpu >= 0.0, "cpu {cpu}");
    assert!(resident > 0.0, "rss {resident}");
    assert!(
        virtual_memory >= resident,
        "virtual {virtual_memory} rss {resident}"
    );
    assert!(open >= 3.0, "open fds {open}");
    assert!(max >= open, "max fds {max}, open {open}");
    assert!(threads >= 3.0, "threads {threads}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // `btime` is whole seconds, so the start may read up to a second late.
    assert!(
        start > 1.0e9 && start <= now + 1.0,
        "start {start}, now {now}"
    );

    // CPU time is a counter: it never goes back.
    let burn: u64 = (0..2_000_000_u64).fold(0, |acc, x| acc.wrapping_add(x.wrapping_mul(x)));
    assert!(burn > 0);
    let later = value(&parse(&monitor.openmetrics()), "process_cpu_seconds", &[]);
    assert!(later >= cpu, "cpu went from {cpu} to {later}");

    let prometheus = monitor.prometheus();
    let parsed = parse_prometheus(&prometheus).unwrap_or_else(|e| panic!("{e:?}\n{prometheus}"));
    for name in NAMES {
        assert!(
            parsed.families.contains_key(name),
            "no {name} in\n{prometheus}"
        );
    }
    let Some(family) = parsed.families.get("process_cpu_seconds_total") else {
        panic!("no process_cpu_seconds_total")
    };
    assert!(matches!(
        family.iter_samples().next().map(|s| &s.value),
        Some(PrometheusValue::Counter(_))
    ));
    Ok(())
}

#[test]
fn every_family_has_a_standard_name_and_one_sample() {
    let families = ProcessCollector::new().collect();
    if cfg!(target_os = "linux") {
        assert_eq!(families.len(), NAMES.len());
    }
    for family in &families {
        assert!(NAMES.contains(&family.name()), "{}", family.name());
        assert_eq!(family.samples().len(), 1);
        assert!(family.samples()[0].0.is_empty());
    }
}
