//! Spreadsheet exports (CSV) read through a per-source [`Mapping`] file: one
//! canonical version 2 referral per data row.
//!
//! Decoding streams: the input goes through a transcoder to UTF-8
//! (`encoding_rs_io`), a reader that turns CRLF into LF and bounds the size of
//! one row, and a `csv` reader that reuses one record buffer; each row is
//! decoded when the iterator asks for it, so memory does not grow with the file.
//!
//! Cells are checked as they are read: typed parsers (SIRET, NIR, dates,
//! emails, ...) and the schema's `maxLength` for names (140) and the reason
//! (600), plus the adapter's own bound on other cells. Referrals are not
//! serialised and validated against the JSON Schema row by row: that would cost
//! several times the decoding itself, the typed model already holds what the
//! schema checks, and the pipeline validates canonical referrals in any case.
//! The golden tests check every decoded row against the schema.
//!
//! File-level problems (no recipient, wrong delimiter, a required column
//! missing, a column neither mapped nor ignored, a header that is not text in
//! the mapping's encoding) fail [`Format::decode`] itself. Row-level problems
//! fail that row's [`Record`] only, located by line and column, and the next
//! rows are read. Errors name lines, columns and rules, never cell values.

use std::io::{self, BufRead, Read};

use csv::ByteRecord;
use encoding_rs::UTF_8;
use encoding_rs_io::DecodeReaderBytesBuilder;

use crate::error::{Error, Violation};
use crate::model::common::Organisation;
use crate::model::{Message, Translated};

use super::{Context, Format, Record, Records};

mod mapping;
mod row;
#[cfg(test)]
mod tests;

pub use mapping::Mapping;

/// The largest row read, in bytes (after transcoding to UTF-8); the context's
/// `max_bytes` lowers it. A spreadsheet row is far smaller: a longer one is
/// almost always a quote left open that swallows the rest of the file.
pub const MAX_ROW_BYTES: u64 = 64 * 1024;

/// The `csv` reader's buffer; the row bound allows for what it reads ahead.
const READ_BUFFER: usize = 8 * 1024;

/// The `csv` format: a spreadsheet export and the mapping of its source.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    mapping: Mapping,
}

impl CsvFormat {
    /// The format for files of the source the mapping describes.
    pub fn new(mapping: Mapping) -> Self {
        Self { mapping }
    }

    /// The mapping in use.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

impl Format for CsvFormat {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn description(&self) -> &'static str {
        super::CSV_DESCRIPTION
    }

    fn limits(&self) -> &'static str {
        super::CSV_LIMITS
    }

    fn can_decode(&self) -> bool {
        true
    }

    fn can_encode(&self) -> bool {
        false
    }

    fn decode<'a>(
        &'a self,
        input: Box<dyn Read + 'a>,
        context: &'a Context,
    ) -> Result<Records<'a>, Error> {
        let mapping = &self.mapping;
        let recipient = context.recipient.as_ref().ok_or_else(|| {
            Error::Invalid(vec![Violation::new(
                "/recipient/organisation",
                "required",
                "a recipient organisation given by the caller (a CSV export names none), found none",
            )])
        })?;
        if mapping.sender.is_none() && context.sender.is_none() && !mapping.has_sender_column() {
            return Err(Error::Invalid(vec![Violation::new(
                "/sender/organisation",
                "required",
                format!(
                    "a sender organisation: from a column of the file, the [sender] of mapping {}, \
                     or the caller; found none",
                    mapping.label
                ),
            )]));
        }

        let row_limit = context.limits.max_bytes.min(MAX_ROW_BYTES);
        let bounded = RowInput::new(
            decoding_reader(mapping, input),
            row_limit + READ_BUFFER as u64,
        );
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(mapping.delimiter)
            .has_headers(false)
            // Rows of the wrong width are reported one by one, not as a reader failure.
            .flexible(true)
            .buffer_capacity(READ_BUFFER)
            .from_reader(bounded);

        let mut header = ByteRecord::new();
        let header_line = match reader.read_byte_record(&mut header) {
            Ok(true) => finish_record(&mut reader, &header),
            Ok(false) => {
                return Err(Error::Malformed {
                    detail: "the file is empty: expected a header line naming the columns"
                        .to_owned(),
                    line: Some(1),
                    column: None,
                });
            }
            Err(error) => return Err(read_error(error, 1, row_limit, "the header line")),
        };
        let next_line = reader.position().line();
        let plan = Plan::new(mapping, &header, header_line)?;
        Ok(Box::new(Rows {
            reader,
            record: ByteRecord::new(),
            mapping,
            context,
            recipient,
            plan,
            row_limit,
            next_line,
            finished: false,
        }))
    }

    fn encode(&self, _message: &Message, _context: &Context) -> Result<Translated<Vec<u8>>, Error> {
        Err(Error::UnsupportedFormat(
            "csv is read only: write referrals in another format".to_owned(),
        ))
    }
}

/// Transcodes the input to UTF-8 as it is read.
///
/// For UTF-8 mappings the bytes pass through unchanged (minus a BOM) so that
/// invalid UTF-8 is reported with its line and column instead of being
/// replaced silently. Other encodings decode every byte; a BOM, if any, wins
/// over the mapping (a file saved as "CSV UTF-8" by Excel carries one).
fn decoding_reader<'a>(mapping: &Mapping, input: Box<dyn Read + 'a>) -> impl Read + 'a {
    let mut builder = DecodeReaderBytesBuilder::new();
    builder.strip_bom(true);
    if mapping.encoding == UTF_8 {
        builder.utf8_passthru(true);
    } else {
        builder.encoding(Some(mapping.encoding)).bom_override(true);
    }
    builder.build(input)
}

/// What the `csv` reader reads: the transcoded input with CRLF line ends
/// turned into LF, and a bound on the length of the current row.
///
/// `csv` counts lines by the LF it has consumed and stops a CRLF row at the CR,
/// so every row after the first of a CRLF file would be reported one line too
/// early; with LF only, its line numbers are right. A CRLF inside a quoted cell
/// becomes LF too.
///
/// The bound: once the current row is longer than the limit, reading fails, so
/// that memory stays bounded whatever the input.
struct RowInput<R> {
    inner: io::BufReader<R>,
    /// Bytes handed to the `csv` reader.
    consumed: u64,
    row_start: u64,
    limit: u64,
    /// The last byte handed out, and whether the input has ended: together
    /// they tell whether the last row ended with a line break.
    last: Option<u8>,
    exhausted: bool,
}

impl<R: Read> RowInput<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner: io::BufReader::with_capacity(READ_BUFFER, inner),
            consumed: 0,
            row_start: 0,
            limit,
            last: None,
            exhausted: false,
        }
    }
}

impl<R: Read> Read for RowInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.consumed.saturating_sub(self.row_start) > self.limit {
            return Err(io::Error::other(RowTooLong));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let available = self.inner.fill_buf()?;
        if available.is_empty() {
            self.exhausted = true;
            return Ok(0);
        }
        if available == b"\r" {
            // A CR at the end of what is buffered: whether it ends a CRLF depends
            // on the next byte, which only the next fill shows.
            self.inner.consume(1);
            let next = self.inner.fill_buf()?;
            buf[0] = if next.first() == Some(&b'\n') {
                self.inner.consume(1);
                b'\n'
            } else {
                b'\r'
            };
            self.consumed += 1;
            self.last = Some(buf[0]);
            return Ok(1);
        }
        let (mut taken, mut written) = (0, 0);
        while taken < available.len() && written < buf.len() {
            let rest = &available[taken..];
            let room = (buf.len() - written).min(rest.len());
            let plain = rest[..room]
                .iter()
                .position(|byte| *byte == b'\r')
                .unwrap_or(room);
            buf[written..written + plain].copy_from_slice(&rest[..plain]);
            written += plain;
            taken += plain;
            if plain == room {
                continue;
            }
            match rest.get(plain + 1) {
                // CRLF: drop the CR, the LF is copied next.
                Some(b'\n') => taken += 1,
                // Left for the next call, which sees what follows it.
                None => break,
                Some(_) => {
                    buf[written] = b'\r';
                    written += 1;
                    taken += 1;
                }
            }
        }
        self.inner.consume(taken);
        self.consumed += written as u64;
        if written > 0 {
            self.last = Some(buf[written - 1]);
        }
        Ok(written)
    }
}

/// The marker error of [`RowInput`].
#[derive(Debug)]
struct RowTooLong;

impl std::fmt::Display for RowTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("row too long")
    }
}

impl std::error::Error for RowTooLong {}

/// Called after each record: tells the row bound that a new row starts where
/// the reader stands, and returns the line the record started on.
///
/// `csv` stamps a record with the line it stood on before skipping blank lines,
/// so the start is worked out from the end instead: the line after the record,
/// less the line breaks inside its quoted cells and the one that ended it.
fn finish_record<R: Read>(reader: &mut csv::Reader<RowInput<R>>, record: &ByteRecord) -> u64 {
    let position = reader.position();
    let (end_byte, end_line) = (position.byte(), position.line());
    let input = reader.get_mut();
    input.row_start = end_byte;
    let at_end = input.exhausted && end_byte == input.consumed;
    let ended_by_break = !at_end || input.last == Some(b'\n');
    let inner_breaks = record
        .as_slice()
        .iter()
        .filter(|byte| **byte == b'\n')
        .count() as u64;
    end_line
        .saturating_sub(inner_breaks)
        .saturating_sub(u64::from(ended_by_break))
        .max(1)
}

fn read_error(error: csv::Error, line: u64, row_limit: u64, what: &str) -> Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error)
            if error
                .get_ref()
                .is_some_and(|inner| inner.is::<RowTooLong>()) =>
        {
            Error::Malformed {
                detail: format!(
                    "{what} starting at this line is longer than {row_limit} bytes (is a quote left open?)"
                ),
                line: Some(line),
                column: None,
            }
        }
        // The input's own refusal (an HTTP body over its size limit or past
        // its deadline) is passed on as it is.
        csv::ErrorKind::Io(source) if source.get_ref().is_some_and(|inner| inner.is::<Error>()) => {
            match source.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(error)) => *error,
                _ => Error::Internal("a CSV input error changed its kind".to_owned()),
            }
        }
        csv::ErrorKind::Io(source) => Error::Io {
            context: "reading the CSV input".to_owned(),
            source,
        },
        _ => Error::Malformed {
            detail: format!("{what} cannot be read as CSV"),
            line: Some(line),
            column: None,
        },
    }
}

/// Where each mapped field and each ignored column sits in the file's rows.
struct Plan {
    /// The number of columns of the header, which every row must have.
    width: usize,
    /// (index into the mapping's fields, column index).
    cells: Vec<(usize, usize)>,
    /// (column index, loss path) of ignored columns.
    ignored: Vec<(usize, String)>,
    /// Why an ignored cell is reported lost.
    ignored_reason: String,
}

impl Plan {
    fn new(mapping: &Mapping, header: &ByteRecord, line: u64) -> Result<Self, Error> {
        let mut names = Vec::with_capacity(header.len());
        for (index, raw) in header.iter().enumerate() {
            let name = std::str::from_utf8(raw).map_err(|_| Error::Malformed {
                detail: format!(
                    "header cell {} is not valid {}, the encoding mapping {} names (is the file \
                     in another encoding, such as windows-1252?)",
                    index + 1,
                    mapping.encoding.name(),
                    mapping.label
                ),
                line: Some(line),
                column: Some(index as u64 + 1),
            })?;
            names.push(name.trim());
        }
        let mapped = mapping.mapped_columns();
        if names.len() == 1 && mapped.len() > 1 {
            return Err(Error::Malformed {
                detail: wrong_delimiter(mapping.delimiter, names[0]),
                line: Some(line),
                column: None,
            });
        }

        let mut violations = Vec::new();
        let mut cells = Vec::new();
        for (field, spec) in mapping.fields.iter().enumerate() {
            let mut found = names
                .iter()
                .enumerate()
                .filter(|(_, name)| **name == spec.column);
            match (found.next(), found.next()) {
                (Some((column, _)), None) => cells.push((field, column)),
                (Some(_), Some(_)) => violations.push(
                    Violation::new(
                        spec.canonical.pointer,
                        "duplicate-column",
                        "a header naming the column once, found it twice or more",
                    )
                    .at_cell(line, Some(spec.column.clone())),
                ),
                (None, _) if spec.required => violations.push(
                    Violation::new(
                        spec.canonical.pointer,
                        "required-column",
                        format!(
                            "the column mapping {} requires for {}, found no such header",
                            mapping.label, spec.canonical.key
                        ),
                    )
                    .at_cell(line, Some(spec.column.clone())),
                ),
                (None, _) => {}
            }
        }

        let mut ignored = Vec::new();
        for (column, name) in names.iter().enumerate() {
            if mapped.contains(name) {
                continue;
            }
            if mapping.ignore.contains(*name) {
                ignored.push((
                    column,
                    format!("/{}", name.replace('~', "~0").replace('/', "~1")),
                ));
            } else if name.is_empty() {
                violations.push(
                    Violation::new(
                        "",
                        "unknown-column",
                        format!(
                            "a name for header cell {}, found none (name the column, or list \"\" \
                             in the ignore of mapping {})",
                            column + 1,
                            mapping.label
                        ),
                    )
                    .at_cell(line, None),
                );
            } else {
                violations.push(
                    Violation::new(
                        "",
                        "unknown-column",
                        format!(
                            "a column mapping {} maps or ignores, found one it does neither \
                             (map it under [fields] or list it in ignore)",
                            mapping.label
                        ),
                    )
                    .at_cell(line, Some((*name).to_owned())),
                );
            }
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        Ok(Self {
            width: names.len(),
            cells,
            ignored,
            ignored_reason: format!("column ignored by mapping {}", mapping.label),
        })
    }
}

fn wrong_delimiter(delimiter: u8, header: &str) -> String {
    let show = |byte: u8| match byte {
        b'\t' => "tab".to_owned(),
        other => format!("'{}'", char::from(other)),
    };
    let hint = [b';', b',', b'\t', b'|']
        .into_iter()
        .filter(|candidate| *candidate != delimiter)
        .find(|candidate| header.as_bytes().contains(candidate))
        .map(|found| {
            format!(
                "; the header contains {}: is that the file's delimiter?",
                show(found)
            )
        })
        .unwrap_or_default();
    format!(
        "the header has 1 column; the mapping expects delimiter {}{hint}",
        show(delimiter)
    )
}

/// The data rows of one file, decoded one at a time.
struct Rows<'a, R: Read> {
    reader: csv::Reader<RowInput<R>>,
    /// Reused for every row.
    record: ByteRecord,
    mapping: &'a Mapping,
    context: &'a Context,
    recipient: &'a Organisation,
    plan: Plan,
    row_limit: u64,
    /// The line after the last row read, where an unreadable row is reported.
    next_line: u64,
    finished: bool,
}

impl<R: Read> Iterator for Rows<'_, R> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        while !self.finished {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => self.finished = true,
                Ok(true) => {
                    let line = finish_record(&mut self.reader, &self.record);
                    self.next_line = self.reader.position().line();
                    // Spreadsheets leave rows of empty cells after the data: nothing to carry.
                    if self.record.iter().all(|cell| cell.trim_ascii().is_empty()) {
                        continue;
                    }
                    let result = if self.record.len() == self.plan.width {
                        row::decode(
                            &self.record,
                            line,
                            self.mapping,
                            &self.plan,
                            self.context,
                            self.recipient,
                        )
                    } else {
                        Err(Error::Malformed {
                            detail: format!(
                                "a row of {} cells like the header, found {}",
                                self.plan.width,
                                self.record.len()
                            ),
                            line: Some(line),
                            column: None,
                        })
                    };
                    return Some(Record {
                        line: Some(line),
                        result,
                    });
                }
                Err(error) => {
                    // After an I/O failure or an overlong row the reader cannot find the
                    // next row boundary reliably: stop here.
                    self.finished = true;
                    return Some(Record {
                        line: Some(self.next_line),
                        result: Err(read_error(error, self.next_line, self.row_limit, "the row")),
                    });
                }
            }
        }
        None
    }
}
