//! The command reference in docs/commands.md is clap's own help text, kept in sync: this test
//! renders it from the binary and fails when the file differs (`TD_UPDATE_DOCS=1` rewrites it).
//! Also: shell completions are generated for every shell.

use std::process::Command;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["validate"],
    &["push"],
    &["run"],
    &["render"],
    &["rollout"],
    &["status"],
    &["rollback"],
    &["destroy"],
    &["ami", "build"],
    &["logs"],
    &["bench"],
    &["completions"],
];

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
        .args(args)
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

fn reference() -> String {
    let mut doc = String::from(
        "# Command reference\n\nGenerated from the tool's own help (`triton-deploy <command> --help`); \
         `TD_UPDATE_DOCS=1 cargo test --test docs` regenerates it.\n",
    );
    for args in COMMANDS {
        let title = if args.is_empty() {
            "triton-deploy".to_string()
        } else {
            format!("triton-deploy {}", args.join(" "))
        };
        doc.push_str(&format!("\n## `{title}`\n\n```text\n{}```\n", help(args)));
    }
    doc
}

#[test]
fn the_command_reference_is_clap_s_help() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/commands.md");
    let want = reference();
    if std::env::var_os("TD_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/commands.md is out of date: run TD_UPDATE_DOCS=1 cargo test --test docs"
    );
}

#[test]
fn completions_are_generated_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(env!("CARGO_BIN_EXE_triton-deploy"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        for sub in ["rollout", "rollback", "destroy", "validate"] {
            assert!(text.contains(sub), "{shell} completes {sub}");
        }
    }
}

#[test]
fn every_command_is_in_the_reference() {
    let top = help(&[]);
    let listed = top
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    for line in listed.lines() {
        let name = line.split_whitespace().next().unwrap();
        if name == "help" {
            continue;
        }
        assert!(
            COMMANDS.iter().any(|c| c.first() == Some(&name)),
            "`{name}` is not in docs/commands.md's COMMANDS"
        );
    }
}
