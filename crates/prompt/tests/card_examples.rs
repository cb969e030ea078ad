//! The model card's three example prompts parse, validate and render as the card shows them.

use sakiko_prompt::{Code, Form, Item, PREFIX, Prompt, Rating, Section, TagList, check};

const NATURAL: &str = "The image features a full-body illustration of Sakiko Togawa from the Bang Dream! \
It's MyGO!!!!! series. She is depicted in a formal suit, with a long black coat and pants. The coat has \
a red lining, visible at the cuffs. She wears a white shirt and a black necktie, along with a belt. Her \
blue hair is styled with two side ponytails, each adorned with a black ribbon. Her yellow eyes are wide \
and she has a slight blush on her cheeks, with a surprised expression. She's wearing white gloves and \
black dress shoes. The background is a solid, light grey. The overall style is anime-esque with a clean, \
polished aesthetic";

const FULL: &str = "<tags>
<special>1girl</special>
<artists>artist_name</artists>
<characters>character_name</characters>
<copyright>series_name</copyright>
<general>blue hair, long hair, school uniform, sky</general>
<rating>safe</rating>
<meta>masterpiece, newest, highres</meta>
</tags>";

const SIMPLE: &str = "<tags>
<artists>artist_name</artists>
anything tag list, solo, 1girl, smile...
</tags>";

#[test]
fn natural_language_example() {
    let report = check(NATURAL);
    assert_eq!(report.diagnostics, []);
    let prompt = report.prompt.unwrap();
    assert_eq!(prompt, Prompt::Natural(NATURAL.to_owned()));
    assert_eq!(prompt.model_text(), format!("{PREFIX} {NATURAL}"));
    // With the prefix already in place, nothing changes.
    assert_eq!(check(&prompt.model_text()).prompt, Some(prompt));
}

#[test]
fn full_form_example() {
    let report = check(FULL);
    // The card's placeholders are written with underscores; only warnings, no errors.
    let codes: Vec<_> = report
        .diagnostics
        .iter()
        .map(|d| (d.code, d.position.to_string(), d.suggestion.clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (
                Code::NeedsNormalization,
                "3:10".into(),
                Some("artist name".into())
            ),
            (
                Code::NeedsNormalization,
                "4:13".into(),
                Some("character name".into())
            ),
            (
                Code::NeedsNormalization,
                "5:12".into(),
                Some("series name".into())
            ),
        ]
    );
    let Some(Prompt::Tags(tags)) = report.prompt else {
        panic!("not a tag prompt")
    };
    assert_eq!(tags.form(), Form::Full);
    assert_eq!(tags.items().len(), 7);
    assert_eq!(tags.rating(), Some(Rating::General));
    assert_eq!(
        tags.section(Section::General),
        Some(&TagList::parse("blue hair, long hair, school uniform, sky"))
    );
    assert_eq!(tags.to_string(), FULL);
}

#[test]
fn full_form_example_on_one_line_as_the_flattened_card_shows_it() {
    let line = FULL.replace('\n', " ");
    let Some(Prompt::Tags(tags)) = check(&line).prompt else {
        panic!("not a tag prompt")
    };
    // Canonical rendering puts each element on its own line.
    assert_eq!(tags.to_string(), FULL);
}

#[test]
fn simple_form_example() {
    let report = check(SIMPLE);
    assert_eq!(
        report
            .diagnostics
            .iter()
            .map(|d| d.code)
            .collect::<Vec<_>>(),
        [Code::NeedsNormalization]
    );
    let Some(Prompt::Tags(tags)) = report.prompt else {
        panic!("not a tag prompt")
    };
    assert_eq!(tags.form(), Form::Simple);
    assert_eq!(
        tags.items(),
        [
            Item::Element(Section::Artists, TagList::parse("artist_name")),
            Item::Raw(TagList::parse("anything tag list, solo, 1girl, smile...")),
        ]
    );
    assert_eq!(tags.to_string(), SIMPLE);
}

#[test]
fn model_text_is_prefix_space_body() {
    let prompt = Prompt::parse(SIMPLE).unwrap();
    assert_eq!(prompt.model_text(), format!("{PREFIX} {SIMPLE}"));
}
