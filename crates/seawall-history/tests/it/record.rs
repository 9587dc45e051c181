use std::sync::Arc;

use seawall_history::{
    Call, Error, FinalState, History, Options, Outcome, Recorder, Workload, check,
};
use serde_json::json;

use crate::support::{Lines, START, at};

#[test]
fn threads_record_one_file_that_reads_back_paired() -> Result<(), Error> {
    let dir = tempfile::tempdir().map_err(|source| Error::Io {
        path: "tempdir".into(),
        source,
    })?;
    let path = dir.path().join("clients.jsonl");
    let recorder = Arc::new(Recorder::create(&path)?);
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let recorder = Arc::clone(&recorder);
            std::thread::spawn(move || -> Result<(), Error> {
                let process = format!("points-{thread}");
                for n in 0..250 {
                    let key = format!("{process}-{n}");
                    let op = recorder.invoke(
                        &process,
                        Workload::Points,
                        "change",
                        json!({"user": thread + 1, "key": key, "amount": 1}),
                    )?;
                    match n % 3 {
                        0 => op.ok(json!({"balance": n}))?,
                        1 => op.fail(json!({"status": 409}))?,
                        _ => drop(op), // cancelled: recorded as info
                    }
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a recording thread")?;
    }
    recorder.fault("kill", json!({"host": "api-1"}))?;
    drop(recorder);

    let history = History::read(&[&path])?;
    assert_eq!(history.ops().len(), 1000);
    assert_eq!(history.events(), 2001);
    assert_eq!(history.faults().len(), 1);
    assert_eq!(history.faults()[0].hosts(), vec!["api-1"]);
    let ok = history.ops().iter().filter(|op| op.outcome.is_ok()).count();
    let info = history
        .ops()
        .iter()
        .filter(|op| op.outcome.is_info())
        .count();
    assert_eq!((ok, info), (4 * 84, 4 * 83));
    assert!(
        history
            .ops()
            .windows(2)
            .all(|pair| pair[0].invoke <= pair[1].invoke)
    );
    assert!(
        history
            .ops()
            .iter()
            .all(|op| op.outcome.at().is_some_and(|done| done >= op.invoke))
    );
    // An empty ledger: only the tally is looked at here.
    let state = FinalState::parse("state.json", r#"{"points": []}"#)?;
    let report = check(&history, &state, &Options::default())?;
    assert_eq!(
        report.points.as_ref().map(|points| points.changes.total()),
        Some(1000)
    );
    Ok(())
}

#[test]
fn files_merge_by_time_with_ids_of_their_own() -> Result<(), Error> {
    let mut clients = Lines::default();
    clients.op(
        "cache-1",
        "cache",
        "write",
        10,
        json!({"key": "k", "value": 1}),
        "ok",
        12,
        json!({}),
    );
    let mut others = Lines::default();
    // Same id 0, another file: another operation.
    others.op(
        "cache-2",
        "cache",
        "read",
        5,
        json!({"key": "k"}),
        "ok",
        6,
        json!({"value": null}),
    );
    others.fault(0, "pause", json!({"host": "redis-1"}));
    let history = History::merge([
        History::parse("a.jsonl", &clients.text())?,
        History::parse("b.jsonl", &others.text())?,
    ]);
    assert_eq!(history.start(), Some(START));
    let processes: Vec<&str> = history.ops().iter().map(|op| op.process.as_str()).collect();
    assert_eq!(processes, ["cache-2", "cache-1"]);
    assert_eq!(
        history.ops()[1].call,
        Call::Write {
            key: "k".to_owned(),
            value: 1
        }
    );
    assert_eq!(history.ops()[1].outcome, Outcome::Ok(at(12)));
    Ok(())
}

/// The error a history's text gives, as a string.
fn error_of(text: &str) -> String {
    match History::parse("drill.jsonl", text) {
        Ok(history) => panic!("read {history:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn bad_lines_name_their_file_and_line() {
    let invoke = r#"{"t":1,"process":"p","type":"invoke","id":1,"workload":"sale","op":"order","value":{"sale":1,"user":2}}"#;
    let error = error_of(&format!("{invoke}\n\nnot json"));
    assert!(error.starts_with("drill.jsonl:3: not an event"), "{error}");

    let error = error_of(
        r#"{"t":1,"process":"p","type":"ok","id":4,"workload":"sale","op":"order","value":{}}"#,
    );
    assert!(
        error.starts_with("drill.jsonl:1: id 4 completes before"),
        "{error}"
    );

    let error = error_of(&format!("{invoke}\n{invoke}"));
    assert!(
        error.starts_with("drill.jsonl:2: id 1 is invoked twice"),
        "{error}"
    );

    let error = error_of(
        r#"{"t":1,"process":"p","type":"invoke","id":1,"workload":"sale","op":"order","value":{"sale":1}}"#,
    );
    assert!(
        error.starts_with("drill.jsonl:1: sale order: value: missing field `user`"),
        "{error}"
    );

    let error =
        error_of(r#"{"t":1,"process":"p","type":"invoke","id":1,"workload":"bank","op":"x"}"#);
    assert!(error.starts_with("drill.jsonl:1: not an event"), "{error}");

    let error = error_of(
        r#"{"t":1,"process":"p","type":"invoke","id":1,"workload":"cache","op":"delete"}"#,
    );
    assert!(
        error.contains("cache has no operation \"delete\""),
        "{error}"
    );

    let ok_without_order = format!(
        "{invoke}\n{}",
        r#"{"t":2,"process":"p","type":"ok","id":1,"workload":"sale","op":"order","value":{"unit":1}}"#
    );
    let error = error_of(&ok_without_order);
    assert!(
        error.starts_with("drill.jsonl:2: sale order ok: value: missing field `order`"),
        "{error}"
    );

    let read = r#"{"t":1,"process":"p","type":"invoke","id":1,"workload":"cache","op":"read","value":{"key":"k"}}"#;
    let error = error_of(&format!(
        "{read}\n{}",
        r#"{"t":2,"process":"p","type":"ok","id":1,"workload":"cache","op":"read","value":{}}"#
    ));
    assert!(error.contains("missing field `value`"), "{error}");

    let late = format!(
        "{invoke}\n{}\n{}",
        r#"{"t":2,"process":"p","type":"fail","id":1,"workload":"sale","op":"order"}"#,
        r#"{"t":3,"process":"p","type":"fail","id":1,"workload":"sale","op":"order"}"#
    );
    let error = error_of(&late);
    assert!(
        error.starts_with("drill.jsonl:3: id 1 completes twice"),
        "{error}"
    );
}

#[test]
fn a_completion_must_repeat_its_invokes_process_workload_and_operation() {
    let invoke = r#"{"t":1,"process":"queue-1","type":"invoke","id":1,"workload":"queue","op":"enqueue","value":{"key":"k"}}"#;
    for (completion, differs) in [
        (
            r#"{"t":2,"process":"queue-2","type":"ok","id":1,"workload":"queue","op":"enqueue","value":{"job":"notification:1"}}"#,
            "process",
        ),
        (
            r#"{"t":2,"process":"queue-1","type":"fail","id":1,"workload":"sale","op":"enqueue"}"#,
            "workload",
        ),
        (
            r#"{"t":2,"process":"queue-1","type":"fail","id":1,"op":"enqueue"}"#,
            "missing workload",
        ),
        (
            r#"{"t":2,"process":"queue-1","type":"info","id":1,"workload":"queue","op":"order"}"#,
            "operation",
        ),
    ] {
        let error = error_of(&format!("{invoke}\n{completion}"));
        assert!(
            error.starts_with("drill.jsonl:2: id 1 completes as")
                && error.contains("but was invoked as queue-1 queue enqueue"),
            "{differs}: {error}"
        );
    }
}

#[test]
fn a_missing_file_and_a_bad_state_are_errors() {
    let missing = History::read(&["/nonexistent/history.jsonl"]);
    assert!(matches!(missing, Err(Error::Io { .. })));
    let state = FinalState::parse("state.json", r#"{"sales": []}"#);
    assert!(matches!(state, Err(Error::State { .. })));
}
