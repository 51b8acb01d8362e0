//! `herd-perf syn-flood` end to end, as root: in both of herd's modes, every owned SYN the
//! generator gets through is absorbed and answered by the receiver's stack, and none of the
//! other nodes' is.

use std::process::Command;

use serde_json::Value;

#[test]
fn both_modes_absorb_their_share_of_a_syn_flood_and_the_stack_answers_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_herd-perf"))
        .args(["syn-flood", "--seconds", "0.5", "--json"])
        .output()
        .expect("herd-perf runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herd-perf failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let rows = report["rows"].as_array().expect("rows");
    let found: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["contender"].as_str().unwrap(),
                r["traffic"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("xdp", "owned-syns"),
            ("xdp", "mixed-syns"),
            ("afxdp", "owned-syns"),
            ("afxdp", "mixed-syns"),
        ]
    );
    for row in rows {
        let number = |field: &str| row[field].as_f64().unwrap();
        let what = format!("{} on the {}", row["name"], row["traffic"]);
        assert!(number("received_kps") > 0.0, "{what}: nothing received");
        assert!(
            (number("absorbed_share") - number("expected_share")).abs() < 0.01,
            "{what}: absorbed {} of the SYNs, not {}",
            number("absorbed_share"),
            number("expected_share")
        );
        // The stack's counters and herd's are read a moment apart: close, not equal.
        let (absorbed, took) = (number("absorbed_kps"), number("stack_in_kps"));
        assert!(
            (took - absorbed).abs() <= absorbed * 0.1 + 1.0,
            "{what}: herd absorbed {absorbed} k/s, the stack took {took} k/s"
        );
        assert!(number("syn_acks_kps") > 0.0, "{what}: no SYN-ACK");
        assert_eq!(row["checksum_errors"], 0, "{what}");
        assert!(
            number("program_ns") > 0.0,
            "{what}: the program was not timed"
        );
    }
}
