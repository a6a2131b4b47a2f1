//! Types shared by every version of the referral: organisations, référents,
//! enumerations whose wire names are the proto enum value names.

use serde::{Deserialize, Serialize};

use super::ids::{Email, Phone, Siret};

/// Declares a wire enumeration: the Rust enum, its proto numbers and its JSON
/// names (the proto3 JSON mapping uses the proto value names).
/// The proto's `*_UNSPECIFIED = 0` is `None` in an `Option` of it.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $number:literal => $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every value, in proto order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The JSON (proto value) name.
            pub fn wire_name(self) -> &'static str {
                match self { $(Self::$variant => $wire,)+ }
            }

            /// The proto enum number.
            pub fn number(self) -> i32 {
                match self { $(Self::$variant => $number,)+ }
            }

            /// The value for a proto enum number; `None` for 0 (unspecified) and unknown numbers.
            pub fn from_number(number: i32) -> Option<Self> {
                match number { $($number => Some(Self::$variant),)+ _ => None }
            }

            /// The value for a JSON (proto value) name.
            pub fn from_wire_name(name: &str) -> Option<Self> {
                match name { $($wire => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}
pub(crate) use wire_enum;

/// Declares a marker type that (de)serialises as one fixed `schema_version` string.
macro_rules! schema_tag {
    ($(#[$meta:meta])* $name:ident = $value:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl $name {
            /// The `schema_version` string.
            pub const VALUE: &'static str = $value;
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str($value)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                if text == $value {
                    Ok($name)
                } else {
                    Err(serde::de::Error::custom(concat!("schema_version must be \"", $value, "\"")))
                }
            }
        }
    };
}
pub(crate) use schema_tag;

wire_enum! {
    /// The kinds of organisation Passerelle knows.
    OrganisationKind {
        /// An association (aller vers, insertion, ...).
        Association = 1 => "ORGANISATION_KIND_ASSOCIATION",
        /// France Travail.
        FranceTravail = 2 => "ORGANISATION_KIND_FRANCE_TRAVAIL",
        /// A Mission Locale.
        MissionLocale = 3 => "ORGANISATION_KIND_MISSION_LOCALE",
        /// A Cap Emploi.
        CapEmploi = 4 => "ORGANISATION_KIND_CAP_EMPLOI",
        /// A département (conseil départemental).
        Departement = 5 => "ORGANISATION_KIND_DEPARTEMENT",
        /// Any other kind.
        Other = 6 => "ORGANISATION_KIND_OTHER",
    }
}

wire_enum! {
    /// Ways a person can prefer to be contacted (DORA's list).
    ContactPreference {
        /// By phone.
        Phone = 1 => "CONTACT_PREFERENCE_PHONE",
        /// By email.
        Email = 2 => "CONTACT_PREFERENCE_EMAIL",
        /// Through the référent.
        Referent = 3 => "CONTACT_PREFERENCE_REFERENT",
        /// Another way.
        Other = 4 => "CONTACT_PREFERENCE_OTHER",
    }
}

wire_enum! {
    /// The pathway requested (parcours).
    Pathway {
        /// Professional pathway.
        Professional = 1 => "PATHWAY_PROFESSIONAL",
        /// Socio-professional pathway.
        SocioProfessional = 2 => "PATHWAY_SOCIO_PROFESSIONAL",
        /// Social pathway.
        Social = 3 => "PATHWAY_SOCIAL",
    }
}

wire_enum! {
    /// The axis of the offer of repérage et remobilisation.
    Axis {
        /// Repérage: finding people far from employment.
        Reperage = 1 => "AXIS_REPERAGE",
        /// Remobilisation.
        Remobilisation = 2 => "AXIS_REMOBILISATION",
        /// Accompagnement global.
        AccompagnementGlobal = 3 => "AXIS_ACCOMPAGNEMENT_GLOBAL",
        /// Coordination of the actors around the person.
        Coordination = 4 => "AXIS_COORDINATION",
    }
}

/// An organisation taking part in referrals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// SIRET, checked.
    pub siret: Siret,
    /// What kind of organisation it is.
    pub kind: OrganisationKind,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Référent: the advisor who follows the person at the sender.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referent {
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Professional email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Professional phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
}

/// The sending side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    /// The sending organisation.
    pub organisation: Organisation,
    /// Its référent for this person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referent: Option<Referent>,
}

/// The receiving side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The receiving organisation.
    pub organisation: Organisation,
    /// Optional data·inclusion service id the person is referred to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
}
