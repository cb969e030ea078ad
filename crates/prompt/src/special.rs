//! The `<special>` vocabulary: subject count and gender.

/// Every tag `<special>` accepts, in the spelling the model was trained on (spaces, not
/// underscores: `male_focus` from the model card is accepted and rendered as `male focus`).
pub const SPECIAL_TAGS: [&str; 19] = [
    "1girl",
    "2girls",
    "3girls",
    "4girls",
    "5girls",
    "6+girls",
    "1boy",
    "2boys",
    "3boys",
    "4boys",
    "5boys",
    "6+boys",
    "male focus",
    "1other",
    "2others",
    "3others",
    "4others",
    "5others",
    "6+others",
];

/// The canonical spelling of a `<special>` tag, or `None` if it is not in the vocabulary.
///
/// ```
/// use sakiko_prompt::canonical_special;
/// assert_eq!(canonical_special("male_focus"), Some("male focus"));
/// assert_eq!(canonical_special("2girls"), Some("2girls"));
/// assert_eq!(canonical_special("1girls"), None);
/// ```
pub fn canonical_special(tag: &str) -> Option<&'static str> {
    let spelled = tag.trim().replace('_', " ");
    SPECIAL_TAGS.iter().copied().find(|&t| t == spelled)
}

/// The closest vocabulary entry to an invalid `<special>` tag (`1girls` → `1girl`).
pub fn suggest_special(tag: &str) -> Option<&'static str> {
    crate::suggest::closest(&tag.trim().replace('_', " "), &SPECIAL_TAGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_vocabulary_is_accepted() {
        for tag in SPECIAL_TAGS {
            assert_eq!(canonical_special(tag), Some(tag));
        }
        assert_eq!(canonical_special(" male focus "), Some("male focus"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest_special("1girls"), Some("1girl"));
        assert_eq!(suggest_special("1boys"), Some("1boy"));
        assert_eq!(suggest_special("6girls"), Some("6+girls"));
        assert_eq!(suggest_special("1 girl"), Some("1girl"));
        assert_eq!(suggest_special("2other"), Some("2others"));
        assert_eq!(suggest_special("male_focuss"), Some("male focus"));
        assert_eq!(suggest_special("landscape"), None);
    }
}
