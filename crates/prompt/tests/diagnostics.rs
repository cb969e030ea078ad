//! Every validation rule: the code, severity, position and suggestion it reports.

use std::time::{Duration, Instant};

use sakiko_prompt::{Code, PREFIX, Prompt, PromptError, Severity, check, check_bytes};

/// `(severity, code, "line:col", suggestion)` for each diagnostic of `text`.
fn findings(text: &str) -> Vec<(Severity, Code, String, Option<String>)> {
    check(text)
        .diagnostics
        .into_iter()
        .map(|d| (d.severity, d.code, d.position.to_string(), d.suggestion))
        .collect()
}

fn error(code: Code, at: &str) -> (Severity, Code, String, Option<String>) {
    (Severity::Error, code, at.into(), None)
}

fn warning(code: Code, at: &str) -> (Severity, Code, String, Option<String>) {
    (Severity::Warning, code, at.into(), None)
}

fn with(
    mut finding: (Severity, Code, String, Option<String>),
    suggestion: &str,
) -> (Severity, Code, String, Option<String>) {
    finding.3 = Some(suggestion.into());
    finding
}

#[test]
fn malformed_xml_has_a_position() {
    assert_eq!(
        findings("<tags>\n<general>sky</tags>"),
        [error(Code::MalformedXml, "2:13")]
    );
    let report = check("<tags>\n<general>sky</tags>");
    assert!(report.diagnostics[0].message.contains("malformed XML"));
    assert!(report.prompt.is_none());
}

#[test]
fn unclosed_tags() {
    assert_eq!(
        findings("<tags>\n<general>sky</general>\n"),
        [with(error(Code::UnclosedTags, "3:1"), "</tags>")]
    );
}

#[test]
fn unknown_elements_get_suggestions() {
    assert_eq!(
        findings("<tags><charactors>a</charactors><artist>b</artist><foo>c</foo></tags>"),
        [
            with(error(Code::UnknownElement, "1:7"), "characters"),
            with(error(Code::UnknownElement, "1:33"), "artists"),
            error(Code::UnknownElement, "1:51"),
        ]
    );
    let report = check("<tags><copyrights>x</copyrights></tags>");
    assert_eq!(report.diagnostics[0].code, Code::UnknownElement);
    assert_eq!(
        report.diagnostics[0].suggestion.as_deref(),
        Some("copyright")
    );
    assert!(report.diagnostics[0].message.contains("normalize"));
}

#[test]
fn nested_elements() {
    assert_eq!(
        findings("<tags>\n<general><b>sky</b></general>\n</tags>"),
        [error(Code::NestedElement, "2:10")]
    );
    assert_eq!(
        findings("<tags><tags></tags></tags>"),
        [error(Code::NestedElement, "1:7")]
    );
}

#[test]
fn deep_nesting_stops_at_once() {
    let deep = format!("<tags>{}", "<general>".repeat(200_000));
    let start = Instant::now();
    let report = check(&deep);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(report.diagnostics.len(), 1);
    assert_eq!(report.diagnostics[0].code, Code::NestedElement);
}

#[test]
fn text_outside_tags() {
    assert_eq!(
        findings("hello <tags><general>sky</general></tags>"),
        [error(Code::TextOutsideTags, "1:1")]
    );
    assert_eq!(
        findings("<tags><general>sky</general></tags>\n  trailing"),
        [error(Code::TextOutsideTags, "2:3")]
    );
}

#[test]
fn sections_must_be_inside_tags() {
    assert_eq!(
        findings("<general>sky</general>"),
        [error(Code::MissingTags, "1:1")]
    );
    assert_eq!(
        findings("<tags></tags><tags></tags>"),
        [error(Code::DuplicateElement, "1:14")]
    );
}

#[test]
fn duplicate_elements() {
    assert_eq!(
        findings("<tags>\n<general>a</general>\n<general>b</general>\n</tags>"),
        [error(Code::DuplicateElement, "3:1")]
    );
}

#[test]
fn invalid_special_with_suggestions() {
    assert_eq!(
        findings("<tags><special>1girls, 2boy, solo</special></tags>"),
        [
            with(error(Code::InvalidSpecial, "1:16"), "1girl"),
            with(error(Code::InvalidSpecial, "1:24"), "2boys"),
            error(Code::InvalidSpecial, "1:30"),
        ]
    );
}

#[test]
fn male_focus_is_accepted_in_both_spellings() {
    assert_eq!(findings("<tags><special>male focus</special></tags>"), []);
    assert_eq!(
        findings("<tags><special>male_focus, 1boy</special></tags>"),
        []
    );
}

#[test]
fn invalid_rating() {
    assert_eq!(
        findings("<tags><rating>g</rating></tags>"),
        [with(error(Code::InvalidRating, "1:15"), "safe")]
    );
    assert_eq!(
        findings("<tags><rating> explicit</rating></tags>"),
        [with(error(Code::InvalidRating, "1:16"), "explicit, nsfw")]
    );
    assert_eq!(
        findings("<tags><rating>safe, nsfw</rating></tags>"),
        [error(Code::InvalidRating, "1:15")]
    );
    for ok in [
        "safe",
        "sensitive",
        "nsfw",
        "explicit, nsfw",
        "nsfw, explicit",
        "",
    ] {
        assert_eq!(findings(&format!("<tags><rating>{ok}</rating></tags>")), []);
    }
}

#[test]
fn attributes_and_foreign_markup_are_errors() {
    assert_eq!(
        findings("<tags lang=\"en\"><general>sky</general></tags>"),
        [error(Code::Attribute, "1:1")]
    );
    assert_eq!(
        findings("<?xml version=\"1.0\"?><tags><!-- hi --><general>sky</general></tags>"),
        [
            error(Code::UnsupportedMarkup, "1:1"),
            error(Code::UnsupportedMarkup, "1:28")
        ]
    );
}

#[test]
fn reserved_characters() {
    assert_eq!(
        findings("<tags>\n<general>smile, >_<, d&d</general>\n</tags>"),
        [
            error(Code::ReservedCharacter, "2:19"),
            error(Code::ReservedCharacter, "2:23")
        ]
    );
    // `>` alone is ordinary XML text.
    assert_eq!(findings("<tags><general>>_o</general></tags>"), []);
}

#[test]
fn binary_and_non_utf8_input() {
    assert_eq!(
        findings("<tags>\u{0}\u{1}</tags>"),
        [error(Code::ControlCharacter, "1:7")]
    );
    let report = check_bytes(b"<tags>\n\xff\xfe</tags>");
    assert_eq!(report.diagnostics.len(), 1);
    assert_eq!(report.diagnostics[0].code, Code::NotUtf8);
    assert_eq!(report.diagnostics[0].position.to_string(), "2:1");
}

#[test]
fn empty_inputs() {
    assert_eq!(findings("  \n"), [error(Code::Empty, "2:1")]);
    assert_eq!(
        findings(PREFIX),
        [error(Code::Empty, &format!("1:{}", PREFIX.len() + 1))]
    );
    assert_eq!(
        findings("<tags>\n</tags>"),
        [warning(Code::EmptyTags, "1:1")]
    );
}

#[test]
fn warnings() {
    let text = "<tags>
<general>long_hair, smile, smile, ^_^</general>
<special>1girl</special>
<meta>masterpiece, best quality, shiny, highres, lowres</meta>
</tags>";
    assert_eq!(
        findings(text),
        [
            with(warning(Code::NeedsNormalization, "2:10"), "long hair"),
            warning(Code::DuplicateTag, "2:28"),
            warning(Code::OutOfOrder, "3:1"),
            warning(Code::ConflictingMeta, "4:20"),
            warning(Code::UnknownMeta, "4:34"),
            warning(Code::ConflictingMeta, "4:50"),
        ]
    );
    // Warnings alone do not make a prompt invalid.
    assert!(check(text).prompt.is_some());
}

#[test]
fn positions_are_in_the_original_text_with_prefix() {
    let text = format!("{PREFIX} <tags>\n<special>1girls</special>\n</tags>");
    assert_eq!(
        findings(&text),
        [with(error(Code::InvalidSpecial, "2:10"), "1girl")]
    );
}

#[test]
fn another_system_prompt_is_a_warning() {
    let text = "You are an assistant designed to generate superior images. <Prompt Start> a cat";
    assert_eq!(
        findings(text),
        [with(warning(Code::UnexpectedSystemPrompt, "1:1"), PREFIX)]
    );
    assert_eq!(check(text).prompt, Some(Prompt::Natural("a cat".into())));
}

#[test]
fn diagnostics_are_capped() {
    let text = format!("<tags><general>{}</general></tags>", "a_a_aa, ".repeat(500));
    let report = check(&text);
    assert_eq!(report.diagnostics.len(), sakiko_prompt::MAX_DIAGNOSTICS);
    let last = report.diagnostics.last().unwrap();
    assert_eq!(
        (last.code, last.severity),
        (Code::TooManyDiagnostics, Severity::Warning)
    );
    assert_eq!(
        last.message,
        "401 more finding(s) from here on are not shown"
    );
    assert!(report.prompt.is_some());
}

#[test]
fn an_error_past_the_cap_still_fails_the_check() {
    // The fuzzer's find: 100 warnings, then an error that used to be dropped silently.
    let text = format!("<tags><general>{}</general>", "a_a_aa, ".repeat(150));
    let report = check(&text);
    let last = report.diagnostics.last().unwrap();
    assert_eq!(
        (last.code, last.severity),
        (Code::TooManyDiagnostics, Severity::Error)
    );
    assert!(report.has_errors());
    assert!(report.prompt.is_none());
}

#[test]
fn many_reserved_characters_are_fast() {
    let text = format!("<tags>{}</tags>", "&".repeat(1_000_000));
    let start = Instant::now();
    let report = check(&text);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(report.diagnostics.len(), sakiko_prompt::MAX_DIAGNOSTICS);
    assert!(report.has_errors());
}

#[test]
fn parse_returns_typed_errors() {
    match Prompt::parse("<tags><special>1girls</special></tags>") {
        Err(PromptError::Invalid { diagnostics }) => {
            assert_eq!(diagnostics.len(), 1);
            assert_eq!(diagnostics[0].code, Code::InvalidSpecial);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let err = Prompt::parse("<tags><special>1girls</special></tags>").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid prompt: 1 error(s), first at 1:16: `1girls` is not a <special> tag; did you mean `1girl`?"
    );
}

#[test]
fn prompt_start_in_the_body_is_an_error() {
    let text = format!("{PREFIX} a girl <Prompt Start> again");
    assert_eq!(
        findings(&text),
        [error(
            Code::RepeatedPromptStart,
            &format!("1:{}", PREFIX.len() + 9)
        )]
    );
}

#[test]
fn blank_raw_lists_are_not_items() {
    let report = check("<tags>\n , ,\n<general>sky</general>\n</tags>");
    let Some(Prompt::Tags(tags)) = report.prompt else {
        panic!("not a tag prompt")
    };
    assert_eq!(tags.items().len(), 1);
    assert_eq!(tags.form(), sakiko_prompt::Form::Full);
}
