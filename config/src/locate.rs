//! From byte offsets in the file to what an error message names: line, column and key path.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::ConfigError;

/// Key named by errors that belong to no key, such as a syntax error before any table.
pub(crate) const TOP_LEVEL: &str = "(top level)";

/// The file being validated: its name for messages and its text for positions.
pub(crate) struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error about the text at `span`.
    pub fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at(position(self.text.as_bytes(), span.start), key, message)
    }

    /// An error about something missing from the whole file, reported at its start.
    pub fn error_at_start(
        &self,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at((1, 1), key, message)
    }

    /// The 1-based line where `span` starts.
    pub fn line(&self, span: Range<usize>) -> usize {
        position(self.text.as_bytes(), span.start).0
    }

    fn error_at(
        &self,
        location: (usize, usize),
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            location: Some(location),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// 1-based line and column of byte `offset` in `text`; the column counts characters.
///
/// Works on bytes, counting UTF-8 lead bytes as characters, so that an offset that is out of
/// range or inside a character (or text that is not UTF-8) cannot make it panic.
pub(crate) fn position(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count();
    (line, column)
}

/// One key or value of the document with its span, found while walking the tree.
struct Place {
    path: String,
    depth: usize,
    span: Range<usize>,
    /// Set for tables written as a `[header]` or `[[header]]`, whose span is the header line.
    header: bool,
    /// Set for arrays, including arrays of tables.
    array: bool,
}

/// Every key and value of `table`, with its path and span, appended to `places`.
fn walk_table(table: &DeTable<'_>, text: &str, path: &str, depth: usize, places: &mut Vec<Place>) {
    for (key, value) in table.iter() {
        let name = key.get_ref();
        // Written as in TOML: bare when it can be, else quoted (this also shows an empty key).
        let name = if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            name.to_string()
        } else {
            format!("{:?}", name.as_ref())
        };
        let path = if path.is_empty() {
            name
        } else {
            format!("{path}.{name}")
        };
        places.push(Place {
            path: path.clone(),
            depth: depth + 1,
            span: key.span(),
            header: false,
            array: false,
        });
        walk_value(value, text, path, depth + 1, places);
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    text: &str,
    path: String,
    depth: usize,
    places: &mut Vec<Place>,
) {
    let span = value.span();
    match value.get_ref() {
        DeValue::Table(table) => {
            walk_table(table, text, &path, depth, places);
            let header = text.as_bytes().get(span.start) == Some(&b'[');
            places.push(Place {
                path,
                depth,
                span,
                header,
                array: false,
            });
        }
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                walk_value(element, text, format!("{path}[{index}]"), depth + 1, places);
            }
            places.push(Place {
                path,
                depth,
                span,
                header: false,
                array: true,
            });
        }
        _ => places.push(Place {
            path,
            depth,
            span,
            header: false,
            array: false,
        }),
    }
}

/// Path of the key an error spanning `span` is about: the narrowest key or value containing
/// the span (the deepest on a tie, as an array of tables shares its first element's span),
/// else the `[table]` whose section the span is in, else [`TOP_LEVEL`].
pub(crate) fn key_path(tree: &DeTable<'_>, text: &str, span: &Range<usize>) -> String {
    let mut places = Vec::new();
    walk_table(tree, text, "", 0, &mut places);
    match narrowest(&places, span) {
        Some(place) => place.path.clone(),
        None => section(&places, span.start),
    }
}

/// The narrowest place containing `span`, the deepest on a tie.
fn narrowest<'a>(places: &'a [Place], span: &Range<usize>) -> Option<&'a Place> {
    places
        .iter()
        .filter(|place| place.span.start <= span.start && span.end <= place.span.end)
        .min_by_key(|place| (place.span.len(), std::cmp::Reverse(place.depth)))
}

/// Path of the `[table]` whose section contains `offset`, else [`TOP_LEVEL`].
fn section(places: &[Place], offset: usize) -> String {
    places
        .iter()
        .filter(|place| place.header && place.span.start <= offset)
        .max_by_key(|place| (place.span.start, place.depth))
        .map_or_else(|| TOP_LEVEL.to_owned(), |place| place.path.clone())
}

/// Whether the value spanning exactly `span` is a datetime.
pub(crate) fn is_datetime(tree: &DeTable<'_>, span: &Range<usize>) -> bool {
    // Every value is visited: the span of a `[header]` table does not cover its keys.
    fn in_value(value: &Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
        match value.get_ref() {
            DeValue::Datetime(_) => value.span() == *span,
            DeValue::Table(table) => in_table(table, span),
            DeValue::Array(array) => array.iter().any(|element| in_value(element, span)),
            _ => false,
        }
    }
    fn in_table(table: &DeTable<'_>, span: &Range<usize>) -> bool {
        table.values().any(|value| in_value(value, span))
    }
    in_table(tree, span)
}

/// Key path and message for toml's "duplicate key" error, whose span is the repeated key.
///
/// The first definition is in the tree but the repeated one is not, so the path is rebuilt
/// from the header the repetition is part of, or from the table it is in (an inline table, else
/// the section) and the dotted keys written before it.
pub(crate) fn duplicate_key(
    tree: &DeTable<'_>,
    text: &str,
    span: &Range<usize>,
) -> (String, String) {
    let name = text.get(span.clone()).unwrap_or_default();
    let before = text.get(..span.start).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = text.get(line_start..).unwrap_or_default().trim_start();
    let mut places = Vec::new();
    walk_table(tree, text, "", 0, &mut places);
    if let Some(header) = header_of(line) {
        let message = duplicate_table(&places, &text[..line_start], header, line.starts_with("[["));
        return (header.to_owned(), message);
    }
    let table = match narrowest(&places, span) {
        Some(place) => place.path.clone(),
        None => section(&places, span.start),
    };
    // The dotted keys before the repeated one, back to the start of its key-value pair.
    let pair_start = before
        .rfind(['\n', '{', ','])
        .map_or(0, |delimiter| delimiter + 1);
    let mut path: Vec<&str> = if table == TOP_LEVEL {
        Vec::new()
    } else {
        vec![table.as_str()]
    };
    path.extend(
        before[pair_start..]
            .split('.')
            .map(str::trim)
            .filter(|part| !part.is_empty()),
    );
    path.push(name);
    (
        path.join("."),
        format!("duplicate key `{name}`; expected each key at most once per table"),
    )
}

/// The name in `line` when it is a `[header]` or `[[header]]` line.
fn header_of(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if !line.starts_with('[') {
        return None;
    }
    line.trim_start_matches('[')
        .split(']')
        .next()
        .map(str::trim)
}

/// Message for a `[header]` (`[[header]]` when `double`) whose table already exists; `before`
/// is the text before that header.
fn duplicate_table(places: &[Place], before: &str, header: &str, double: bool) -> String {
    let written = if double {
        format!("[[{header}]]")
    } else {
        format!("[{header}]")
    };
    // The text, not the tree, tells whether a header came first: the tree, as far as it could
    // be parsed, may give the table the span of the repeated header.
    let had_header = before.lines().any(|line| header_of(line) == Some(header));
    // The last place of a path is its value; the key comes first.
    let array = places
        .iter()
        .rev()
        .find(|place| place.path == header)
        .is_some_and(|place| place.array);
    match (had_header, array) {
        (true, _) if !double && matches!(header, "node" | "rule" | "check") => format!(
            "table {written} is defined twice; expected [[{header}]] for every entry of an array of tables"
        ),
        (true, _) => format!("table {written} is defined twice; expected each table once"),
        // Arrays of tables may repeat their header, so this array is an inline one.
        (false, true) => format!(
            "{written} adds to the array `{header} = [...]` written above; expected the entries of `{header}` either in that array or as [[{header}]] tables, not both"
        ),
        (false, false) => format!(
            "{written} redefines table `{header}`, already defined by dotted keys or an inline table; expected either those keys or the {written} table, not both"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nné = \"é\"\n";
        assert_eq!(position(text.as_bytes(), 0), (1, 1));
        assert_eq!(position(text.as_bytes(), 4), (1, 5));
        assert_eq!(position(text.as_bytes(), 6), (2, 1));
        let quote = text.find('"').unwrap_or_default();
        assert_eq!(position(text.as_bytes(), quote), (2, 6));
        assert_eq!(position(text.as_bytes(), text.len() + 10), (3, 1));
        // Inside a multi-byte character: no panic, the character counts as started.
        assert_eq!(position(text.as_bytes(), 8), (2, 3));
    }

    fn path_at(text: &str, needle: &str) -> String {
        let (tree, _) = DeTable::parse_recoverable(text);
        let start = text.find(needle).unwrap_or_default();
        key_path(tree.get_ref(), text, &(start..start + needle.len()))
    }

    #[test]
    fn key_paths_name_tables_arrays_and_indices() {
        let text = "[farm]\nvip = [\"a\", \"b\"]\n[[node]]\nname = \"x\"\n[[node]]\nname = \"y\"\nport = { a = 17 }\n";
        assert_eq!(path_at(text, "\"b\""), "farm.vip[1]");
        assert_eq!(path_at(text, "vip"), "farm.vip");
        assert_eq!(path_at(text, "[farm]"), "farm");
        assert_eq!(path_at(text, "[[node]]"), "node[0]");
        assert_eq!(path_at(text, "\"y\""), "node[1].name");
        assert_eq!(path_at(text, "a = 17"), "node[1].port");
        assert_eq!(path_at(text, "17"), "node[1].port.a");
    }
}
