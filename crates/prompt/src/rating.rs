//! The `<rating>` element: Danbooru rating keys and the tags the model was trained on.

use std::fmt;
use std::str::FromStr;

use crate::{PromptError, TagList};

/// A content rating.
///
/// ```
/// use sakiko_prompt::Rating;
/// let r: Rating = "e".parse().unwrap();
/// assert_eq!(r, Rating::Explicit);
/// assert_eq!(r.tags(), "explicit, nsfw");
/// assert_eq!("sensitive".parse::<Rating>().unwrap(), Rating::Sensitive);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rating {
    /// `g`: `safe`.
    General,
    /// `s`: `sensitive`.
    Sensitive,
    /// `q`: `nsfw`.
    Questionable,
    /// `e`: `explicit, nsfw`.
    Explicit,
}

impl Rating {
    /// All ratings, from `g` to `e`.
    pub const ALL: [Rating; 4] = [
        Rating::General,
        Rating::Sensitive,
        Rating::Questionable,
        Rating::Explicit,
    ];

    /// The Danbooru key: `g`, `s`, `q` or `e`.
    pub fn key(self) -> &'static str {
        match self {
            Rating::General => "g",
            Rating::Sensitive => "s",
            Rating::Questionable => "q",
            Rating::Explicit => "e",
        }
    }

    /// The `<rating>` content the model card prescribes.
    pub fn tags(self) -> &'static str {
        match self {
            Rating::General => "safe",
            Rating::Sensitive => "sensitive",
            Rating::Questionable => "nsfw",
            Rating::Explicit => "explicit, nsfw",
        }
    }

    /// The rating whose tags are exactly `list` (in any order), as the `<rating>` element requires.
    pub fn from_tags(list: &TagList) -> Option<Rating> {
        Self::ALL.into_iter().find(|r| {
            let expected = TagList::parse(r.tags());
            expected.len() == list.len() && list.iter().all(|t| expected.contains(t))
        })
    }
}

impl fmt::Display for Rating {
    /// Writes the tags (`explicit, nsfw`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tags())
    }
}

impl FromStr for Rating {
    type Err = PromptError;

    /// Accepts the key (`g`/`s`/`q`/`e`), the Danbooru name (`general`, `sensitive`,
    /// `questionable`, `explicit`) or the tags (`safe`, `nsfw`, `explicit, nsfw`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_lowercase();
        let by_word = match lower.as_str() {
            "g" | "general" | "safe" => Some(Rating::General),
            "s" | "sensitive" => Some(Rating::Sensitive),
            "q" | "questionable" | "nsfw" => Some(Rating::Questionable),
            "e" | "explicit" => Some(Rating::Explicit),
            _ => None,
        };
        by_word
            .or_else(|| Rating::from_tags(&TagList::parse(&lower)))
            .ok_or_else(|| PromptError::InvalidRating(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_the_card_tags() {
        let expect = [
            ("g", "safe"),
            ("s", "sensitive"),
            ("q", "nsfw"),
            ("e", "explicit, nsfw"),
        ];
        for (key, tags) in expect {
            let r: Rating = key.parse().unwrap();
            assert_eq!(r.key(), key);
            assert_eq!(r.tags(), tags);
            assert_eq!(tags.parse::<Rating>().unwrap(), r);
            assert_eq!(Rating::from_tags(&TagList::parse(tags)), Some(r));
        }
    }

    #[test]
    fn tag_sets_are_order_insensitive_but_exact() {
        assert_eq!(
            Rating::from_tags(&TagList::parse("nsfw, explicit")),
            Some(Rating::Explicit)
        );
        assert_eq!(Rating::from_tags(&TagList::parse("explicit")), None);
        assert_eq!(Rating::from_tags(&TagList::parse("safe, nsfw")), None);
        assert_eq!(Rating::from_tags(&TagList::new()), None);
    }

    #[test]
    fn invalid_rating_is_an_error() {
        assert_eq!(
            "x".parse::<Rating>(),
            Err(PromptError::InvalidRating("x".into()))
        );
        assert_eq!("G".parse::<Rating>(), Ok(Rating::General));
    }
}
