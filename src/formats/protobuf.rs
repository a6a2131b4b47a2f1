//! Protobuf binary referrals (`passerelle.referral.v1` / `.v2` messages).

use std::io::Read;

use crate::error::Error;
use crate::model::{Message, Translated};

use super::{Context, Format, Records};

/// Protobuf binary of one referral schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protobuf {
    /// `passerelle.referral.v1.Referral`.
    V1,
    /// `passerelle.referral.v2.Referral`.
    V2,
}

impl Format for Protobuf {
    fn name(&self) -> &'static str {
        match self {
            Self::V1 => "passerelle-proto-v1",
            Self::V2 => "passerelle-proto-v2",
        }
    }
    fn description(&self) -> &'static str {
        "Protobuf binary referral"
    }
    fn limits(&self) -> &'static str {
        ""
    }
    fn can_decode(&self) -> bool {
        false
    }
    fn can_encode(&self) -> bool {
        false
    }
    fn decode<'a>(
        &'a self,
        _input: Box<dyn Read + 'a>,
        _context: &'a Context,
    ) -> Result<Records<'a>, Error> {
        Err(Error::UnsupportedFormat(self.name().to_owned()))
    }
    fn encode(&self, _message: &Message, _context: &Context) -> Result<Translated<Vec<u8>>, Error> {
        Err(Error::UnsupportedFormat(self.name().to_owned()))
    }
}
