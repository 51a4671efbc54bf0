//! Reading CSV records from a byte stream fed in pieces, with the byte
//! offset where each record ends, so a reader can stop after any record and
//! resume later from that offset with a fresh [`CsvRows`].
//!
//! Built on `csv-core`, which never fails and prefers *a* parse to none. The
//! file-level errors a bulk job must refuse are found here: a quoted field
//! still open at the end of the file (unbalanced quotes), and fields that are
//! not UTF-8. A UTF-8 byte-order mark at the start is skipped.

/// One record, borrowed from the reader's buffers.
#[derive(Debug)]
pub struct Record<'a> {
    data: &'a [u8],
    ends: &'a [usize],
    /// The absolute byte offset just after the record.
    pub end_offset: u64,
}

impl<'a> Record<'a> {
    /// How many fields it has.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it has no fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Field `i`'s raw bytes.
    pub fn raw(&self, i: usize) -> Option<&'a [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// Field `i` as text; `Err` when it is not UTF-8.
    pub fn field(&self, i: usize) -> Option<Result<&'a str, std::str::Utf8Error>> {
        self.raw(i).map(std::str::from_utf8)
    }

    /// Every field as text, or the index of the first that is not UTF-8.
    pub fn fields(&self) -> Result<Vec<&'a str>, usize> {
        (0..self.len())
            .map(|i| self.field(i).and_then(Result::ok).ok_or(i))
            .collect()
    }
}

/// A file-level problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// A quoted field is never closed.
    #[error("unbalanced quotes: a quoted field that starts in row {row} is never closed")]
    UnbalancedQuotes {
        /// The record (counting the header as 0) where it starts.
        row: u64,
    },
}

/// An incremental CSV record reader.
#[derive(Debug)]
pub struct CsvRows {
    reader: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    nout: usize,
    nend: usize,
    /// Bytes consumed so far, absolute.
    offset: u64,
    /// Quote characters in the current record so far.
    quotes: u64,
    /// Records completed so far.
    records: u64,
    /// The file's first bytes, held while they are only part of a
    /// byte-order mark (`csv-core` skips a BOM only when it arrives whole).
    head: Vec<u8>,
    /// Whether bytes have gone to `csv-core` yet.
    started: bool,
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xef\xbb\xbf";

impl CsvRows {
    /// A reader whose first byte is at `offset` of the file.
    pub fn starting_at(offset: u64) -> Self {
        Self {
            reader: csv_core::Reader::new(),
            out: vec![0; 64 * 1024],
            ends: vec![0; 256],
            nout: 0,
            nend: 0,
            offset,
            quotes: 0,
            records: 0,
            head: Vec::new(),
            // Only the start of the file can carry a BOM.
            started: offset > 0,
        }
    }

    /// Feeds the next piece of the file (an empty piece means the end of
    /// the file) and calls `each` with every record it completes, until
    /// `each` returns `false`. Returns whether it stopped early.
    pub fn feed(
        &mut self,
        input: &[u8],
        each: &mut dyn FnMut(Record<'_>) -> bool,
    ) -> Result<bool, FileError> {
        if self.started {
            return self.feed_started(input, each);
        }
        let mut head = std::mem::take(&mut self.head);
        if input.is_empty() {
            self.started = true;
            if !head.is_empty() && self.feed_started(&head, each)? {
                return Ok(true);
            }
            return self.feed_started(input, each);
        }
        head.extend_from_slice(&input[..input.len().min(BOM.len())]);
        if head.len() < BOM.len() && BOM.starts_with(&head) {
            // Perhaps a BOM cut in two: wait for the rest.
            self.head = head;
            return Ok(false);
        }
        self.started = true;
        let held = head.len() - input.len().min(BOM.len());
        if held == 0 {
            self.feed_started(input, each)
        } else {
            let whole = [&head[..held], input].concat();
            self.feed_started(&whole, each)
        }
    }

    fn feed_started(
        &mut self,
        mut input: &[u8],
        each: &mut dyn FnMut(Record<'_>) -> bool,
    ) -> Result<bool, FileError> {
        let eof = input.is_empty();
        loop {
            let (res, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.out[self.nout..],
                &mut self.ends[self.nend..],
            );
            self.quotes += input[..nin].iter().filter(|b| **b == b'"').count() as u64;
            input = &input[nin..];
            self.offset += nin as u64;
            self.nout += nout;
            self.nend += nend;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {
                    if !eof {
                        return Ok(false);
                    }
                }
                csv_core::ReadRecordResult::OutputFull => {
                    let len = self.out.len() * 2;
                    self.out.resize(len, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len() * 2;
                    self.ends.resize(len, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    // A record that ends at the end of the file with an odd
                    // number of quotes had a quoted field still open.
                    if eof && self.quotes % 2 == 1 {
                        return Err(FileError::UnbalancedQuotes { row: self.records });
                    }
                    let keep = each(Record {
                        data: &self.out[..self.nout],
                        ends: &self.ends[..self.nend],
                        end_offset: self.offset,
                    });
                    self.records += 1;
                    self.nout = 0;
                    self.nend = 0;
                    self.quotes = 0;
                    if !keep {
                        return Ok(true);
                    }
                }
                csv_core::ReadRecordResult::End => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(pieces: &[&[u8]]) -> Result<Vec<(Vec<String>, u64)>, FileError> {
        let mut rows = CsvRows::starting_at(0);
        let mut out = Vec::new();
        for piece in pieces.iter().chain([&&b""[..]]) {
            rows.feed(piece, &mut |r| {
                let fields = r.fields().unwrap().iter().map(|s| s.to_string()).collect();
                out.push((fields, r.end_offset));
                true
            })?;
        }
        Ok(out)
    }

    #[test]
    fn records_split_across_pieces_come_out_whole_with_their_end_offsets() {
        let rows = read_all(&[b"a,b\n1,\"x", b"\ny\"\n2,z"]).unwrap();
        assert_eq!(
            rows,
            vec![
                (vec!["a".into(), "b".into()], 4),
                (vec!["1".into(), "x\ny".into()], 12),
                (vec!["2".into(), "z".into()], 15),
            ]
        );
    }

    #[test]
    fn a_bom_is_skipped_and_escaped_quotes_are_fine() {
        let rows = read_all(&[b"\xef\xbb\xbfname\r\n\"say \"\"hi\"\"\"\r\n"]).unwrap();
        assert_eq!(rows[0].0, vec!["name"]);
        assert_eq!(rows[1].0, vec!["say \"hi\""]);
    }

    #[test]
    fn a_quote_left_open_at_the_end_is_an_error() {
        let err = read_all(&[b"a,b\n1,\"open\n2,3\n"]).unwrap_err();
        assert_eq!(err, FileError::UnbalancedQuotes { row: 1 });
    }

    #[test]
    fn reading_can_resume_from_any_record_end() {
        let file = b"h\n1\n22\n333\n";
        let all = read_all(&[file]).unwrap();
        let (_, cut) = all[1];
        let mut rows = CsvRows::starting_at(cut);
        let mut rest = Vec::new();
        for piece in [&file[cut as usize..], b""] {
            rows.feed(piece, &mut |r| {
                rest.push((r.fields().unwrap()[0].to_owned(), r.end_offset));
                true
            })
            .unwrap();
        }
        assert_eq!(rest, vec![("22".to_owned(), 7), ("333".to_owned(), 11)]);
    }

    #[test]
    fn invalid_utf8_is_reported_per_field() {
        let mut rows = CsvRows::starting_at(0);
        let mut bad = None;
        rows.feed(b"ok,\xff\xfe\n", &mut |r| {
            bad = r.fields().err();
            true
        })
        .unwrap();
        assert_eq!(bad, Some(1));
    }
}

/// Properties: any bytes in any pieces read without a panic and the same
/// way however the file is cut; records written with standard quoting read
/// back as written; reading resumed at any record's end offset reads the
/// rest.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    type Rows = Vec<(Vec<Vec<u8>>, u64)>;

    /// Reads `file` cut at `cuts` (offsets into it), from `offset`.
    fn read(file: &[u8], cuts: &[usize], offset: u64) -> Result<Rows, FileError> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (file.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([file.len()]) {
            if c > at {
                pieces.push(&file[at..c]);
                at = c;
            }
        }
        let mut rows = CsvRows::starting_at(offset);
        let mut out = Vec::new();
        for piece in pieces.into_iter().chain([&b""[..]]) {
            rows.feed(piece, &mut |r| {
                let fields = (0..r.len()).map(|i| r.raw(i).unwrap().to_vec()).collect();
                out.push((fields, r.end_offset));
                true
            })?;
        }
        Ok(out)
    }

    /// A CSV file quoting every field, with `\n` or `\r\n` line ends.
    fn write(records: &[Vec<String>], crlf: bool) -> Vec<u8> {
        let mut file = String::new();
        for record in records {
            let fields: Vec<String> = record
                .iter()
                .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
                .collect();
            file.push_str(&fields.join(","));
            file.push_str(if crlf { "\r\n" } else { "\n" });
        }
        file.into_bytes()
    }

    /// Any bytes, or bytes made of CSV's special characters, either
    /// possibly after a UTF-8 byte-order mark.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::collection::vec(
                prop_oneof![
                    Just(b'"'),
                    Just(b','),
                    Just(b'\n'),
                    Just(b'\r'),
                    Just(0),
                    Just(b'a'),
                    Just(0xff)
                ],
                0..256,
            ),
        ];
        (any::<bool>(), body).prop_map(|(bom, body)| {
            if bom {
                [&b"\xef\xbb\xbf"[..], &body].concat()
            } else {
                body
            }
        })
    }

    proptest! {
        #[test]
        fn any_bytes_read_the_same_however_they_are_cut(
            file in bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = read(&file, &[], 0);
            let cut = read(&file, &cuts, 0);
            prop_assert_eq!(&whole, &cut);
            if let Ok(rows) = whole {
                let ends: Vec<u64> = rows.iter().map(|r| r.1).collect();
                prop_assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
                prop_assert!(ends.iter().all(|e| *e <= file.len() as u64));
            }
        }

        #[test]
        fn quoted_records_read_back_as_written(
            records in proptest::collection::vec(
                proptest::collection::vec(any::<String>(), 1..5),
                0..20,
            ),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let file = write(&records, crlf);
            let rows = read(&file, &cuts, 0).unwrap();
            let got: Vec<Vec<String>> = rows
                .iter()
                .map(|(fields, _)| {
                    fields.iter().map(|f| String::from_utf8(f.clone()).unwrap()).collect()
                })
                .collect();
            prop_assert_eq!(got, records);
            // A record ends at its CR; the LF after it is skipped as an
            // empty line by whoever reads on.
            let end = rows.last().map_or(0, |r| r.1);
            let len = file.len() as u64;
            prop_assert!(end == len || (crlf && end + 1 == len), "{end} of {len}");
        }

        #[test]
        fn reading_resumed_at_a_record_end_reads_the_rest(
            file in bytes(),
            pick in any::<prop::sample::Index>(),
        ) {
            if let Ok(rows) = read(&file, &[], 0)
                && !rows.is_empty()
            {
                let i = pick.index(rows.len());
                let cut = rows[i].1;
                let rest = read(&file[cut as usize..], &[], cut);
                // Only a BOM at the very start of the file is skipped, so
                // the rest must not start with one to compare.
                if !file[cut as usize..].starts_with(b"\xef\xbb\xbf") {
                    prop_assert_eq!(rest.unwrap(), rows[i + 1..].to_vec());
                }
            }
        }
    }
}
