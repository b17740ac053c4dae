//! The offline verbs of the `redshard-admin` binary (no proxy, no redis-server). The verbs
//! against a running cluster are tested in the workspace's integration binary
//! (`tests/integration/admin_cli.rs`); this test also makes `cargo test` build the binary
//! those tests run.

use std::process::Command;

#[test]
fn offline_verbs_still_work() {
    let out = Command::new(env!("CARGO_BIN_EXE_redshard-admin"))
        .args(["keyslot", "foo", "{user1}.a"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "foo\t12182\n{user1}.a\t8106\n"
    );
}
