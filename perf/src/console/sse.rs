//! Server-sent events, as the console's `GET /api/events` streams them: `event:` and `data:`
//! lines, a blank line ending each event, comments (`:`) for keep-alive.

/// One event: its name (`message` when it gave none) and its data lines, joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field.
    pub name: String,
    /// The `data:` fields, joined with line ends.
    pub data: String,
}

/// The event being read, line by line.
#[derive(Debug, Default)]
pub struct SseReader {
    name: Option<String>,
    data: Option<String>,
}

impl SseReader {
    /// Takes one line (with or without its line end); returns the event that a blank line
    /// ends, if it carried data.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            let name = self.name.take();
            return self.data.take().map(|data| SseEvent {
                name: name.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // `id`, `retry` and unknown fields say nothing the measurement needs.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<SseEvent> {
        let mut reader = SseReader::default();
        text.split_inclusive('\n')
            .filter_map(|line| reader.line(line))
            .collect()
    }

    #[test]
    fn events_end_at_blank_lines_and_comments_are_skipped() {
        let text = ": keep-alive\n\nevent: farm\ndata: {\"a\":1}\n\n:\n\nevent:farm\r\ndata: x\r\ndata:y\r\n\r\ndata: plain\n\nevent: farm\n";
        assert_eq!(
            events(text),
            [
                SseEvent {
                    name: "farm".to_owned(),
                    data: "{\"a\":1}".to_owned()
                },
                SseEvent {
                    name: "farm".to_owned(),
                    data: "x\ny".to_owned()
                },
                SseEvent {
                    name: "message".to_owned(),
                    data: "plain".to_owned()
                },
            ]
        );
    }

    #[test]
    fn an_event_without_data_is_no_event() {
        assert!(events("event: farm\n\nid: 3\n\n").is_empty());
    }
}
