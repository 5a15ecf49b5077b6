//! The controlled vocabularies of the therapist directory. Fixed lists, so that a filter
//! for `trauma` finds every therapist who works with trauma, whatever they typed.

use super::Invalid;
use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $slug:literal, $label:literal;)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $(#[serde(rename = $slug)] $variant,)+
        }

        impl $name {
            /// Every value, in display order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable identifier used in the API and the database.
            pub fn slug(self) -> &'static str {
                match self { $($name::$variant => $slug,)+ }
            }

            /// A label for people.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }

            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                match raw {
                    $($slug => Ok($name::$variant),)+
                    _ => Err(Invalid::new(format!(
                        concat!("unknown ", stringify!($name), " {:?}; expected one of: {}"),
                        raw,
                        Self::ALL.iter().map(|v| v.slug()).collect::<Vec<_>>().join(", ")
                    ))),
                }
            }
        }
    };
}

vocabulary! {
    /// What a therapist works with.
    Specialisation {
        Anxiety = "anxiety", "Anxiety";
        Depression = "depression", "Depression";
        Trauma = "trauma", "Trauma and PTSD";
        Relationships = "relationships", "Relationships";
        Grief = "grief", "Grief and loss";
        Stress = "stress", "Stress and burnout";
        SelfEsteem = "self_esteem", "Self-esteem";
        Addiction = "addiction", "Addiction";
        EatingDisorders = "eating_disorders", "Eating disorders";
        Ocd = "ocd", "OCD";
        Anger = "anger", "Anger";
        Sleep = "sleep", "Sleep";
        Family = "family", "Family";
        Identity = "identity", "Identity and sexuality";
        LifeTransitions = "life_transitions", "Life transitions";
        Work = "work", "Work and career";
    }
}

vocabulary! {
    /// How a therapist works.
    Modality {
        Cbt = "cbt", "Cognitive behavioural therapy (CBT)";
        Dbt = "dbt", "Dialectical behaviour therapy (DBT)";
        Act = "act", "Acceptance and commitment therapy (ACT)";
        Psychodynamic = "psychodynamic", "Psychodynamic";
        Psychoanalytic = "psychoanalytic", "Psychoanalytic";
        Humanistic = "humanistic", "Humanistic";
        PersonCentred = "person_centred", "Person-centred";
        Gestalt = "gestalt", "Gestalt";
        Integrative = "integrative", "Integrative";
        Emdr = "emdr", "EMDR";
        Mindfulness = "mindfulness", "Mindfulness-based";
        Schema = "schema", "Schema therapy";
        Systemic = "systemic", "Systemic and family";
        SolutionFocused = "solution_focused", "Solution-focused";
        Compassion = "compassion_focused", "Compassion-focused";
    }
}

/// A language a therapist works in, as a BCP 47 tag (`en`, `pt-BR`, `zh-Hant`), in
/// canonical case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Language(String);

impl Language {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let bad = || Invalid::new(format!("{raw:?} is not a language tag such as en or pt-BR"));
        let mut parts = raw.trim().split('-');
        let primary = parts.next().ok_or_else(bad)?;
        if !(2..=3).contains(&primary.len()) || !primary.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(bad());
        }
        let mut out = primary.to_ascii_lowercase();
        for sub in parts {
            if sub.is_empty() || sub.len() > 8 || !sub.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad());
            }
            out.push('-');
            // Canonical case: regions upper (GB), scripts title (Hant), others lower.
            match sub.len() {
                2 if sub.chars().all(|c| c.is_ascii_alphabetic()) => {
                    out.push_str(&sub.to_ascii_uppercase())
                }
                4 if sub.chars().all(|c| c.is_ascii_alphabetic()) => {
                    out.push_str(&sub[..1].to_ascii_uppercase());
                    out.push_str(&sub[1..].to_ascii_lowercase());
                }
                _ => out.push_str(&sub.to_ascii_lowercase()),
            }
        }
        if out.len() > 35 {
            return Err(bad());
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip() {
        for s in Specialisation::ALL {
            assert_eq!(Specialisation::parse(s.slug()).unwrap(), *s);
        }
        for m in Modality::ALL {
            assert_eq!(Modality::parse(m.slug()).unwrap(), *m);
        }
        assert!(Modality::parse("astrology").is_err());
    }

    #[test]
    fn language_tags() {
        assert_eq!(Language::parse("EN").unwrap().as_str(), "en");
        assert_eq!(Language::parse("pt-br").unwrap().as_str(), "pt-BR");
        assert_eq!(Language::parse("zh-hant").unwrap().as_str(), "zh-Hant");
        assert!(Language::parse("english").is_err());
        assert!(Language::parse("e").is_err());
        assert!(Language::parse("en-").is_err());
    }
}
