//! The shared `ProfilesDictionary` of one request, built with deduplicating tables.
//!
//! Every table starts with its zero value (`string_table[0] == ""`, `Mapping{}`, …) so that index
//! 0 means "not set", and equal entries get one index.

use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue},
    profiles::v1development as pb,
};

use otelprof_sampler::aggregate::Interner;

/// An attribute value as a hashable key (AnyValue is not `Hash`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl Value {
    pub fn any(&self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                Value::Str(s) => any_value::Value::StringValue(s.clone()),
                Value::Int(i) => any_value::Value::IntValue(*i),
            }),
        }
    }
}

/// Hashable twins of the dictionary's message types.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct MappingKey {
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
    pub filename: i32,
    pub attributes: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct LocationKey {
    pub mapping: i32,
    pub address: u64,
    /// (function index, line)
    pub lines: Vec<(i32, i64)>,
    pub attributes: Vec<i32>,
}

/// The dictionary under construction.
pub struct Dictionary {
    strings: Interner<String>,
    attributes: Interner<(i32, Value)>,
    mappings: Interner<MappingKey>,
    locations: Interner<LocationKey>,
    functions: Interner<(i32, i32)>,
    stacks: Interner<Vec<i32>>,
    /// (trace_id, span_id); index 0 is the zero link.
    links: Interner<([u8; 16], [u8; 8])>,
}

impl Default for Dictionary {
    fn default() -> Self {
        let mut d = Self {
            strings: Interner::default(),
            attributes: Interner::default(),
            mappings: Interner::default(),
            locations: Interner::default(),
            functions: Interner::default(),
            stacks: Interner::default(),
            links: Interner::default(),
        };
        d.strings.intern(String::new());
        d.attributes.intern((0, Value::Str(String::new())));
        d.mappings.intern(MappingKey::default());
        d.locations.intern(LocationKey::default());
        d.functions.intern((0, 0));
        d.stacks.intern(Vec::new());
        d.links.intern(([0; 16], [0; 8]));
        d
    }
}

fn idx(i: u32) -> i32 {
    i32::try_from(i).expect("dictionary tables stay below 2^31 entries")
}

impl Dictionary {
    pub fn string(&mut self, s: &str) -> i32 {
        idx(self.strings.intern(s.to_string()))
    }

    pub fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let k = self.string(key);
        idx(self.attributes.intern((k, value)))
    }

    pub fn mapping(&mut self, m: MappingKey) -> i32 {
        idx(self.mappings.intern(m))
    }

    pub fn function(&mut self, name: &str, file: &str) -> i32 {
        let (n, f) = (self.string(name), self.string(file));
        idx(self.functions.intern((n, f)))
    }

    pub fn location(&mut self, l: LocationKey) -> i32 {
        idx(self.locations.intern(l))
    }

    /// The link to a span (OTEP 4947 trace links).
    pub fn link(&mut self, trace_id: [u8; 16], span_id: [u8; 8]) -> i32 {
        idx(self.links.intern((trace_id, span_id)))
    }

    pub fn stack(&mut self, locations: Vec<i32>) -> i32 {
        idx(self.stacks.intern(locations))
    }

    /// The finished tables.
    pub fn build(self) -> pb::ProfilesDictionary {
        pb::ProfilesDictionary {
            mapping_table: self
                .mappings
                .iter()
                .map(|(_, m)| pb::Mapping {
                    memory_start: m.memory_start,
                    memory_limit: m.memory_limit,
                    file_offset: m.file_offset,
                    filename_strindex: m.filename,
                    attribute_indices: m.attributes.clone(),
                })
                .collect(),
            location_table: self
                .locations
                .iter()
                .map(|(_, l)| pb::Location {
                    mapping_index: l.mapping,
                    address: l.address,
                    lines: l
                        .lines
                        .iter()
                        .map(|&(function_index, line)| pb::Line { function_index, line, column: 0 })
                        .collect(),
                    attribute_indices: l.attributes.clone(),
                })
                .collect(),
            function_table: self
                .functions
                .iter()
                .map(|(_, &(name, file))| pb::Function {
                    name_strindex: name,
                    system_name_strindex: name,
                    filename_strindex: file,
                    start_line: 0,
                })
                .collect(),
            link_table: self
                .links
                .iter()
                .map(
                    |(i, (t, sp))| {
                        if i == 0 {
                            pb::Link::default()
                        } else {
                            pb::Link { trace_id: t.to_vec(), span_id: sp.to_vec() }
                        }
                    },
                )
                .collect(),
            string_table: self.strings.iter().map(|(_, s)| s.clone()).collect(),
            attribute_table: self
                .attributes
                .iter()
                .map(|(i, (k, v))| {
                    if i == 0 {
                        pb::KeyValueAndUnit::default()
                    } else {
                        pb::KeyValueAndUnit { key_strindex: *k, value: Some(v.any()), unit_strindex: 0 }
                    }
                })
                .collect(),
            stack_table: self.stacks.iter().map(|(_, s)| pb::Stack { location_indices: s.clone() }).collect(),
        }
    }
}
