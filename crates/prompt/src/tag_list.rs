//! Comma-separated tag lists, the content of every element of a tag prompt.

use std::fmt;

use crate::PromptError;

/// What the Prompter normalisation does with underscores in emoticon tags such as `^_^` or `o_o`.
///
/// Danbooru spells tags with underscores for spaces, and the model was trained with spaces
/// (`long_hair` → `long hair`). In emoticons the underscore *is* the drawing (a mouth), so
/// replacing it turns `^_^` into `^ ^`. The default keeps emoticons as written; `Replace`
/// reproduces the model card's blind `text.replace("_", " ")` exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmoticonPolicy {
    /// Keep underscores in emoticon tags (see [`is_emoticon`]).
    #[default]
    Keep,
    /// Replace every underscore, as the model card's post-processing snippet does.
    Replace,
}

/// Whether `tag` is an emoticon whose underscores must not be replaced by spaces.
///
/// Rule: the tag contains `_` and no two alphanumeric characters stand next to each other. That
/// covers `^_^`, `o_o`, `>_o`, `x_x`, `0_0`, `;_;`, `(o)_(o)`, while every word tag such as
/// `long_hair` or `1girl_solo` has a run of at least two letters or digits.
///
/// ```
/// use sakiko_prompt::is_emoticon;
/// assert!(is_emoticon("^_^") && is_emoticon("o_o") && is_emoticon(">_o"));
/// assert!(!is_emoticon("long_hair") && !is_emoticon("smile"));
/// ```
pub fn is_emoticon(tag: &str) -> bool {
    let chars: Vec<char> = tag.trim().chars().collect();
    chars.contains(&'_')
        && chars
            .windows(2)
            .all(|pair| !(pair[0].is_alphanumeric() && pair[1].is_alphanumeric()))
}

/// Replaces underscores with spaces in a (non-emoticon, under [`EmoticonPolicy::Keep`]) tag, and
/// collapses the white space that leaves (`a_ b` is `a b`, as the model saw it).
pub(crate) fn respell(tag: &str, emoticons: EmoticonPolicy) -> String {
    if emoticons == EmoticonPolicy::Keep && is_emoticon(tag) {
        tag.to_owned()
    } else {
        collapse_whitespace(&tag.replace('_', " "))
    }
}

/// The characters a tag may not contain inside an XML prompt.
///
/// The model reads the raw prompt text, so XML escaping (`&lt;`, `&amp;`) is not an option: the
/// entity itself would reach the text encoder. `<` and `&` are therefore rejected; `>` is
/// well-formed XML text and is allowed (`>_o`).
pub const RESERVED_CHARACTERS: [char; 2] = ['<', '&'];

/// Splits comma-separated text into trimmed, non-empty tags with their byte offsets in `text`.
pub(crate) fn split_tags(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    text.split(',').filter_map(move |piece| {
        let offset = start;
        start += piece.len() + 1;
        let trimmed = piece.trim();
        let lead = piece.len() - piece.trim_start().len();
        (!trimmed.is_empty()).then_some((offset + lead, trimmed))
    })
}

/// Collapses runs of white space inside a tag into one space.
fn collapse_whitespace(tag: &str) -> String {
    tag.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An ordered list of tags: trimmed, free of empty entries and de-duplicated in order.
///
/// Rendered as the model saw it: tags joined with `", "`.
///
/// ```
/// use sakiko_prompt::TagList;
/// let tags = TagList::parse(" blue hair,long hair, ,blue hair ,  sky");
/// assert_eq!(tags.iter().collect::<Vec<_>>(), ["blue hair", "long hair", "sky"]);
/// assert_eq!(tags.to_string(), "blue hair, long hair, sky");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TagList(Vec<String>);

impl TagList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses comma-separated text. White space inside a tag is collapsed to single spaces;
    /// spelling (underscores) is left as written.
    pub fn parse(text: &str) -> Self {
        let mut list = Self::new();
        for (_, tag) in split_tags(text) {
            list.push(&collapse_whitespace(tag));
        }
        list
    }

    /// Appends `tag` (trimmed) unless it is empty or already present; returns whether it was added.
    pub fn push(&mut self, tag: &str) -> bool {
        let tag = tag.trim();
        if tag.is_empty() || self.contains(tag) {
            return false;
        }
        self.0.push(tag.to_owned());
        true
    }

    /// Appends every tag of `other` that is not already present.
    pub fn extend_from(&mut self, other: &TagList) {
        for tag in other.iter() {
            self.push(tag);
        }
    }

    /// Whether `tag` is in the list (exact match).
    pub fn contains(&self, tag: &str) -> bool {
        self.0.iter().any(|t| t == tag)
    }

    /// The tags in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list has no tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The list with underscores replaced by spaces (see [`EmoticonPolicy`]), de-duplicated again
    /// because `long_hair` and `long hair` become the same tag.
    pub fn respelled(&self, emoticons: EmoticonPolicy) -> Self {
        let mut list = Self::new();
        for tag in self.iter() {
            list.push(&respell(tag, emoticons));
        }
        list
    }

    /// Fails with [`PromptError::ReservedCharacter`] if a tag contains `<` or `&`.
    pub fn check_reserved(&self) -> Result<(), PromptError> {
        for tag in self.iter() {
            if let Some(ch) = tag.chars().find(|c| RESERVED_CHARACTERS.contains(c)) {
                return Err(PromptError::ReservedCharacter {
                    tag: tag.to_owned(),
                    ch,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for TagList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl<S: AsRef<str>> FromIterator<S> for TagList {
    /// Collects tags; each item may itself be a comma-separated list.
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut list = Self::new();
        for item in iter {
            list.extend_from(&Self::parse(item.as_ref()));
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reports_offsets_of_trimmed_tags() {
        let text = " a, bb ,,\n c d";
        let got: Vec<_> = split_tags(text).collect();
        assert_eq!(got, [(1, "a"), (4, "bb"), (11, "c d")]);
        for (offset, tag) in got {
            assert_eq!(&text[offset..offset + tag.len()], tag);
        }
    }

    #[test]
    fn parse_trims_dedupes_and_collapses_whitespace() {
        let list = TagList::parse("smile ,  long \n hair, smile,long hair,");
        assert_eq!(list.iter().collect::<Vec<_>>(), ["smile", "long hair"]);
        assert!(TagList::parse(" , ,").is_empty());
    }

    #[test]
    fn emoticons() {
        for e in [
            "^_^", "o_o", "0_0", ">_o", "x_x", ";_;", "(o)_(o)", "^_-", "=_=",
        ] {
            assert!(is_emoticon(e), "{e}");
        }
        for t in ["long_hair", "1girl_solo", "o", "^^", "ab_c", "male_focus"] {
            assert!(!is_emoticon(t), "{t}");
        }
    }

    #[test]
    fn respelling_follows_the_policy() {
        let list = TagList::parse("long_hair, ^_^, long hair, o_o");
        assert_eq!(
            list.respelled(EmoticonPolicy::Keep).to_string(),
            "long hair, ^_^, o_o"
        );
        assert_eq!(
            list.respelled(EmoticonPolicy::Replace).to_string(),
            "long hair, ^ ^, o o"
        );
    }

    #[test]
    fn reserved_characters_are_rejected() {
        assert_eq!(
            TagList::parse("smile, >_<").check_reserved(),
            Err(PromptError::ReservedCharacter {
                tag: ">_<".into(),
                ch: '<'
            })
        );
        assert!(matches!(
            TagList::parse("d&d").check_reserved(),
            Err(PromptError::ReservedCharacter { ch: '&', .. })
        ));
        assert_eq!(TagList::parse(">_o, it's ok!").check_reserved(), Ok(()));
    }

    #[test]
    fn collect_splits_items() {
        let list: TagList = ["a, b", "c", "a"].into_iter().collect();
        assert_eq!(list.to_string(), "a, b, c");
    }
}
