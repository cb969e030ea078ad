//! The README's main-job command, read from the README itself and run with the built `sakiko`
//! (what `cargo run --release -p sakiko-cli --` runs), so the documented set-up keeps working
//! whatever the README says next.

use assert_cmd::Command;

/// The arguments after `--` of the README's `cargo run … -p sakiko-cli -- generate …` line.
fn readme_generate_args() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md is readable");
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run --release -p sakiko-cli -- generate "))
        .expect(
            "the README shows the main job as `cargo run --release -p sakiko-cli -- generate …`",
        );
    let words = shlex::split(line).expect("the README's command is valid shell");
    let after = words
        .iter()
        .position(|w| w == "--")
        .expect("`--` before the CLI's arguments");
    words[after + 1..].to_vec()
}

#[test]
fn the_readme_main_job_writes_an_image() {
    let args = readme_generate_args();
    let out = args
        .iter()
        .position(|a| a == "-o")
        .and_then(|i| args.get(i + 1))
        .expect("the README's command names its output with `-o`")
        .clone();
    let dir = tempfile::tempdir().expect("a temporary folder");
    // Repository-relative paths as in the README; the image lands in the temporary folder.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let target = dir.path().join(&out);
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a == out {
                target.display().to_string()
            } else {
                a
            }
        })
        .collect();
    Command::cargo_bin("sakiko")
        .expect("the sakiko binary is built")
        .current_dir(root)
        .args(&args)
        .assert()
        .success();
    let size = |flag: &str| -> u32 {
        let i = args
            .iter()
            .position(|a| a == flag)
            .expect("the README sets the size");
        args[i + 1].parse().expect("a number")
    };
    let png = image::open(&target).expect("a readable PNG");
    assert_eq!(
        (png.width(), png.height()),
        (size("--width"), size("--height"))
    );
}
