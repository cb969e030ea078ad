//! Property tests: build → render → parse round-trips; the checker and normaliser never panic.

use proptest::prelude::*;
use sakiko_prompt::{
    EmoticonPolicy, Form, Prompt, Rating, SPECIAL_TAGS, Section, TagPrompt, check, check_bytes,
    normalize, with_prefix,
};

/// A tag as users write them: words, underscores, punctuation the model sees (`!`, `'`, `>`, `^`).
fn tag() -> impl Strategy<Value = String> {
    "[a-z0-9 _!'()^.:>+-]{1,16}"
}

/// A comma-separated list of tags.
fn tag_list() -> impl Strategy<Value = String> {
    prop::collection::vec(tag(), 0..6).prop_map(|tags| tags.join(","))
}

fn builder() -> impl Strategy<Value = sakiko_prompt::TagPromptBuilder> {
    (
        prop::collection::vec(prop::sample::select(SPECIAL_TAGS.to_vec()), 0..3),
        prop::collection::vec(tag_list(), 5),
        prop::option::of(prop::sample::select(Rating::ALL.to_vec())),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(special, lists, rating, simple, keep_empty, replace)| {
            let mut b = TagPrompt::builder()
                .special(&special.join(", "))
                .form(if simple { Form::Simple } else { Form::Full })
                .keep_empty(keep_empty)
                .emoticons(if replace {
                    EmoticonPolicy::Replace
                } else {
                    EmoticonPolicy::Keep
                });
            let sections = [
                Section::Artists,
                Section::Characters,
                Section::Copyright,
                Section::General,
                Section::Meta,
            ];
            for (section, list) in sections.into_iter().zip(&lists) {
                b = b.section(section, list);
            }
            if let Some(r) = rating {
                b = b.rating(r);
            }
            b
        })
}

/// Text that looks like a prompt often enough to reach deep parser states.
fn prompt_like() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "<tags>",
        "</tags>",
        "<special>",
        "</special>",
        "<general>",
        "</general>",
        "<meta>",
        "</meta>",
        "<rating>",
        "</rating>",
        "<copyrights>",
        "</copyrights>",
        "<meta/>",
        "<x a='1'>",
        "1girl",
        "1girls",
        "safe",
        "long_hair",
        "^_^",
        ">_<",
        "&amp;",
        "&",
        "<",
        ">",
        ",",
        " ",
        "\n",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<?",
        "?>",
        "<Prompt Start>",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn build_render_parse_round_trips(b in builder()) {
        let built = b.build().expect("valid inputs build");
        let text = built.to_string();
        let report = check(&text);
        prop_assert!(!report.has_errors(), "{text}\n{:?}", report.diagnostics);
        prop_assert_eq!(report.prompt.clone(), Some(Prompt::Tags(built.clone())));
        // Rendered spelling is the trained one: only emoticons keep underscores.
        prop_assert!(!report.diagnostics.iter().any(|d| d.code == sakiko_prompt::Code::NeedsNormalization));
        // And with the prefix, the same prompt comes back.
        let with = with_prefix(&text);
        prop_assert_eq!(check(&with).prompt, Some(Prompt::Tags(built.clone())));
        prop_assert_eq!(Prompt::Tags(built).model_text(), with);
    }

    #[test]
    fn checker_never_panics_on_strings(text in any::<String>()) {
        let report = check(&text);
        prop_assert_eq!(report.prompt.is_some(), !report.has_errors());
        let lines = text.matches('\n').count() + 1;
        prop_assert!(report.diagnostics.iter().all(|d| d.position.line <= lines));
    }

    #[test]
    fn checker_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let report = check_bytes(&bytes);
        prop_assert_eq!(report.prompt.is_some(), !report.has_errors());
    }

    #[test]
    fn checker_never_panics_on_prompt_like_text(text in prompt_like()) {
        let report = check(&text);
        prop_assert_eq!(report.prompt.is_some(), !report.has_errors());
        prop_assert!(report.diagnostics.len() <= sakiko_prompt::MAX_DIAGNOSTICS);
        // What the checker accepts renders to text it accepts as the same prompt.
        if let Some(prompt) = report.prompt {
            prop_assert_eq!(check(&prompt.body()).prompt, Some(prompt));
        }
    }

    #[test]
    fn normalize_is_idempotent(text in prompt_like()) {
        let once = normalize(&text);
        prop_assert_eq!(normalize(&once), once.clone());
        prop_assert!(once.matches("<meta>masterpiece, newest, highres</meta>").count() <= text.matches("<meta>masterpiece, newest, highres</meta>").count() + 1);
    }

    #[test]
    fn normalized_prompter_output_validates(b in builder()) {
        // Prompter-style output: underscores for spaces, `copyrights`, no meta.
        let built = b.build().expect("valid inputs build");
        let body = built.to_string();
        let prompter = body
            .lines()
            .filter(|line| !line.starts_with("<meta>"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(' ', "_")
            .replace("copyright>", "copyrights>");
        let normalized = normalize(&prompter);
        let report = check(&normalized);
        prop_assert!(!report.has_errors(), "{prompter}\n{:?}", report.diagnostics);
        prop_assert_eq!(normalized.matches("<meta>").count(), 1);
    }
}
