//! `<meta>` tags: quality, period and resolution, and their derivation from data a user has.
//!
//! The model card's tables leave edges open; the choices made here (see `docs/prompt-format.md`):
//! - quality tiers are left-open, right-closed intervals of the popularity percentile:
//!   `(95, 100]` masterpiece, `(85, 95]` best quality, `(60, 85]` good quality,
//!   `(30, 60]` normal quality, `[0, 30]` worst quality;
//! - the year ranges overlap at 2014 (mid 2014–2017, early 2011–2014): 2014 is **early**, the
//!   convention of earlier Danbooru-trained anime models (Animagine: early 2011–2014, mid from 2015);
//!   the outer ranges are open-ended, so years after 2025 are `newest` and before 2005 `old`;
//! - resolution: at least 1,048,576 px is `highres`, at most 589,824 px is `lowres`, in between
//!   there is no tag.

use std::fmt;

use crate::{PromptError, TagList};

/// The default meta the model card recommends and the Prompter normalisation injects.
pub const DEFAULT_META: &str = "masterpiece, newest, highres";

/// Popularity-based quality tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    /// Above the 95th percentile.
    Masterpiece,
    /// Above the 85th, up to the 95th percentile.
    Best,
    /// Above the 60th, up to the 85th percentile.
    Good,
    /// Above the 30th, up to the 60th percentile.
    Normal,
    /// Up to the 30th percentile.
    Worst,
}

impl Quality {
    /// All quality tiers, best first.
    pub const ALL: [Quality; 5] = [
        Quality::Masterpiece,
        Quality::Best,
        Quality::Good,
        Quality::Normal,
        Quality::Worst,
    ];

    /// The tier of a popularity percentile in `[0, 100]`.
    ///
    /// ```
    /// use sakiko_prompt::Quality;
    /// assert_eq!(Quality::from_percentile(95.0).unwrap(), Quality::Best);
    /// assert_eq!(Quality::from_percentile(95.5).unwrap(), Quality::Masterpiece);
    /// assert!(Quality::from_percentile(101.0).is_err());
    /// ```
    pub fn from_percentile(percentile: f64) -> Result<Quality, PromptError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(PromptError::InvalidPercentile(percentile));
        }
        Ok(match percentile {
            p if p > 95.0 => Quality::Masterpiece,
            p if p > 85.0 => Quality::Best,
            p if p > 60.0 => Quality::Good,
            p if p > 30.0 => Quality::Normal,
            _ => Quality::Worst,
        })
    }

    /// The tag text.
    pub fn tag(self) -> &'static str {
        match self {
            Quality::Masterpiece => "masterpiece",
            Quality::Best => "best quality",
            Quality::Good => "good quality",
            Quality::Normal => "normal quality",
            Quality::Worst => "worst quality",
        }
    }
}

/// Date (period) tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// 2021 and later.
    Newest,
    /// 2018–2020.
    Recent,
    /// 2015–2017.
    Mid,
    /// 2011–2014.
    Early,
    /// 2010 and earlier.
    Old,
}

impl Period {
    /// All periods, newest first.
    pub const ALL: [Period; 5] = [
        Period::Newest,
        Period::Recent,
        Period::Mid,
        Period::Early,
        Period::Old,
    ];

    /// The period of a year (open-ended at both ends).
    ///
    /// ```
    /// use sakiko_prompt::Period;
    /// assert_eq!(Period::from_year(2014), Period::Early);
    /// assert_eq!(Period::from_year(2015), Period::Mid);
    /// assert_eq!(Period::from_year(2026), Period::Newest);
    /// ```
    pub fn from_year(year: i32) -> Period {
        match year {
            2021.. => Period::Newest,
            2018..=2020 => Period::Recent,
            2015..=2017 => Period::Mid,
            2011..=2014 => Period::Early,
            _ => Period::Old,
        }
    }

    /// The tag text.
    pub fn tag(self) -> &'static str {
        match self {
            Period::Newest => "newest",
            Period::Recent => "recent",
            Period::Mid => "mid",
            Period::Early => "early",
            Period::Old => "old",
        }
    }
}

/// Resolution tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// At least 1,048,576 pixels (1024×1024).
    Highres,
    /// At most 589,824 pixels (768×768).
    Lowres,
}

impl Resolution {
    /// Pixel count from which an image is `highres`.
    pub const HIGHRES_MIN_PIXELS: u64 = 1_048_576;
    /// Pixel count up to which an image is `lowres`.
    pub const LOWRES_MAX_PIXELS: u64 = 589_824;

    /// The tag for an image of `width × height` pixels; `None` between the two thresholds.
    ///
    /// ```
    /// use sakiko_prompt::Resolution;
    /// assert_eq!(Resolution::from_size(832, 1216).unwrap(), None);
    /// assert_eq!(Resolution::from_size(1024, 1024).unwrap(), Some(Resolution::Highres));
    /// assert!(Resolution::from_size(0, 512).is_err());
    /// ```
    pub fn from_size(width: u32, height: u32) -> Result<Option<Resolution>, PromptError> {
        if width == 0 || height == 0 {
            return Err(PromptError::InvalidSize { width, height });
        }
        let pixels = u64::from(width) * u64::from(height);
        Ok(if pixels >= Self::HIGHRES_MIN_PIXELS {
            Some(Resolution::Highres)
        } else if pixels <= Self::LOWRES_MAX_PIXELS {
            Some(Resolution::Lowres)
        } else {
            None
        })
    }

    /// The tag text.
    pub fn tag(self) -> &'static str {
        match self {
            Resolution::Highres => "highres",
            Resolution::Lowres => "lowres",
        }
    }
}

macro_rules! display_tag {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.tag())
            }
        }
    )*};
}
display_tag!(Quality, Period, Resolution);

/// The category a known meta tag belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaKind {
    Quality,
    Period,
    Resolution,
}

impl MetaKind {
    pub(crate) fn of(tag: &str) -> Option<MetaKind> {
        if Quality::ALL.iter().any(|q| q.tag() == tag) {
            Some(MetaKind::Quality)
        } else if Period::ALL.iter().any(|p| p.tag() == tag) {
            Some(MetaKind::Period)
        } else if [Resolution::Highres, Resolution::Lowres]
            .iter()
            .any(|r| r.tag() == tag)
        {
            Some(MetaKind::Resolution)
        } else {
            None
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            MetaKind::Quality => "quality",
            MetaKind::Period => "period",
            MetaKind::Resolution => "resolution",
        }
    }
}

/// Builds a `<meta>` list: derived quality, period and resolution first (the card's order, as in
/// [`DEFAULT_META`]), then any extra tags.
///
/// ```
/// use sakiko_prompt::{Meta, Period, Quality, Resolution};
/// let meta = Meta::new()
///     .quality(Quality::from_percentile(97.0).unwrap())
///     .period(Period::from_year(2024))
///     .resolution(Resolution::from_size(1024, 1024).unwrap());
/// assert_eq!(meta.tags().to_string(), "masterpiece, newest, highres");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    quality: Option<Quality>,
    period: Option<Period>,
    resolution: Option<Resolution>,
    extra: TagList,
}

impl Meta {
    /// No meta tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the quality tag.
    pub fn quality(mut self, quality: Quality) -> Self {
        self.quality = Some(quality);
        self
    }

    /// Sets the period tag.
    pub fn period(mut self, period: Period) -> Self {
        self.period = Some(period);
        self
    }

    /// Sets (or, with `None`, clears) the resolution tag.
    pub fn resolution(mut self, resolution: Option<Resolution>) -> Self {
        self.resolution = resolution;
        self
    }

    /// Appends extra tags (comma-separated).
    pub fn extra(mut self, tags: &str) -> Self {
        self.extra.extend_from(&TagList::parse(tags));
        self
    }

    /// The tag list, derived tags first.
    pub fn tags(&self) -> TagList {
        let mut list = TagList::new();
        let derived = [
            self.quality.map(Quality::tag),
            self.period.map(Period::tag),
            self.resolution.map(Resolution::tag),
        ];
        for tag in derived.into_iter().flatten() {
            list.push(tag);
        }
        list.extend_from(&self.extra);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_boundaries() {
        let cases = [
            (100.0, Quality::Masterpiece),
            (95.000_001, Quality::Masterpiece),
            (95.0, Quality::Best),
            (85.000_001, Quality::Best),
            (85.0, Quality::Good),
            (60.000_001, Quality::Good),
            (60.0, Quality::Normal),
            (30.000_001, Quality::Normal),
            (30.0, Quality::Worst),
            (0.0, Quality::Worst),
        ];
        for (p, q) in cases {
            assert_eq!(Quality::from_percentile(p), Ok(q), "percentile {p}");
        }
        for bad in [-0.1, 100.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Quality::from_percentile(bad),
                Err(PromptError::InvalidPercentile(_))
            ));
        }
    }

    #[test]
    fn period_boundaries() {
        let cases = [
            (2030, Period::Newest),
            (2026, Period::Newest),
            (2025, Period::Newest),
            (2021, Period::Newest),
            (2020, Period::Recent),
            (2018, Period::Recent),
            (2017, Period::Mid),
            (2015, Period::Mid),
            (2014, Period::Early),
            (2011, Period::Early),
            (2010, Period::Old),
            (2005, Period::Old),
            (2004, Period::Old),
        ];
        for (year, period) in cases {
            assert_eq!(Period::from_year(year), period, "year {year}");
        }
    }

    #[test]
    fn resolution_boundaries() {
        assert_eq!(
            Resolution::from_size(1024, 1024),
            Ok(Some(Resolution::Highres))
        );
        assert_eq!(
            Resolution::from_size(1_048_576, 1),
            Ok(Some(Resolution::Highres))
        );
        assert_eq!(Resolution::from_size(1_048_575, 1), Ok(None));
        assert_eq!(Resolution::from_size(589_825, 1), Ok(None));
        assert_eq!(
            Resolution::from_size(768, 768),
            Ok(Some(Resolution::Lowres))
        );
        assert_eq!(
            Resolution::from_size(589_824, 1),
            Ok(Some(Resolution::Lowres))
        );
        assert_eq!(Resolution::from_size(832, 1216), Ok(None));
        assert_eq!(
            Resolution::from_size(u32::MAX, u32::MAX),
            Ok(Some(Resolution::Highres))
        );
        assert_eq!(
            Resolution::from_size(64, 0),
            Err(PromptError::InvalidSize {
                width: 64,
                height: 0
            })
        );
    }

    #[test]
    fn meta_orders_derived_tags_first_and_dedupes() {
        let meta = Meta::new()
            .extra("absurdres, masterpiece")
            .resolution(Some(Resolution::Lowres))
            .quality(Quality::Masterpiece);
        assert_eq!(meta.tags().to_string(), "masterpiece, lowres, absurdres");
        assert_eq!(
            Meta::new()
                .quality(Quality::Masterpiece)
                .period(Period::Newest)
                .resolution(Some(Resolution::Highres))
                .tags()
                .to_string(),
            DEFAULT_META
        );
    }

    #[test]
    fn meta_kinds() {
        assert_eq!(MetaKind::of("best quality"), Some(MetaKind::Quality));
        assert_eq!(MetaKind::of("mid"), Some(MetaKind::Period));
        assert_eq!(MetaKind::of("lowres"), Some(MetaKind::Resolution));
        assert_eq!(MetaKind::of("absurdres"), None);
    }
}
