//! Placeholder: being written.

use std::io::Read;

use crate::error::Error;
use crate::model::{Message, Translated};

use super::{Context, Format, Records};

/// Placeholder.
#[derive(Debug)]
pub struct Dora;

impl Format for Dora {
    fn name(&self) -> &'static str {
        "dora"
    }
    fn description(&self) -> &'static str {
        ""
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
