//! `sakiko prompt build | check | normalize`: output and exit codes.

use assert_cmd::Command;
use predicates::prelude::*;
use sakiko_prompt::PREFIX;

fn sakiko() -> Command {
    Command::cargo_bin("sakiko").expect("the sakiko binary is built")
}

#[test]
fn build_full_form_with_derived_meta() {
    sakiko()
        .args([
            "prompt", "build", "--special", "1girl", "--artists", "artist_name", "--copyright",
            "bang dream! it's mygo!!!!!", "--general", "blue_hair, long hair, blue_hair",
            "--rating", "e", "--quality-percentile", "90", "--year", "2014", "--width", "768",
            "--height", "768",
        ])
        .assert()
        .success()
        .stdout(
            "<tags>\n<special>1girl</special>\n<artists>artist name</artists>\n\
             <copyright>bang dream! it's mygo!!!!!</copyright>\n<general>blue hair, long hair</general>\n\
             <rating>explicit, nsfw</rating>\n<meta>best quality, early, lowres</meta>\n</tags>\n",
        );
}

#[test]
fn build_simple_form_with_prefix_and_empty_elements() {
    sakiko()
        .args([
            "prompt",
            "build",
            "--form",
            "simple",
            "--artists",
            "someone",
            "--general",
            "solo, smile",
            "--meta",
            "masterpiece",
            "--with-prefix",
        ])
        .assert()
        .success()
        .stdout(format!(
            "{PREFIX} <tags>\n<artists>someone</artists>\nsolo, smile, masterpiece\n</tags>\n"
        ));
    sakiko()
        .args(["prompt", "build", "--keep-empty", "--general", "sky"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "<copyright></copyright>\n<general>sky</general>",
        ));
}

#[test]
fn build_rejects_invalid_input() {
    sakiko()
        .args(["prompt", "build", "--special", "1girls"])
        .assert()
        .code(1)
        .stdout("")
        .stderr("error: `1girls` is not a <special> tag; did you mean `1girl`?\n");
    sakiko()
        .args(["prompt", "build", "--rating", "x"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("`x` is not a rating"));
    sakiko()
        .args(["prompt", "build", "--quality-percentile", "120"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("outside 0–100"));
    sakiko()
        .args(["prompt", "build", "--width", "0", "--height", "10"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("impossible"));
    // clap usage errors exit 2.
    sakiko()
        .args(["prompt", "build", "--width", "5"])
        .assert()
        .code(2);
}

#[test]
fn check_valid_prompt_from_stdin() {
    sakiko()
        .args(["prompt", "check"])
        .write_stdin("<tags>\n<special>male_focus</special>\n<general>sky</general>\n</tags>\n")
        .assert()
        .success()
        .stdout("");
}

#[test]
fn check_reports_errors_and_warnings_from_a_file() {
    let dir = std::env::temp_dir().join(format!("sakiko-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prompt.xml");
    std::fs::write(
        &file,
        "<tags>\n<special>1girls</special>\n<meta>masterpiece, shiny</meta>\n</tags>\n",
    )
    .unwrap();
    sakiko()
        .args(["prompt", "check"])
        .arg(&file)
        .assert()
        .code(1)
        .stdout(
            "error 2:10: `1girls` is not a <special> tag; did you mean `1girl`?\n\
             warning 3:20: unknown meta tag `shiny`: the card defines quality, period and resolution tags\n",
        );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_warnings_only_exit_zero() {
    sakiko()
        .args(["prompt", "check"])
        .write_stdin("<tags><general>long_hair</general></tags>")
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "warning 1:16: `long_hair` has underscores",
        ));
}

#[test]
fn check_binary_and_missing_file() {
    sakiko()
        .args(["prompt", "check"])
        .write_stdin(vec![0x3c, 0xff, 0x00, 0x01])
        .assert()
        .code(1)
        .stdout(predicate::str::starts_with(
            "error 1:2: the input is not UTF-8",
        ));
    sakiko()
        .args(["prompt", "check", "/nonexistent/prompt.xml"])
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with(
            "error: /nonexistent/prompt.xml:",
        ));
}

#[test]
fn normalize_prompter_output() {
    let prompter = "<tags>\n<special>1girl</special>\n<copyrights>bang_dream!</copyrights>\n\
                    <general>long_hair, ^_^</general>\n</tags>";
    let expected = "<tags>\n<special>1girl</special>\n<copyright>bang dream!</copyright>\n\
                    <general>long hair, ^_^</general>\n<meta>masterpiece, newest, highres</meta></tags>\n";
    sakiko()
        .args(["prompt", "normalize"])
        .write_stdin(prompter)
        .assert()
        .success()
        .stdout(expected)
        .stderr("");
    sakiko()
        .args([
            "prompt",
            "normalize",
            "--with-prefix",
            "--emoticons",
            "replace",
        ])
        .write_stdin(prompter)
        .assert()
        .success()
        .stdout(format!("{PREFIX} {}", expected.replace("^_^", "^ ^")));
}

#[test]
fn normalize_reports_remaining_errors() {
    sakiko()
        .args(["prompt", "normalize"])
        .write_stdin("<tags><special>1girls</special></tags>")
        .assert()
        .code(1)
        .stdout("<tags><special>1girls</special><meta>masterpiece, newest, highres</meta></tags>\n")
        .stderr(predicate::str::contains("error 1:16"));
}
