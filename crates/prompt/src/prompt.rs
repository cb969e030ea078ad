//! The prompt model: natural language or a tag prompt, and how each renders to model text.

use std::fmt;

use crate::{
    EmoticonPolicy, Meta, PromptError, Rating, Section, TagList, canonical_special,
    suggest_special, with_prefix,
};

/// A Sakiko-Lumina prompt body (the part after the fixed prefix).
///
/// ```
/// use sakiko_prompt::{Prompt, PREFIX};
/// let prompt = Prompt::parse("<tags>\n<artists>artist name</artists>\nsolo, 1girl, smile\n</tags>").unwrap();
/// assert!(matches!(prompt, Prompt::Tags(_)));
/// assert_eq!(
///     prompt.model_text(),
///     format!("{PREFIX} <tags>\n<artists>artist name</artists>\nsolo, 1girl, smile\n</tags>")
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Natural language, used as written (trimmed).
    Natural(String),
    /// An XML tag prompt.
    Tags(TagPrompt),
}

impl Prompt {
    /// Parses and validates `text` (with or without the prefix); fails with
    /// [`PromptError::Invalid`] if any diagnostic is an error. Use [`crate::check`] to see warnings.
    pub fn parse(text: &str) -> Result<Prompt, PromptError> {
        crate::check(text).into_result()
    }

    /// The body, rendered: natural language as written, tag prompts in the card's layout.
    pub fn body(&self) -> String {
        self.to_string()
    }

    /// The exact text the text encoder receives: [`crate::PREFIX`], one space, the body.
    pub fn model_text(&self) -> String {
        with_prefix(&self.body())
    }
}

impl fmt::Display for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prompt::Natural(text) => f.write_str(text),
            Prompt::Tags(tags) => tags.fmt(f),
        }
    }
}

impl From<TagPrompt> for Prompt {
    fn from(tags: TagPrompt) -> Self {
        Prompt::Tags(tags)
    }
}

/// The two tag-prompt layouts of the model card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// Every tag in its section element.
    #[default]
    Full,
    /// `<artists>` as an element, every other tag as a raw comma-separated list.
    Simple,
}

/// One line inside `<tags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `<section>tags</section>` (possibly empty).
    Element(Section, TagList),
    /// A raw tag list (the simple form).
    Raw(TagList),
}

/// A tag prompt: the ordered content of a `<tags>` container.
///
/// Build one with [`TagPrompt::builder`]; [`crate::check`] produces one from text. It renders as
/// `<tags>`, each item on its own line, `</tags>`, with no escaping (see [`crate::RESERVED_CHARACTERS`]).
///
/// ```
/// use sakiko_prompt::{Rating, TagPrompt};
/// let prompt = TagPrompt::builder()
///     .special("1girl")
///     .artists("artist_name")
///     .general("blue_hair, long hair, school uniform, sky")
///     .rating(Rating::General)
///     .meta("masterpiece, newest, highres")
///     .build()
///     .unwrap();
/// assert_eq!(
///     prompt.to_string(),
///     "<tags>\n<special>1girl</special>\n<artists>artist name</artists>\n\
///      <general>blue hair, long hair, school uniform, sky</general>\n\
///      <rating>safe</rating>\n<meta>masterpiece, newest, highres</meta>\n</tags>"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagPrompt {
    items: Vec<Item>,
}

impl TagPrompt {
    /// A builder for the full or simple form.
    pub fn builder() -> TagPromptBuilder {
        TagPromptBuilder::default()
    }

    /// A tag prompt from items, as written (used by the parser; not validated).
    pub(crate) fn from_items(items: Vec<Item>) -> Self {
        Self { items }
    }

    /// The items in order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The tags of a section element, if the prompt has that element.
    pub fn section(&self, section: Section) -> Option<&TagList> {
        self.items.iter().find_map(|item| match item {
            Item::Element(s, tags) if *s == section => Some(tags),
            _ => None,
        })
    }

    /// The rating, if the prompt has a valid `<rating>` element.
    pub fn rating(&self) -> Option<Rating> {
        self.section(Section::Rating).and_then(Rating::from_tags)
    }

    /// [`Form::Simple`] if any raw tag list is present, else [`Form::Full`].
    pub fn form(&self) -> Form {
        if self.items.iter().any(|i| matches!(i, Item::Raw(_))) {
            Form::Simple
        } else {
            Form::Full
        }
    }

    /// Number of tags over all items.
    pub fn tag_count(&self) -> usize {
        self.items
            .iter()
            .map(|item| match item {
                Item::Element(_, tags) | Item::Raw(tags) => tags.len(),
            })
            .sum()
    }
}

impl fmt::Display for TagPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<tags>\n")?;
        for item in &self.items {
            match item {
                Item::Element(section, tags) => writeln!(f, "<{section}>{tags}</{section}>")?,
                Item::Raw(tags) => writeln!(f, "{tags}")?,
            }
        }
        f.write_str("</tags>")
    }
}

/// Builds a [`TagPrompt`]; every setter takes comma-separated tags and may be called repeatedly.
///
/// `build` spells tags the way the model was trained (underscores → spaces, emoticons kept, see
/// [`EmoticonPolicy`]), de-duplicates, validates `<special>` and `<rating>`, and rejects `<`/`&`.
#[derive(Debug, Clone, Default)]
pub struct TagPromptBuilder {
    sections: [TagList; 7],
    meta: Meta,
    form: Form,
    keep_empty: bool,
    emoticons: EmoticonPolicy,
    rating_error: Option<String>,
}

impl TagPromptBuilder {
    /// Adds tags to a section (`Rating` goes through [`TagPromptBuilder::rating_str`]).
    pub fn section(mut self, section: Section, tags: &str) -> Self {
        match section {
            Section::Meta => self.meta = self.meta.extra(tags),
            Section::Rating => return self.rating_str(tags),
            _ => self.sections[section.index()].extend_from(&TagList::parse(tags)),
        }
        self
    }

    /// Adds `<special>` tags (validated against [`crate::SPECIAL_TAGS`] by `build`).
    pub fn special(self, tags: &str) -> Self {
        self.section(Section::Special, tags)
    }

    /// Adds artists.
    pub fn artists(self, tags: &str) -> Self {
        self.section(Section::Artists, tags)
    }

    /// Adds characters.
    pub fn characters(self, tags: &str) -> Self {
        self.section(Section::Characters, tags)
    }

    /// Adds copyright (series) tags.
    pub fn copyright(self, tags: &str) -> Self {
        self.section(Section::Copyright, tags)
    }

    /// Adds general tags.
    pub fn general(self, tags: &str) -> Self {
        self.section(Section::General, tags)
    }

    /// Sets the rating.
    pub fn rating(mut self, rating: Rating) -> Self {
        self.sections[Section::Rating.index()] = TagList::parse(rating.tags());
        self.rating_error = None;
        self
    }

    /// Sets the rating from text: a key (`g`/`s`/`q`/`e`) or the tags; an invalid value makes
    /// `build` fail with [`PromptError::InvalidRating`].
    pub fn rating_str(self, rating: &str) -> Self {
        match rating.parse() {
            Ok(r) => self.rating(r),
            Err(_) => Self {
                rating_error: Some(rating.to_owned()),
                ..self
            },
        }
    }

    /// Adds free meta tags, after the derived ones of [`TagPromptBuilder::derived_meta`].
    pub fn meta(mut self, tags: &str) -> Self {
        self.meta = self.meta.extra(tags);
        self
    }

    /// Uses `meta`'s derived quality/period/resolution and extra tags (replacing earlier meta).
    pub fn derived_meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    /// Chooses the full (default) or simple form.
    pub fn form(mut self, form: Form) -> Self {
        self.form = form;
        self
    }

    /// Renders every element even when it has no tags (`<copyright></copyright>`), as the model
    /// saw in training with dropped groups. Off by default: empty elements are omitted.
    pub fn keep_empty(mut self, keep: bool) -> Self {
        self.keep_empty = keep;
        self
    }

    /// How underscores in emoticon tags are treated (default: kept).
    pub fn emoticons(mut self, policy: EmoticonPolicy) -> Self {
        self.emoticons = policy;
        self
    }

    /// Validates and assembles the prompt.
    pub fn build(self) -> Result<TagPrompt, PromptError> {
        if let Some(bad) = self.rating_error {
            return Err(PromptError::InvalidRating(bad));
        }
        let mut sections = self.sections;
        sections[Section::Meta.index()] = self.meta.tags();
        for list in &mut sections {
            *list = list.respelled(self.emoticons);
            list.check_reserved()?;
        }
        let special = &mut sections[Section::Special.index()];
        *special = special
            .iter()
            .map(|tag| {
                canonical_special(tag).ok_or_else(|| PromptError::InvalidSpecial {
                    tag: tag.to_owned(),
                    suggestion: suggest_special(tag).map(str::to_owned),
                })
            })
            .collect::<Result<_, _>>()?;

        let keep = |tags: &TagList| self.keep_empty || !tags.is_empty();
        let mut items = Vec::new();
        match self.form {
            Form::Full => {
                for (section, tags) in Section::ALL.into_iter().zip(sections) {
                    if keep(&tags) {
                        items.push(Item::Element(section, tags));
                    }
                }
            }
            Form::Simple => {
                let [_, artists, ..] = &sections;
                if keep(artists) {
                    items.push(Item::Element(Section::Artists, artists.clone()));
                }
                let mut raw = TagList::new();
                for (section, tags) in Section::ALL.into_iter().zip(&sections) {
                    if section != Section::Artists {
                        raw.extend_from(tags);
                    }
                }
                if !raw.is_empty() {
                    items.push(Item::Raw(raw));
                }
            }
        }
        Ok(TagPrompt { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Period, Quality, Resolution};

    #[test]
    fn full_form_orders_sections_whatever_the_call_order() {
        let p = TagPrompt::builder()
            .meta("newest")
            .general("sky")
            .special("2girls")
            .rating_str("q")
            .build()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "<tags>\n<special>2girls</special>\n<general>sky</general>\n<rating>nsfw</rating>\n\
             <meta>newest</meta>\n</tags>"
        );
        assert_eq!(p.form(), Form::Full);
        assert_eq!(p.rating(), Some(Rating::Questionable));
        assert_eq!(p.tag_count(), 4);
    }

    #[test]
    fn keep_empty_renders_all_seven_elements() {
        let p = TagPrompt::builder()
            .general("sky")
            .keep_empty(true)
            .build()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "<tags>\n<special></special>\n<artists></artists>\n<characters></characters>\n\
             <copyright></copyright>\n<general>sky</general>\n<rating></rating>\n<meta></meta>\n</tags>"
        );
    }

    #[test]
    fn simple_form_flattens_everything_but_artists() {
        let p = TagPrompt::builder()
            .form(Form::Simple)
            .artists("artist_name")
            .special("1girl")
            .general("solo, smile, 1girl")
            .rating(Rating::Explicit)
            .derived_meta(Meta::new().quality(Quality::Best).period(Period::Mid))
            .build()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "<tags>\n<artists>artist name</artists>\n\
             1girl, solo, smile, explicit, nsfw, best quality, mid\n</tags>"
        );
        assert_eq!(p.form(), Form::Simple);
    }

    #[test]
    fn derived_meta_comes_before_free_meta() {
        let p = TagPrompt::builder()
            .derived_meta(
                Meta::new()
                    .quality(Quality::Masterpiece)
                    .resolution(Some(Resolution::Highres)),
            )
            .meta("absurdres")
            .build()
            .unwrap();
        assert_eq!(
            p.section(Section::Meta).unwrap().to_string(),
            "masterpiece, highres, absurdres"
        );
    }

    #[test]
    fn special_is_validated_and_canonicalised() {
        let p = TagPrompt::builder()
            .special("male_focus, 1boy")
            .build()
            .unwrap();
        assert_eq!(
            p.section(Section::Special).unwrap().to_string(),
            "male focus, 1boy"
        );
        assert_eq!(
            TagPrompt::builder().special("1girls").build(),
            Err(PromptError::InvalidSpecial {
                tag: "1girls".into(),
                suggestion: Some("1girl".into())
            })
        );
    }

    #[test]
    fn builder_errors() {
        assert_eq!(
            TagPrompt::builder().rating_str("z").build(),
            Err(PromptError::InvalidRating("z".into()))
        );
        assert!(matches!(
            TagPrompt::builder().general(">_<").build(),
            Err(PromptError::ReservedCharacter { ch: '<', .. })
        ));
    }

    #[test]
    fn no_escaping_of_ordinary_characters() {
        let p = TagPrompt::builder()
            .copyright("bang dream! it's mygo!!!!!")
            .general("^_^, >_o, \"quoted\"")
            .build()
            .unwrap();
        assert_eq!(
            p.to_string(),
            "<tags>\n<copyright>bang dream! it's mygo!!!!!</copyright>\n\
             <general>^_^, >_o, \"quoted\"</general>\n</tags>"
        );
    }

    #[test]
    fn natural_language_renders_as_written() {
        let p = Prompt::Natural("a girl".into());
        assert_eq!(p.body(), "a girl");
        assert_eq!(p.model_text(), format!("{} a girl", crate::PREFIX));
    }
}
