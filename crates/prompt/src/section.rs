//! The elements of the full tag form.

use std::fmt;
use std::str::FromStr;

use crate::PromptError;

/// One element of a tag prompt, listed in the order the model was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `<special>`: subject count and gender (`1girl`, `2boys`, `male focus`, …).
    Special,
    /// `<artists>`: artist names; the only element of the simple form.
    Artists,
    /// `<characters>`: character names.
    Characters,
    /// `<copyright>`: series names.
    Copyright,
    /// `<general>`: every other Danbooru tag.
    General,
    /// `<rating>`: `safe`, `sensitive`, `nsfw` or `explicit, nsfw`.
    Rating,
    /// `<meta>`: quality, period and resolution tags.
    Meta,
}

impl Section {
    /// All sections in the canonical (training) order.
    pub const ALL: [Section; 7] = [
        Section::Special,
        Section::Artists,
        Section::Characters,
        Section::Copyright,
        Section::General,
        Section::Rating,
        Section::Meta,
    ];

    /// The element names, in the order of [`Section::ALL`].
    pub const NAMES: [&'static str; 7] = [
        "special",
        "artists",
        "characters",
        "copyright",
        "general",
        "rating",
        "meta",
    ];

    /// The XML element name.
    pub fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// Position in [`Section::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The section with this element name (exact, case-sensitive: XML names are).
    pub fn from_name(name: &str) -> Option<Section> {
        Self::NAMES
            .iter()
            .position(|&n| n == name)
            .map(|i| Self::ALL[i])
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Section {
    type Err = PromptError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Section::from_name(s).ok_or_else(|| PromptError::UnknownSection {
            name: s.to_owned(),
            suggestion: crate::suggest::closest(s, &Section::NAMES).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_order() {
        for (i, s) in Section::ALL.into_iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(Section::from_name(s.name()), Some(s));
            assert_eq!(s.name().parse::<Section>(), Ok(s));
        }
        assert!(Section::Special < Section::Meta);
    }

    #[test]
    fn unknown_section_suggests() {
        assert_eq!(
            "copyrights".parse::<Section>(),
            Err(PromptError::UnknownSection {
                name: "copyrights".into(),
                suggestion: Some("copyright".into())
            })
        );
    }
}
