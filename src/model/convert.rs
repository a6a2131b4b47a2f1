//! Conversions between referral versions 1 and 2.
//!
//! Version 1 → 2 carries everything. Version 2 → 1 cannot carry obstacle
//! impacts, education levels, a second identifier of one kind, MSA numbers as
//! such, or the order of identifiers; each of these is named in the loss report
//! by its JSON pointer in the version 2 document.

use super::loss::{LossReport, Translated};
use super::v1;
use super::v2::{self, Identifier, IdentifierKind, Obstacle, ObstacleDomain};

/// Converts a version 1 referral to version 2. Nothing is lost.
pub fn v1_to_v2(referral: &v1::Referral) -> v2::Referral {
    let person = &referral.person;
    let contact = v2::Contact {
        phone: person.phone.clone(),
        email: person.email.clone(),
        other_method: person.other_contact_method.clone(),
        preferences: person.contact_preferences.clone(),
    };
    let address = v2::Address {
        postal_code: person.postal_code.clone(),
        insee_code: person.insee_code.clone(),
        city: person.city.clone(),
    };
    v2::Referral {
        referral_id: referral.referral_id,
        schema_version: v2::ReferralV2Tag,
        created_at: referral.created_at,
        sender: referral.sender.clone(),
        recipient: referral.recipient.clone(),
        person: v2::Person {
            first_name: person.first_name.clone(),
            last_name: person.last_name.clone(),
            birth_name: person.birth_name.clone(),
            birth_date: person.birth_date,
            contact: (!contact.is_empty()).then_some(contact),
            address: (!address.is_empty()).then_some(address),
            availability: person.availability,
        },
        identifiers: referral
            .identifiers
            .as_ref()
            .map(identifiers_v1_to_v2)
            .unwrap_or_default(),
        situation: referral.situation.as_ref().map(|situation| v2::Situation {
            labels: situation.labels.clone(),
            rsa_beneficiary: situation.rsa_beneficiary,
            recognised_disability: situation.recognised_disability,
            other: situation.other.clone(),
            education_level: None,
        }),
        obstacles: referral
            .obstacles
            .iter()
            .map(|text| classify(text))
            .collect(),
        pathway: referral.pathway,
        axis: referral.axis,
        reason: referral.reason.clone(),
        consent_reference: referral.consent_reference.clone(),
    }
}

fn identifiers_v1_to_v2(identifiers: &v1::Identifiers) -> Vec<Identifier> {
    let fields = [
        (
            IdentifierKind::FranceTravail,
            identifiers
                .france_travail_number
                .as_ref()
                .map(|n| n.as_str()),
        ),
        (IdentifierKind::Caf, identifiers.caf_number.as_deref()),
        (
            IdentifierKind::Imilo,
            identifiers.imilo_dossier_id.as_deref(),
        ),
        (
            IdentifierKind::Departement,
            identifiers.departement_id.as_deref(),
        ),
        (
            IdentifierKind::Nir,
            identifiers.nir.as_ref().map(|n| n.as_str()),
        ),
    ];
    fields
        .into_iter()
        .filter_map(|(kind, value)| {
            value.map(|value| Identifier {
                kind,
                value: value.to_owned(),
            })
        })
        .collect()
}

/// The order in which version 1 → 2 lists identifiers.
fn canonical_rank(kind: IdentifierKind) -> u8 {
    match kind {
        IdentifierKind::FranceTravail => 0,
        IdentifierKind::Caf | IdentifierKind::Msa => 1,
        IdentifierKind::Imilo => 2,
        IdentifierKind::Departement => 3,
        IdentifierKind::Nir => 4,
    }
}

/// Converts a version 2 referral to version 1, reporting what version 1 cannot carry.
pub fn v2_to_v1(referral: &v2::Referral) -> Translated<v1::Referral> {
    let mut losses = LossReport::default();
    let person = &referral.person;
    let contact = person.contact.clone().unwrap_or_default();
    let address = person.address.clone().unwrap_or_default();

    let identifiers = identifiers_v2_to_v1(&referral.identifiers, &mut losses);
    let situation = referral.situation.as_ref().map(|situation| {
        if situation.education_level.is_some() {
            losses.lose(
                "/situation/education_level",
                "version 1 has no education level",
            );
        }
        v1::Situation {
            labels: situation.labels.clone(),
            rsa_beneficiary: situation.rsa_beneficiary,
            recognised_disability: situation.recognised_disability,
            other: situation.other.clone(),
        }
    });
    let obstacles = referral
        .obstacles
        .iter()
        .enumerate()
        .map(|(index, obstacle)| obstacle_v2_to_v1(index, obstacle, &mut losses))
        .collect();

    let value = v1::Referral {
        referral_id: referral.referral_id,
        schema_version: v1::ReferralV1Tag,
        created_at: referral.created_at,
        sender: referral.sender.clone(),
        recipient: referral.recipient.clone(),
        person: v1::Person {
            first_name: person.first_name.clone(),
            last_name: person.last_name.clone(),
            birth_name: person.birth_name.clone(),
            birth_date: person.birth_date,
            phone: contact.phone,
            email: contact.email,
            other_contact_method: contact.other_method,
            postal_code: address.postal_code,
            insee_code: address.insee_code,
            city: address.city,
            availability: person.availability,
            contact_preferences: contact.preferences,
        },
        identifiers: (!identifiers.is_empty()).then_some(identifiers),
        situation,
        obstacles,
        pathway: referral.pathway,
        axis: referral.axis,
        reason: referral.reason.clone(),
        consent_reference: referral.consent_reference.clone(),
    };
    Translated { value, losses }
}

fn identifiers_v2_to_v1(identifiers: &[Identifier], losses: &mut LossReport) -> v1::Identifiers {
    let mut flat = v1::Identifiers::default();
    let ranks: Vec<u8> = identifiers.iter().map(|i| canonical_rank(i.kind)).collect();
    if ranks.windows(2).any(|pair| pair[0] > pair[1]) {
        losses.lose(
            "/identifiers",
            "version 1 holds identifiers in fixed fields: their order is not kept",
        );
    }
    for (index, identifier) in identifiers.iter().enumerate() {
        let value = identifier.value.clone();
        let taken = match identifier.kind {
            IdentifierKind::FranceTravail => fill(&mut flat.france_travail_number, || {
                super::ids::FranceTravailNumber::parse(&value).ok()
            }),
            IdentifierKind::Caf => fill(&mut flat.caf_number, || Some(value.clone())),
            IdentifierKind::Msa => {
                let taken = fill(&mut flat.caf_number, || Some(value.clone()));
                if taken {
                    losses.lose(
                        format!("/identifiers/{index}/kind"),
                        "version 1 has one field for CAF and MSA numbers: the MSA number is carried as caf_number",
                    );
                }
                taken
            }
            IdentifierKind::Imilo => fill(&mut flat.imilo_dossier_id, || Some(value.clone())),
            IdentifierKind::Departement => fill(&mut flat.departement_id, || Some(value.clone())),
            IdentifierKind::Nir => fill(&mut flat.nir, || super::ids::Nir::parse(&value).ok()),
        };
        if !taken {
            losses.lose(
                format!("/identifiers/{index}"),
                "version 1 holds one identifier of each kind: this one is not carried",
            );
        }
    }
    flat
}

/// Sets an empty slot; tells whether the value was taken.
fn fill<T>(slot: &mut Option<T>, value: impl FnOnce() -> Option<T>) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = value();
    slot.is_some()
}

fn obstacle_v2_to_v1(index: usize, obstacle: &Obstacle, losses: &mut LossReport) -> String {
    let text = obstacle
        .source_label
        .clone()
        .unwrap_or_else(|| obstacle.domain.label_fr().to_owned());
    if obstacle.impact.is_some() {
        losses.lose(
            format!("/obstacles/{index}/impact"),
            "version 1 obstacles are text: the impact is not carried",
        );
    }
    let back = classify(&text);
    if back.domain != obstacle.domain {
        losses.lose(
            format!("/obstacles/{index}/domain"),
            "version 1 obstacles are text: this wording does not classify back into the same domain",
        );
    }
    if back.source_label != obstacle.source_label {
        losses.lose(
            format!("/obstacles/{index}/source_label"),
            "version 1 obstacles are text: the domain label stands in for the missing or ambiguous wording",
        );
    }
    text
}

impl ObstacleDomain {
    /// The French label that stands for the domain in free text (version 1, CSV, reports).
    pub fn label_fr(self) -> &'static str {
        match self {
            Self::Health => "santé",
            Self::Housing => "logement",
            Self::Mobility => "mobilité",
            Self::Family => "contraintes familiales",
            Self::Finances => "difficultés financières",
            Self::Digital => "numérique",
            Self::AdministrativeLegal => "difficultés administratives ou juridiques",
            Self::FrenchMaths => "maîtrise du français ou du calcul",
            Self::Unclassified => "non classé",
        }
    }

    /// Words and codes senders use for the domain, folded (see [`fold`]): theme
    /// codes of spreadsheet exports, France Travail's contrainte names and
    /// diagnostic codes (23 to 29), and their usual values.
    fn synonyms(self) -> &'static [&'static str] {
        match self {
            Self::Health => &[
                "sante",
                "health",
                "contrainte_sante",
                "25",
                "incapacite_recherche_activite_pro",
            ],
            Self::Housing => &[
                "logement",
                "housing",
                "contrainte_logement",
                "27",
                "sans_logement",
                "hebergement",
            ],
            Self::Mobility => &[
                "mobilite",
                "mobility",
                "contrainte_mobilite",
                "23",
                "transport",
                "aucun_moyen_de_transport",
            ],
            Self::Family => &[
                "famille",
                "familial",
                "contraintes_familiales",
                "contrainte_familiale",
                "24",
                "aidant_familial",
                "garde_d_enfant",
            ],
            Self::Finances => &[
                "finances",
                "financier",
                "difficulte_financiere",
                "difficultes_financieres",
                "contrainte_financiere",
                "28",
            ],
            Self::Digital => &[
                "numerique",
                "digital",
                "contrainte_numerique",
                "non_acces_internet",
                "illectronisme",
            ],
            Self::AdministrativeLegal => &[
                "administratif",
                "juridique",
                "administratif_juridique",
                "contrainte_administrative_juridique",
                "29",
                "difficulte_administrative",
                "justice",
            ],
            Self::FrenchMaths => &[
                "francais",
                "maitrise_langue",
                "francais_calcul",
                "contrainte_francais_calcul",
                "26",
                "langue",
                "illettrisme",
            ],
            Self::Unclassified => &[],
        }
    }
}

/// Classifies an obstacle written as text. The exact French label of a domain
/// gives that domain with no source label; a known word or code gives the
/// domain and keeps the wording; anything else is unclassified, wording kept.
pub fn classify(text: &str) -> Obstacle {
    let folded = fold(text);
    let domains = ObstacleDomain::ALL
        .iter()
        .copied()
        .filter(|domain| *domain != ObstacleDomain::Unclassified);
    let mut found = ObstacleDomain::Unclassified;
    for domain in domains {
        if text == domain.label_fr() {
            return Obstacle {
                domain,
                impact: None,
                source_label: None,
            };
        }
        if found == ObstacleDomain::Unclassified
            && (fold(domain.label_fr()) == folded || domain.synonyms().contains(&folded.as_str()))
        {
            found = domain;
        }
    }
    Obstacle {
        domain: found,
        impact: None,
        source_label: Some(text.to_owned()),
    }
}

/// Folds text for matching: lower case, French accents removed, every run of
/// other characters turned into one `_`.
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.trim().chars().flat_map(char::to_lowercase) {
        let plain = match c {
            'à' | 'â' | 'ä' => "a",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'î' | 'ï' => "i",
            'ô' | 'ö' => "o",
            'ù' | 'û' | 'ü' => "u",
            'ç' => "c",
            'œ' => "oe",
            'æ' => "ae",
            c if c.is_ascii_alphanumeric() => {
                folded.push(c);
                continue;
            }
            _ => "_",
        };
        if plain == "_" && (folded.is_empty() || folded.ends_with('_')) {
            continue;
        }
        folded.push_str(plain);
    }
    while folded.ends_with('_') {
        folded.pop();
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_keeps_wording_unless_it_is_the_exact_label() {
        assert_eq!(classify("logement").source_label, None);
        assert_eq!(classify("logement").domain, ObstacleDomain::Housing);
        let coded = classify("Mobilité");
        assert_eq!(coded.domain, ObstacleDomain::Mobility);
        assert_eq!(coded.source_label.as_deref(), Some("Mobilité"));
        assert_eq!(classify("27").domain, ObstacleDomain::Housing);
        assert_eq!(
            classify("contraintes_familiales").domain,
            ObstacleDomain::Family
        );
        let free = classify("a peur des grands espaces");
        assert_eq!(free.domain, ObstacleDomain::Unclassified);
    }

    #[test]
    fn fold_removes_accents_and_punctuation() {
        assert_eq!(fold("  Difficulté financière! "), "difficulte_financiere");
        assert_eq!(fold("Maîtrise -- langue"), "maitrise_langue");
    }
}
