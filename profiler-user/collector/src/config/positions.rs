//! Where each key of a config file is: its line and column, found by key path
//! (`receivers.otlp.protocols.grpc.endpoint`, `service.pipelines.traces.receivers[0]`).
//!
//! Why: the config is checked on a `serde_yaml::Value`, which has no positions, and an error
//! that says only the key path makes the user search a long file. So the text is read a
//! second time as YAML events (libyaml's, the parser serde_yaml itself uses: both see the same
//! document), and every node's path is indexed with where it starts. An error's path is then
//! looked up, falling back to its nearest ancestor that is in the file (a missing key is
//! reported where its mapping is).

use std::{collections::HashMap, fmt, mem::MaybeUninit};

/// A place in the config text, both 1-based as editors count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The positions of every node of a YAML text, by key path.
#[derive(Debug, Default)]
pub struct Positions {
    by_path: HashMap<String, Position>,
    /// The path being read when the parser failed (a syntax error), if it did.
    stopped_in: Option<String>,
    /// The first key that appears twice in one mapping, with the position of its second use.
    duplicate: Option<(String, Position)>,
}

impl Positions {
    /// Indexes `text`. A syntax error ends the index where it is (see [`Self::stopped_in`]).
    pub fn index(text: &str) -> Self {
        let mut walk = Walk::default();
        let mut parser = Parser::new(text);
        while let Some(event) = parser.next() {
            if walk.event(event) {
                break;
            }
        }
        if parser.failed {
            walk.positions.stopped_in = Some(walk.current_path());
        }
        walk.positions
    }

    /// Where `path` is, or its nearest ancestor that is in the text.
    pub fn locate(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }

    /// The key path the parser was in when it met a syntax error (empty at the top).
    pub fn stopped_in(&self) -> Option<&str> {
        self.stopped_in.as_deref()
    }

    /// A key written twice in one mapping: its path and where the second one is.
    pub fn duplicate(&self) -> Option<&(String, Position)> {
        self.duplicate.as_ref()
    }
}

/// `a.b[2]` → `a.b` → `a` → ``.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// A path one level down: `a` + `b` → `a.b`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// What the walk is inside of.
enum Frame {
    /// A mapping at `path`; `key` is the key whose value comes next, if it was read.
    Mapping {
        path: String,
        key: Option<Key>,
    },
    Sequence {
        path: String,
        next: usize,
    },
    /// A collection used as a mapping key (`? [a, b]: c`): nothing in it is indexed.
    Skip,
}

/// A mapping key read, waiting for its value.
struct Key {
    text: String,
    at: Position,
    /// False for a key that is not text (an alias, a collection): its value is not indexed.
    indexed: bool,
}

/// Turns the event stream into paths and positions.
#[derive(Default)]
struct Walk {
    stack: Vec<Frame>,
    positions: Positions,
    /// The root node was read (a second document is not indexed).
    done: bool,
}

/// The parts of an event the walk needs, copied out of libyaml's.
enum Event {
    Scalar { text: String, at: Position },
    Alias { at: Position },
    Start { mapping: bool, at: Position },
    End,
    Other,
}

impl Walk {
    fn current_path(&self) -> String {
        match self.stack.last() {
            Some(Frame::Mapping { path, key: Some(k) }) if k.indexed => join(path, &k.text),
            Some(Frame::Mapping { path, .. }) | Some(Frame::Sequence { path, .. }) => path.clone(),
            Some(Frame::Skip) | None => self
                .stack
                .iter()
                .rev()
                .find_map(|f| match f {
                    Frame::Mapping { path, .. } | Frame::Sequence { path, .. } => Some(path.clone()),
                    Frame::Skip => None,
                })
                .unwrap_or_default(),
        }
    }

    fn record(&mut self, path: &str, at: Position) {
        if self.positions.by_path.insert(path.to_string(), at).is_some() && self.positions.duplicate.is_none() {
            self.positions.duplicate = Some((path.to_string(), at));
        }
    }

    /// Handles one event; true when the first document is complete.
    fn event(&mut self, event: Event) -> bool {
        let (start, at, empty) = match event {
            Event::Other => return false,
            Event::End => {
                self.stack.pop();
                if self.stack.is_empty() {
                    self.done = true;
                }
                return self.done;
            }
            Event::Scalar { text, at } => {
                // A scalar may be a key: it waits for its value.
                if let Some(Frame::Mapping { key: key @ None, .. }) = self.stack.last_mut() {
                    *key = Some(Key { text, at, indexed: true });
                    return false;
                }
                let empty = text.is_empty();
                (None, at, empty)
            }
            Event::Alias { at } => {
                if let Some(Frame::Mapping { key: key @ None, .. }) = self.stack.last_mut() {
                    *key = Some(Key { text: String::new(), at, indexed: false });
                    return false;
                }
                (None, at, false)
            }
            Event::Start { mapping, at } => (Some(mapping), at, false),
        };
        // A value (or the root): find its path, record where it is, descend into collections.
        let path = match self.stack.last_mut() {
            None if self.done => return true,
            None => String::new(),
            Some(Frame::Skip) => {
                if start.is_some() {
                    self.stack.push(Frame::Skip);
                }
                return false;
            }
            Some(Frame::Mapping { key: key @ None, .. }) => {
                // A collection as a key: skipped, and so is its value.
                *key = Some(Key { text: String::new(), at, indexed: false });
                self.stack.push(Frame::Skip);
                return false;
            }
            Some(Frame::Mapping { path, key }) => {
                let Some(k) = key.take() else { return false };
                if !k.indexed {
                    if start.is_some() {
                        self.stack.push(Frame::Skip);
                    }
                    return false;
                }
                let p = join(path, &k.text);
                // A value on its key's line (a scalar, `{…}`, `[…]`) is pointed at itself; a
                // block below its key, or nothing (`batch:`), at the key.
                let pos = if at.line == k.at.line && !empty { at } else { k.at };
                self.record(&p, pos);
                p
            }
            Some(Frame::Sequence { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.record(&p, at);
                p
            }
        };
        if path.is_empty() {
            self.record("", at);
        }
        match start {
            Some(true) => self.stack.push(Frame::Mapping { path, key: None }),
            Some(false) => self.stack.push(Frame::Sequence { path, next: 0 }),
            None if self.stack.is_empty() => self.done = true,
            None => {}
        }
        false
    }
}

/// libyaml's event parser over a text, owned and freed here: the only unsafe code of the
/// config. Events are copied into [`Event`] before libyaml's is deleted.
struct Parser<'t> {
    parser: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    /// The parser reads from this text; it must outlive the parser.
    _text: &'t str,
    failed: bool,
    ended: bool,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Self {
        let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        // SAFETY: `yaml_parser_initialize` zeroes and fills the struct it is given (it cannot
        // fail: allocation failures abort); the input is borrowed for 't, which this struct
        // holds, so the text outlives the parser.
        unsafe {
            let p = parser.as_mut_ptr();
            let _ = unsafe_libyaml::yaml_parser_initialize(p);
            unsafe_libyaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
        }
        Self { parser, _text: text, failed: false, ended: false }
    }

    /// The next event, or `None` at the end of the stream or after an error (`failed`).
    fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        let mut raw = MaybeUninit::<unsafe_libyaml::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new` and not deleted; `yaml_parser_parse`
        // fills the event on success, which is read only then and deleted right after. A
        // scalar's value points at `length` bytes owned by the event.
        unsafe {
            if unsafe_libyaml::yaml_parser_parse(self.parser.as_mut_ptr(), raw.as_mut_ptr()).fail {
                self.failed = true;
                self.ended = true;
                return None;
            }
            let e = raw.as_mut_ptr();
            let at = Position { line: (*e).start_mark.line as usize + 1, column: (*e).start_mark.column as usize + 1 };
            let event = match (*e).type_ {
                unsafe_libyaml::YAML_SCALAR_EVENT => {
                    let s = (*e).data.scalar;
                    let bytes = if s.value.is_null() {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(s.value, s.length as usize)
                    };
                    Event::Scalar { text: String::from_utf8_lossy(bytes).into_owned(), at }
                }
                unsafe_libyaml::YAML_ALIAS_EVENT => Event::Alias { at },
                unsafe_libyaml::YAML_MAPPING_START_EVENT => Event::Start { mapping: true, at },
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT => Event::Start { mapping: false, at },
                unsafe_libyaml::YAML_MAPPING_END_EVENT | unsafe_libyaml::YAML_SEQUENCE_END_EVENT => Event::End,
                unsafe_libyaml::YAML_STREAM_END_EVENT => {
                    self.ended = true;
                    Event::Other
                }
                _ => Event::Other,
            };
            unsafe_libyaml::yaml_event_delete(e);
            Some(event)
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, deleted once, here.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn block_and_flow_keys_and_sequence_items_are_found() {
        let text = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 1
exporters: { debug: {verbosity: basic}, otlp: null }
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters:
        - debug
        - otlp
";
        let p = Positions::index(text);
        assert_eq!(p.locate("receivers.otlp.protocols.grpc.endpoint"), at(5, 19), "a scalar: its value");
        assert_eq!(p.locate("receivers.otlp.protocols"), at(3, 5), "a block mapping: its key");
        assert_eq!(p.locate("exporters.debug.verbosity"), at(6, 33));
        assert_eq!(p.locate("service.pipelines.traces.receivers[0]"), at(10, 19));
        assert_eq!(p.locate("service.pipelines.traces.exporters[1]"), at(13, 11));
        assert_eq!(p.locate("receivers.otlp.protocols.http.endpoint"), at(3, 5), "nearest ancestor");
        assert_eq!(p.locate("nothing.here"), at(1, 1), "the document");
        assert_eq!(p.stopped_in(), None);
        assert_eq!(p.duplicate(), None);
    }

    #[test]
    fn a_syntax_error_leaves_the_path_it_was_in() {
        let p = Positions::index("receivers:\n  otlp:\n\tprotocols: {}\n");
        assert_eq!(p.stopped_in(), Some("receivers.otlp"));
        let p = Positions::index("a: 1\nb: 2\na: 3\n");
        assert_eq!(p.duplicate(), Some(&("a".to_string(), Position { line: 3, column: 4 })));
    }

    #[test]
    fn keys_that_are_collections_or_aliases_are_skipped() {
        let p = Positions::index("x: &v 1\n? [a, b]\n: {c: 1}\n*v : {d: 2}\n? [e]\n: 1\nz: 3\n");
        assert_eq!(p.locate("z"), at(7, 4));
        assert_eq!(p.locate("x"), at(1, 4));
        assert_eq!(p.locate("c"), at(1, 1), "inside a skipped value: not indexed");
        assert_eq!(p.locate("d"), at(1, 1));
        assert_eq!(p.duplicate(), None);
    }
}
