//! COPY text for the applier's batches, written in Rust: `cdc_recon.apply.encode` and
//! `cdc_recon.pg.sql` hold the same rules in Python, which stay the reference.
//!
//! The service's thread spends about a third of its time per event turning winners and
//! ledger rows into COPY text; these functions do the same work without a bytecode per
//! value. They read the same Python objects (`Winner`, `MappedChange`) through their
//! attributes and must return byte for byte what the Python encoders return:
//! `tests/unit/apply/test_native.py` checks that with hypothesis. Whatever they do not handle
//! themselves (a value of an unusual type, a column with its own encoder) they hand to
//! the Python function for it. When an input cannot be written as UTF-8 text here (a
//! lone surrogate) or has an unexpected shape, they raise `Unsupported`, and the caller
//! encodes that batch in Python.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyDate, PyDateAccess, PyDateTime, PyDict, PyFloat, PyInt, PyList, PyString,
    PyTimeAccess, PyTuple, PyTzInfo, PyTzInfoAccess,
};

create_exception!(
    cdc_recon_native,
    Unsupported,
    PyException,
    "An input these encoders leave to the Python ones: encode the batch in Python."
);

const NULL: &str = "\\N";
/// `datetime.fromtimestamp` holds years 1 to 9999: 0001-01-01 and 9999-12-31 23:59:59.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

fn unsupported(what: &str) -> PyErr {
    Unsupported::new_err(what.to_owned())
}

/// The UTF-8 text of a `str` (or subclass); `Unsupported` for anything else, or a
/// string with a lone surrogate, which has no UTF-8 form.
fn text<'a>(value: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    let string = value.cast::<PyString>().map_err(|_| unsupported("expected a str"))?;
    string.to_str().map_err(|_| unsupported("a str with no UTF-8 form"))
}

/// `text` escaped for COPY's text format, as `cdc_recon.pg.sql.escape`.
fn escape_into(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, byte) in bytes.iter().enumerate() {
        let replacement = match byte {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            b'\r' => "\\r",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        out.push_str(replacement);
        start = i + 1;
    }
    out.push_str(&text[start..]);
}

fn int_into(out: &mut String, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match value.extract::<i64>() {
        Ok(number) => write!(out, "{number}").expect("writing to a String"),
        Err(_) => out.push_str(value.str()?.to_str()?),
    }
    Ok(())
}

/// A source position's `bigint[]` literal, as `position_literal`.
fn position_into(out: &mut String, parts: &Bound<'_, PyAny>) -> PyResult<()> {
    let parts = parts.cast::<PyTuple>().map_err(|_| unsupported("position parts"))?;
    out.push('{');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        int_into(out, &part)?;
    }
    out.push('}');
    Ok(())
}

fn parts_into(out: &mut String, parts: &[i64]) {
    out.push('{');
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{part}").expect("writing to a String");
    }
    out.push('}');
}

fn position_parts(parts: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let parts = parts.cast::<PyTuple>().map_err(|_| unsupported("position parts"))?;
    parts
        .iter()
        .map(|part| {
            if part.is_exact_instance_of::<PyInt>() {
                part.extract::<i64>().map_err(|_| unsupported("position part"))
            } else {
                Err(unsupported("position part"))
            }
        })
        .collect()
}

/// Year, month and day of a day count from 1970-01-01 (proleptic Gregorian), after
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The ledger's `source_ts` as COPY text, as `cdc_recon.apply.encode.source_ts_text`.
fn source_ts_into(out: &mut String, millis: i64) {
    let seconds = millis.div_euclid(1000);
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        write!(out, "source_ts_ms {millis} is out of range").expect("writing to a String");
        return;
    }
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let clock = seconds.rem_euclid(86_400);
    write!(
        out,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}+00",
        clock / 3600,
        clock / 60 % 60,
        clock % 60,
        millis.rem_euclid(1000)
    )
    .expect("writing to a String");
}

/// Encodes rows, winners and ledger rows as the Python encoders do.
///
/// Built once with the objects the rules name: `MISSING` (written as NULL, like None),
/// the Python per-value encoder for the types not handled here (`cdc_recon.pg.sql.value_text`),
/// and the `decimal.Decimal` type.
#[pyclass(frozen, module = "cdc_recon_native")]
struct LineEncoder {
    missing: Py<PyAny>,
    fallback: Py<PyAny>,
    decimal: Py<PyAny>,
}

impl LineEncoder {
    fn value_into(&self, out: &mut String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = value.py();
        if value.is_exact_instance_of::<PyString>() {
            escape_into(out, text(value)?);
        } else if value.is_exact_instance_of::<PyInt>() {
            int_into(out, value)?;
        } else if value.is_exact_instance_of::<PyBool>() {
            out.push_str(if value.is_truthy()? { "t" } else { "f" });
        } else if value.is_exact_instance_of::<PyFloat>()
            || value.get_type().is(self.decimal.bind(py))
        {
            out.push_str(value.str()?.to_str()?);
        } else if value.is_exact_instance_of::<PyDateTime>() {
            self.datetime_into(out, value.cast::<PyDateTime>()?)?;
        } else if value.is_exact_instance_of::<PyDate>() {
            let date = value.cast::<PyDate>()?;
            let (year, month, day) = (date.get_year(), date.get_month(), date.get_day());
            write!(out, "{year:04}-{month:02}-{day:02}").expect("writing to a String");
        } else {
            let encoded = self.fallback.bind(py).call1((value,))?;
            out.push_str(text(&encoded)?);
        }
        Ok(())
    }

    /// `datetime.isoformat()`, here for naive and UTC times, in Python for other zones.
    fn datetime_into(&self, out: &mut String, moment: &Bound<'_, PyDateTime>) -> PyResult<()> {
        let py = moment.py();
        let zone = moment.get_tzinfo();
        let utc = match &zone {
            None => false,
            Some(zone) if zone.is(&*PyTzInfo::utc(py)?) => true,
            Some(_) => {
                let iso = moment.call_method0(intern!(py, "isoformat"))?;
                out.push_str(text(&iso)?);
                return Ok(());
            }
        };
        write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            moment.get_year(),
            moment.get_month(),
            moment.get_day(),
            moment.get_hour(),
            moment.get_minute(),
            moment.get_second()
        )
        .expect("writing to a String");
        let micros = moment.get_microsecond();
        if micros != 0 {
            write!(out, ".{micros:06}").expect("writing to a String");
        }
        if utc {
            out.push_str("+00:00");
        }
        Ok(())
    }

    fn line_into(
        &self,
        out: &mut String,
        values: &Bound<'_, PyAny>,
        encoders: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        let py = values.py();
        let values = values.cast::<PyTuple>().map_err(|_| unsupported("a row is a tuple"))?;
        if values.len() != encoders.len() {
            return Err(PyValueError::new_err(format!(
                "a row of {} values for {} columns",
                values.len(),
                encoders.len()
            )));
        }
        let missing = self.missing.bind(py);
        for (i, (value, encode)) in values.iter().zip(encoders.iter()).enumerate() {
            if i > 0 {
                out.push('\t');
            }
            if value.is_none() || value.is(missing) {
                out.push_str(NULL);
            } else if !encode.is_none() {
                let encoded = encode.call1((&value,))?;
                let encoded = encoded
                    .cast::<PyString>()
                    .map_err(|_| PyTypeError::new_err("a column encoder returned no str"))?;
                out.push_str(encoded.to_str().map_err(|_| unsupported("no UTF-8 form"))?);
            } else {
                self.value_into(out, &value)?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl LineEncoder {
    #[new]
    fn new(missing: Py<PyAny>, fallback: Py<PyAny>, decimal: Py<PyAny>) -> Self {
        LineEncoder { missing, fallback, decimal }
    }

    /// One COPY text line, as `cdc_recon.pg.sql.copy_line`.
    fn copy_line(
        &self,
        values: &Bound<'_, PyAny>,
        encoders: &Bound<'_, PyList>,
    ) -> PyResult<String> {
        let mut out = String::new();
        self.line_into(&mut out, values, encoders)?;
        Ok(out)
    }

    /// The stage text of `encode_winners`, whether a winner deletes, and whether one
    /// holds its key's first position (`several`). `missing_sets` (empty) is filled as
    /// `encode_winners` fills its own.
    fn winner_text(
        &self,
        winners: &Bound<'_, PyDict>,
        encoders: &Bound<'_, PyList>,
        missing_sets: &Bound<'_, PyDict>,
    ) -> PyResult<(String, bool, bool)> {
        let py = winners.py();
        let mut out = String::with_capacity(winners.len() * 160 + 1);
        let mut has_deletes = false;
        let mut several = false;
        for (key, winner) in winners.iter() {
            let change = winner.getattr(intern!(py, "change"))?;
            let mut gap = "f";
            let uset = if winner.getattr(intern!(py, "deleted"))?.is_truthy()? {
                has_deletes = true;
                -1
            } else {
                let missing = winner.getattr(intern!(py, "missing"))?;
                let uset = match missing_sets.get_item(&missing)? {
                    Some(number) => number.extract::<i64>()?,
                    None => {
                        let number = missing_sets.len() as i64;
                        missing_sets.set_item(&missing, number)?;
                        number
                    }
                };
                if missing.is_truthy()? {
                    let event =
                        change.getattr(intern!(py, "decoded"))?.getattr(intern!(py, "event"))?;
                    if !event.is_none() && event.getattr(intern!(py, "unavailable"))?.is_truthy()? {
                        gap = "t";
                    }
                }
                uset
            };
            self.line_into(&mut out, &winner.getattr(intern!(py, "row"))?, encoders)?;
            out.push('\t');
            escape_into(&mut out, text(&key)?);
            out.push('\t');
            position_into(
                &mut out,
                &change.getattr(intern!(py, "position"))?.getattr(intern!(py, "parts"))?,
            )?;
            out.push('\t');
            out.push_str(text(&change.getattr(intern!(py, "op"))?)?);
            write!(out, "\t{uset}\t{gap}\t").expect("writing to a String");
            let first = winner.getattr(intern!(py, "first"))?;
            if first.is_none() {
                out.push_str(NULL);
            } else {
                several = true;
                position_into(&mut out, &first.getattr(intern!(py, "parts"))?)?;
            }
            out.push('\n');
        }
        if out.is_empty() {
            out.push('\n');
        }
        Ok((out, has_deletes, several))
    }

    /// The ledger text of `encode_ledger`; `counts` (empty) is filled as it fills its own.
    fn ledger_text(
        &self,
        changes: &Bound<'_, PyList>,
        counts: &Bound<'_, PyDict>,
    ) -> PyResult<String> {
        let py = changes.py();
        // The ids and keys are read first and kept, so that the sets below borrow their
        // text instead of copying it.
        let mut names = Vec::with_capacity(changes.len());
        for change in changes.iter() {
            let change_id = change.getattr(intern!(py, "change_id"))?;
            let target = change.getattr(intern!(py, "target"))?;
            let key_text = change.getattr(intern!(py, "key_text"))?;
            let op = change.getattr(intern!(py, "op"))?;
            names.push((change, change_id, target, key_text, op));
        }
        let mut out = String::with_capacity(changes.len() * 200 + 1);
        let mut seen: HashSet<&str> = HashSet::with_capacity(names.len());
        let mut newest: HashMap<(&str, &str), Vec<i64>> = HashMap::with_capacity(names.len());
        let mut tallies: Vec<((&str, &str, &'static str), i64)> = Vec::new();
        let mut table_text: Option<(Bound<'_, PyAny>, &str, String)> = None;
        for (change, change_id, target, key_text, op) in &names {
            let change_id = text(change_id)?;
            if !seen.insert(change_id) {
                continue;
            }
            let target = text(target)?;
            let key_text = text(key_text)?;
            let parts = position_parts(
                &change.getattr(intern!(py, "position"))?.getattr(intern!(py, "parts"))?,
            )?;
            let outcome = match newest.entry((target, key_text)) {
                Entry::Vacant(slot) => {
                    slot.insert(parts.clone());
                    "applied"
                }
                Entry::Occupied(mut slot) if parts > *slot.get() => {
                    slot.insert(parts.clone());
                    "applied"
                }
                Entry::Occupied(_) => "superseded",
            };
            let decoded = change.getattr(intern!(py, "decoded"))?;
            let event = decoded.getattr(intern!(py, "event"))?;
            if event.is_none() {
                return Err(unsupported("a change without its event"));
            }
            let message = decoded.getattr(intern!(py, "message"))?;
            let op = text(op)?;
            let tally = (target, op, outcome);
            match tallies.iter_mut().find(|(known, _)| *known == tally) {
                Some((_, count)) => *count += 1,
                None => tallies.push((tally, 1)),
            }
            let millis = event.getattr(intern!(py, "source_ts_ms"))?;
            if !millis.is_exact_instance_of::<PyInt>() {
                return Err(unsupported("source_ts_ms"));
            }
            let millis = millis.extract::<i64>().map_err(|_| unsupported("source_ts_ms"))?;

            escape_into(&mut out, change_id);
            out.push('\t');
            // The source table and its target repeat on every line of a table's run.
            let table = event.getattr(intern!(py, "table"))?;
            match &table_text {
                Some((known, into, joined)) if known.is(&table) && *into == target => {
                    out.push_str(joined)
                }
                _ => {
                    let mut joined = String::new();
                    escape_into(&mut joined, text(&table)?);
                    joined.push('\t');
                    escape_into(&mut joined, target);
                    out.push_str(&joined);
                    table_text = Some((table, target, joined));
                }
            }
            out.push('\t');
            escape_into(&mut out, key_text);
            write!(out, "\t{op}\t").expect("writing to a String");
            parts_into(&mut out, &parts);
            out.push('\t');
            let tx = event.getattr(intern!(py, "tx"))?;
            if tx.is_none() {
                out.push_str(NULL);
            } else {
                escape_into(&mut out, text(&tx)?);
            }
            write!(out, "\t{millis}\t").expect("writing to a String");
            escape_into(&mut out, text(&message.getattr(intern!(py, "topic"))?)?);
            out.push('\t');
            int_into(&mut out, &message.getattr(intern!(py, "partition"))?)?;
            out.push('\t');
            int_into(&mut out, &message.getattr(intern!(py, "offset"))?)?;
            out.push('\t');
            source_ts_into(&mut out, millis);
            out.push('\t');
            out.push_str(outcome);
            out.push('\n');
        }
        if out.is_empty() {
            out.push('\n');
        }
        for ((target, op, outcome), count) in tallies {
            counts.set_item((target, op, outcome), count)?;
        }
        Ok(out)
    }
}

/// What `RowChecker` checks of one column: the common cases of `cdc_recon.fit`'s checks.
enum Kind {
    /// Left to the Python check (or no check).
    Skip,
    /// `fit.text_check`: an exact `str` with a UTF-8 form, no NUL, at most this many
    /// characters (negative: no limit).
    Text(i64),
    /// `fit.integer_check`: an exact `int` in [-2^bits, 2^bits - 1].
    Int(u32),
    /// `fit._timestamp`: a `datetime` within years 2-9998 (or naive), or a Debezium
    /// ZonedTimestamp string that `datetime.fromisoformat` reads.
    Timestamp,
    /// `fit._any`: anything but a `str` without a UTF-8 form or with a NUL.
    Any,
}

/// Says whether a row fits its columns without a Python call per value, for the values
/// and columns it knows (`Kind`); it never says yes where `cdc_recon.fit` would say no,
/// and says no for anything it is unsure of, so that the caller runs the Python checks,
/// which give the reason (`tests/unit/apply/test_native.py` holds the two equal).
#[pyclass(frozen, module = "cdc_recon_native")]
struct RowChecker {
    kinds: Vec<Kind>,
    missing: Py<PyAny>,
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with a valid date and time, a year in
/// 2-9998 and an offset under 24 h: what `fit.zoned_timestamp_problem` accepts, less
/// the edge years and odd offsets it is left to judge.
fn zoned_timestamp_fits(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return false;
    }
    if b[16] != b':' {
        return false;
    }
    let field = |at: usize, len: usize| digits(&b[at..at + len]);
    let (Some(year), Some(month), Some(day)) = (field(0, 4), field(5, 2), field(8, 2)) else {
        return false;
    };
    let (Some(hour), Some(minute), Some(second)) = (field(11, 2), field(14, 2), field(17, 2))
    else {
        return false;
    };
    if !(2..=9998).contains(&year) || !(1..=12).contains(&month) {
        return false;
    }
    if day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let count = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&count) {
            return false;
        }
        rest = &rest[1 + count..];
    }
    match rest {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] if *sign == b'+' || *sign == b'-' => {
            matches!((digits(&[*h1, *h2]), digits(&[*m1, *m2])), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

impl RowChecker {
    fn fits_value(&self, kind: &Kind, value: &Bound<'_, PyAny>) -> bool {
        match kind {
            Kind::Skip => true,
            Kind::Text(limit) => {
                if !value.is_exact_instance_of::<PyString>() {
                    return false;
                }
                let Ok(Ok(text)) = value.cast::<PyString>().map(|s| s.to_str()) else {
                    return false;
                };
                !text.contains('\0')
                    && (*limit < 0
                        || text.len() as i64 <= *limit
                        || text.chars().count() as i64 <= *limit)
            }
            Kind::Int(bits) => {
                if !value.is_exact_instance_of::<PyInt>() {
                    return false;
                }
                let Ok(number) = value.extract::<i64>() else {
                    return false;
                };
                let (low, high) = (-(1i128 << bits), (1i128 << bits) - 1);
                (low..=high).contains(&i128::from(number))
            }
            Kind::Timestamp => {
                if let Ok(moment) = value.cast::<PyDateTime>() {
                    return moment.get_tzinfo().is_none()
                        || (2..=9998).contains(&moment.get_year());
                }
                if !value.is_exact_instance_of::<PyString>() {
                    return false;
                }
                match value.cast::<PyString>().map(|s| s.to_str()) {
                    Ok(Ok(text)) => zoned_timestamp_fits(text),
                    _ => false,
                }
            }
            Kind::Any => {
                if !value.is_exact_instance_of::<PyString>() {
                    return true; // `fit._any` checks only exact `str`s
                }
                match value.cast::<PyString>().map(|s| s.to_str()) {
                    Ok(Ok(text)) => !text.contains('\0'),
                    _ => false,
                }
            }
        }
    }
}

#[pymethods]
impl RowChecker {
    /// `kinds`: per column, None (left to Python) or (name, parameter): ("text", limit
    /// or -1), ("int", bits), ("timestamp", 0), ("any", 0), as `fit.native_kind` says.
    #[new]
    fn new(kinds: Vec<Option<(String, i64)>>, missing: Py<PyAny>) -> PyResult<Self> {
        let kinds = kinds
            .into_iter()
            .map(|kind| match kind {
                None => Ok(Kind::Skip),
                Some((name, parameter)) => match name.as_str() {
                    "text" => Ok(Kind::Text(parameter)),
                    "int" if (1..=63).contains(&parameter) => Ok(Kind::Int(parameter as u32)),
                    "timestamp" => Ok(Kind::Timestamp),
                    "any" => Ok(Kind::Any),
                    _ => Err(PyValueError::new_err(format!("unknown check {name}({parameter})"))),
                },
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(RowChecker { kinds, missing })
    }

    /// True when every value of `row` (a tuple or list in column order; None and
    /// MISSING always fit) passes its column's check; False when one may not.
    fn fits(&self, row: &Bound<'_, PyAny>) -> bool {
        let missing = self.missing.bind(row.py());
        let check = |i: usize, value: Bound<'_, PyAny>| -> bool {
            value.is_none()
                || value.is(missing)
                || self.kinds.get(i).is_some_and(|kind| self.fits_value(kind, &value))
        };
        if let Ok(tuple) = row.cast::<PyTuple>() {
            tuple.len() == self.kinds.len() && tuple.iter().enumerate().all(|(i, v)| check(i, v))
        } else if let Ok(list) = row.cast::<PyList>() {
            list.len() == self.kinds.len() && list.iter().enumerate().all(|(i, v)| check(i, v))
        } else {
            false
        }
    }
}

/// `cdc_recon.pg.sql.escape`, for the tests that hold the two equal.
#[pyfunction]
fn escape(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut out = String::new();
    escape_into(&mut out, text(value)?);
    Ok(out)
}

/// `cdc_recon.apply.encode.source_ts_text`, for the tests that hold the two equal.
#[pyfunction]
fn source_ts_text(millis: i64) -> String {
    let mut out = String::new();
    source_ts_into(&mut out, millis);
    out
}

#[pymodule]
fn cdc_recon_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<LineEncoder>()?;
    module.add_class::<RowChecker>()?;
    module.add("Unsupported", module.py().get_type::<Unsupported>())?;
    module.add_function(wrap_pyfunction!(escape, module)?)?;
    module.add_function(wrap_pyfunction!(source_ts_text, module)?)?;
    Ok(())
}
