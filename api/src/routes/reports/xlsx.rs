//! A report as an Excel workbook ([`rust_xlsxwriter`]): the CSV export's
//! rows on one sheet, counts as numbers, a bold frozen header.

use rust_xlsxwriter::{Format, Workbook};
use shared::reports::{
    compute::Report,
    export::{Cell, HEADER, rows_of},
    own::Section,
};

use crate::error::ApiError;

/// The workbook's bytes, with the total and `sections` only.
pub fn workbook(report: &Report, sections: &[Section]) -> Result<Vec<u8>, ApiError> {
    build(report, sections)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("while writing XLSX")))
}

fn build(report: &Report, sections: &[Section]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("Report")?;
    let bold = Format::new().set_bold();
    for (c, name) in HEADER.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, *name, &bold)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    for (r, cells) in rows_of(report, sections).iter().enumerate() {
        let r = r as u32 + 1;
        for (c, cell) in cells.iter().enumerate() {
            let c = c as u16;
            match cell {
                Cell::Text(s) => {
                    sheet.write_string(r, c, s)?;
                }
                Cell::Int(i) => {
                    sheet.write_number(r, c, *i as f64)?;
                }
                Cell::Num(n) => {
                    sheet.write_number(r, c, *n)?;
                }
                Cell::Empty => {}
            }
        }
    }
    sheet.set_column_width(0, 14)?;
    sheet.set_column_width(1, 28)?;
    book.save_to_buffer()
}
