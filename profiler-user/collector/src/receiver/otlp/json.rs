//! OTLP/JSON requests, transcoded to protobuf by the proto schema and then decoded by prost.
//!
//! Why not the serde impls `opentelemetry-proto` derives (`with-serde`): they do not accept
//! what the OTLP/JSON spec allows. Its profiles types require every field to be present,
//! read `int64` fields only as numbers (the spec sends them as strings) and read link ids as
//! arrays of numbers instead of hex; everywhere a `null` field fails instead of meaning the
//! default. Walking the schema (the descriptors the crate ships) instead gives the protobuf
//! JSON mapping for every message with one piece of code, plus OTLP's one exception:
//!
//! - keys in lowerCamelCase (the proto names are accepted too, as the Collector does);
//!   unknown keys are ignored; `null` means the default;
//! - 64-bit integers as strings or numbers; 32-bit ones as numbers or strings;
//! - enums as integers (the spec's form) or their value names;
//! - `bytes` as base64, except `traceId`, `spanId`, `parentSpanId` and `profileId`, which
//!   are hex (case-insensitive), as OTLP specifies;
//! - doubles as numbers or `"NaN"`, `"Infinity"`, `"-Infinity"`.
//!
//! The JSON is read in one streaming pass (no JSON tree in memory) and written straight into
//! protobuf; serde_json's nesting limit bounds the recursion.

use std::{collections::HashMap, fmt, sync::OnceLock};

use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use prost::{
    encoding::{encode_key, encode_varint, WireType},
    Message as _,
};
use prost_types::{field_descriptor_proto::Label, field_descriptor_proto::Type, DescriptorProto, FileDescriptorSet};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::signal::{Data, Signal};

/// Decodes an OTLP/JSON export request of `signal`.
pub fn decode(signal: Signal, json: &[u8]) -> Result<Data, String> {
    let schema = schema()?;
    let name = match signal {
        Signal::Traces => ".opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
        Signal::Metrics => ".opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest",
        Signal::Logs => ".opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
        Signal::Profiles => ".opentelemetry.proto.collector.profiles.v1development.ExportProfilesServiceRequest",
    };
    let message = schema.message(name).ok_or_else(|| format!("{name} is missing from the OTLP schema"))?;
    let mut de = serde_json::Deserializer::from_slice(json);
    let proto = MessageSeed { schema, message }.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Data::decode(signal, &proto).map_err(|e| e.to_string())
}

/// The schema, built once from the descriptors `opentelemetry-proto` ships.
fn schema() -> Result<&'static Schema, String> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA.get_or_init(Schema::build).as_ref().map_err(Clone::clone)
}

struct Schema {
    messages: Vec<Message>,
    by_name: HashMap<String, usize>,
    /// Enum value names → numbers, by enum.
    enums: Vec<HashMap<String, i32>>,
}

struct Message {
    fields: Vec<Field>,
    /// JSON name and proto name → index into `fields`.
    by_key: HashMap<String, usize>,
}

struct Field {
    json_name: String,
    number: u32,
    ty: Type,
    repeated: bool,
    /// An id OTLP/JSON writes in hex instead of base64.
    hex: bool,
    /// The message (for `Type::Message`) or enum (for `Type::Enum`) index.
    target: usize,
}

impl Schema {
    fn build() -> Result<Schema, String> {
        let set = FileDescriptorSet::decode(opentelemetry_proto::DESCRIPTORS).map_err(|e| e.to_string())?;
        // Every message and enum gets an index first, so fields can point at them.
        let mut messages: Vec<(String, &DescriptorProto)> = Vec::new();
        let mut enums: Vec<(String, HashMap<String, i32>)> = Vec::new();
        fn walk<'a>(
            scope: &str,
            m: &'a DescriptorProto,
            messages: &mut Vec<(String, &'a DescriptorProto)>,
            enums: &mut Vec<(String, HashMap<String, i32>)>,
        ) {
            let name = format!("{scope}.{}", m.name());
            for e in &m.enum_type {
                enums.push((
                    format!("{name}.{}", e.name()),
                    e.value.iter().map(|v| (v.name().to_string(), v.number())).collect(),
                ));
            }
            for nested in &m.nested_type {
                walk(&name, nested, messages, enums);
            }
            messages.push((name, m));
        }
        for file in &set.file {
            let scope = format!(".{}", file.package());
            for e in &file.enum_type {
                enums.push((
                    format!("{scope}.{}", e.name()),
                    e.value.iter().map(|v| (v.name().to_string(), v.number())).collect(),
                ));
            }
            for m in &file.message_type {
                walk(&scope, m, &mut messages, &mut enums);
            }
        }
        let by_name: HashMap<String, usize> = messages.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        let enum_index: HashMap<&str, usize> = enums.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
        let mut built = Vec::with_capacity(messages.len());
        for (name, m) in &messages {
            let mut fields = Vec::with_capacity(m.field.len());
            let mut by_key = HashMap::new();
            for f in &m.field {
                let ty = f.r#type();
                let target = match ty {
                    Type::Message => {
                        *by_name.get(f.type_name()).ok_or_else(|| format!("{name}: unknown {}", f.type_name()))?
                    }
                    Type::Enum => {
                        *enum_index.get(f.type_name()).ok_or_else(|| format!("{name}: unknown {}", f.type_name()))?
                    }
                    Type::Group => return Err(format!("{name}.{}: groups are not supported", f.name())),
                    _ => 0,
                };
                let json_name = f.json_name.clone().unwrap_or_else(|| lower_camel(f.name()));
                by_key.insert(json_name.clone(), fields.len());
                by_key.insert(f.name().to_string(), fields.len());
                fields.push(Field {
                    json_name,
                    number: u32::try_from(f.number()).map_err(|_| format!("{name}.{}: bad number", f.name()))?,
                    ty,
                    repeated: f.label() == Label::Repeated,
                    hex: ty == Type::Bytes
                        && matches!(f.name(), "trace_id" | "span_id" | "parent_span_id" | "profile_id"),
                    target,
                });
            }
            built.push(Message { fields, by_key });
        }
        Ok(Schema { messages: built, by_name, enums: enums.into_iter().map(|(_, v)| v).collect() })
    }

    fn message(&self, name: &str) -> Option<&Message> {
        self.by_name.get(name).map(|&i| &self.messages[i])
    }
}

/// `trace_id` → `traceId`, for descriptors without `json_name`.
fn lower_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads a JSON object as a message; the value is the message's protobuf encoding.
struct MessageSeed<'s> {
    schema: &'s Schema,
    message: &'s Message,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = Vec<u8>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::new();
        while let Some(field) = map.next_key_seed(KeySeed(self.message))? {
            match field {
                Some(field) => map.next_value_seed(FieldSeed { schema: self.schema, field, out: &mut out })?,
                // Unknown fields are skipped, as the spec requires.
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// Looks a key up among a message's fields.
struct KeySeed<'s>(&'s Message);

impl<'de, 's> DeserializeSeed<'de> for KeySeed<'s> {
    type Value = Option<&'s Field>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 's> Visitor<'de> for KeySeed<'s> {
    type Value = Option<&'s Field>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.by_key.get(key).map(|&i| &self.0.fields[i]))
    }
}

/// Reads one field's JSON value (a list for repeated fields) and appends its encoding.
struct FieldSeed<'s, 'o> {
    schema: &'s Schema,
    field: &'s Field,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.field.repeated {
            d.deserialize_any(self)
        } else {
            ValueSeed { schema: self.schema, field: self.field, out: self.out, in_list: false }.deserialize(d)
        }
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list for `{}`", self.field.json_name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (schema, field) = (self.schema, self.field);
        while seq.next_element_seed(ValueSeed { schema, field, out: &mut *self.out, in_list: true })?.is_some() {}
        Ok(())
    }
}

/// Reads one value of a field and appends it (key and value) to `out`.
struct ValueSeed<'s, 'o> {
    schema: &'s Schema,
    field: &'s Field,
    out: &'o mut Vec<u8>,
    in_list: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

enum Number {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
}

impl ValueSeed<'_, '_> {
    fn fail<E: de::Error>(&self, what: impl fmt::Display) -> E {
        E::custom(format_args!("`{}`: {what}", self.field.json_name))
    }

    fn key(&mut self, wire: WireType) {
        encode_key(self.field.number, wire, self.out);
    }

    fn varint(&mut self, v: u64) {
        self.key(WireType::Varint);
        encode_varint(v, self.out);
    }

    fn fixed32(&mut self, bytes: [u8; 4]) {
        self.key(WireType::ThirtyTwoBit);
        self.out.extend_from_slice(&bytes);
    }

    fn fixed64(&mut self, bytes: [u8; 8]) {
        self.key(WireType::SixtyFourBit);
        self.out.extend_from_slice(&bytes);
    }

    fn delimited(&mut self, bytes: &[u8]) {
        self.key(WireType::LengthDelimited);
        encode_varint(bytes.len() as u64, self.out);
        self.out.extend_from_slice(bytes);
    }

    fn number<E: de::Error>(mut self, n: Number) -> Result<(), E> {
        let signed = |n: &Number| -> Option<i64> {
            match *n {
                Number::Signed(v) => Some(v),
                Number::Unsigned(v) => i64::try_from(v).ok(),
                Number::Float(f) if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) => Some(f as i64),
                Number::Float(_) => None,
            }
        };
        let unsigned = |n: &Number| -> Option<u64> {
            match *n {
                Number::Signed(v) => u64::try_from(v).ok(),
                Number::Unsigned(v) => Some(v),
                Number::Float(f) if f.fract() == 0.0 && f >= 0.0 && f < 2f64.powi(64) => Some(f as u64),
                Number::Float(_) => None,
            }
        };
        let float = |n: &Number| match *n {
            Number::Signed(v) => v as f64,
            Number::Unsigned(v) => v as f64,
            Number::Float(f) => f,
        };
        let range = || self.fail::<E>("out of range for its type (or not an integer)");
        match self.field.ty {
            Type::Double => self.fixed64(float(&n).to_le_bytes()),
            Type::Float => self.fixed32((float(&n) as f32).to_le_bytes()),
            Type::Int64 => self.varint(signed(&n).ok_or_else(range)? as u64),
            Type::Sint64 => {
                let v = signed(&n).ok_or_else(range)?;
                self.varint(((v << 1) ^ (v >> 63)) as u64)
            }
            Type::Sfixed64 => self.fixed64(signed(&n).ok_or_else(range)?.to_le_bytes()),
            Type::Uint64 => self.varint(unsigned(&n).ok_or_else(range)?),
            Type::Fixed64 => self.fixed64(unsigned(&n).ok_or_else(range)?.to_le_bytes()),
            Type::Int32 | Type::Enum => {
                let v = signed(&n).and_then(|v| i32::try_from(v).ok()).ok_or_else(range)?;
                self.varint(i64::from(v) as u64)
            }
            Type::Sint32 => {
                let v = signed(&n).and_then(|v| i32::try_from(v).ok()).ok_or_else(range)?;
                self.varint(u64::from(((v << 1) ^ (v >> 31)) as u32))
            }
            Type::Sfixed32 => {
                let v = signed(&n).and_then(|v| i32::try_from(v).ok()).ok_or_else(range)?;
                self.fixed32(v.to_le_bytes())
            }
            Type::Uint32 => {
                let v = unsigned(&n).and_then(|v| u32::try_from(v).ok()).ok_or_else(range)?;
                self.varint(u64::from(v))
            }
            Type::Fixed32 => {
                let v = unsigned(&n).and_then(|v| u32::try_from(v).ok()).ok_or_else(range)?;
                self.fixed32(v.to_le_bytes())
            }
            _ => return Err(self.fail("a number where another type belongs")),
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value for `{}`", self.field.json_name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.in_list {
            return Err(self.fail("null in a list"));
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        if self.field.ty != Type::Bool {
            return Err(self.fail("a boolean where another type belongs"));
        }
        self.varint(u64::from(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(Number::Signed(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(Number::Unsigned(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(Number::Float(v))
    }

    fn visit_str<E: de::Error>(mut self, s: &str) -> Result<(), E> {
        match self.field.ty {
            Type::String => self.delimited(s.as_bytes()),
            Type::Bytes => {
                let bytes = if self.field.hex { decode_hex(s) } else { decode_base64(s) };
                let bytes = bytes.ok_or_else(|| {
                    self.fail(if self.field.hex { "not a hex string" } else { "not a base64 string" })
                })?;
                self.delimited(&bytes)
            }
            Type::Enum => {
                let number = match self.schema.enums[self.field.target].get(s) {
                    Some(&n) => n,
                    None => {
                        s.parse::<i32>().map_err(|_| self.fail(format_args!("`{s}` is not a value of the enum")))?
                    }
                };
                return self.number(Number::Signed(i64::from(number)));
            }
            Type::Double | Type::Float => {
                let v = match s {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    _ => s.trim().parse::<f64>().map_err(|_| self.fail(format_args!("`{s}` is not a number")))?,
                };
                return self.number(Number::Float(v));
            }
            Type::Bool | Type::Message => return Err(self.fail("a string where another type belongs")),
            _ => {
                let n = if let Ok(v) = s.parse::<i64>() {
                    Number::Signed(v)
                } else if let Ok(v) = s.parse::<u64>() {
                    Number::Unsigned(v)
                } else if let Ok(v) = s.parse::<f64>() {
                    Number::Float(v)
                } else {
                    return Err(self.fail(format_args!("`{s}` is not an integer")));
                };
                return self.number(n);
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, map: A) -> Result<(), A::Error> {
        if self.field.ty != Type::Message {
            return Err(self.fail("an object where another type belongs"));
        }
        let message = &self.schema.messages[self.field.target];
        let encoded = MessageSeed { schema: self.schema, message }.visit_map(map)?;
        self.delimited(&encoded);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        Err(self.fail(if self.in_list { "a list inside a list" } else { "a list for a field that is not repeated" }))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// Standard or URL-safe alphabet, padded or not (the protobuf JSON mapping accepts all four).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if s.contains(['-', '_']) { &alphabet::URL_SAFE } else { &alphabet::STANDARD };
    GeneralPurpose::new(alphabet, config).decode(s).ok()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::{
            logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
            profiles::v1development::ExportProfilesServiceRequest, trace::v1::ExportTraceServiceRequest,
        },
        common::v1::{any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
        metrics::v1::{
            exponential_histogram_data_point::Buckets, metric, number_data_point, summary_data_point::ValueAtQuantile,
            Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
            Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        },
        profiles::v1development as pp,
        resource::v1::Resource,
        trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status},
    };

    use super::*;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    /// JSON written the way the spec's examples are: camelCase, hex ids in upper case,
    /// 64-bit integers as strings, enums as integers.
    #[test]
    fn reads_spans_as_the_spec_writes_them() {
        let json = br#"{
          "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
            "scopeSpans": [{
              "scope": {"name": "lib", "version": "1.0.0"},
              "spans": [{
                "traceId": "5B8EFFF798038103D269B633813FC60C",
                "spanId": "EEE19B7EC3C1B174",
                "parentSpanId": "eee19b7ec3c1b173",
                "name": "GET /cart",
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": 1544712661000000000,
                "kind": 2,
                "flags": 257,
                "attributes": [
                  {"key": "int", "value": {"intValue": "-42"}},
                  {"key": "bytes", "value": {"bytesValue": "AQID"}},
                  {"key": "list", "value": {"arrayValue": {"values": [{"doubleValue": 1.5}, {"boolValue": true}]}}},
                  {"key": "map", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}}
                ],
                "events": [{"timeUnixNano": "5", "name": "e"}],
                "status": {"code": 2, "message": "boom"},
                "someFutureField": {"nested": [1, 2, {"x": null}]}
              }]
            }]
          }]
        }"#;
        let want = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue("checkout".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.0.0".into(),
                        ..Default::default()
                    }),
                    spans: vec![Span {
                        trace_id: vec![
                            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6,
                            0x0c,
                        ],
                        span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                        parent_span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x73],
                        name: "GET /cart".into(),
                        start_time_unix_nano: 1_544_712_660_000_000_000,
                        end_time_unix_nano: 1_544_712_661_000_000_000,
                        kind: span::SpanKind::Server as i32,
                        flags: 257,
                        attributes: vec![
                            kv("int", Value::IntValue(-42)),
                            kv("bytes", Value::BytesValue(vec![1, 2, 3])),
                            kv(
                                "list",
                                Value::ArrayValue(ArrayValue {
                                    values: vec![
                                        AnyValue { value: Some(Value::DoubleValue(1.5)) },
                                        AnyValue { value: Some(Value::BoolValue(true)) },
                                    ],
                                }),
                            ),
                            kv(
                                "map",
                                Value::KvlistValue(KeyValueList {
                                    values: vec![kv("k", Value::StringValue("v".into()))],
                                }),
                            ),
                        ],
                        events: vec![span::Event { time_unix_nano: 5, name: "e".into(), ..Default::default() }],
                        status: Some(Status { code: 2, message: "boom".into() }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(decode(Signal::Traces, json).unwrap(), Data::Traces(want));
    }

    #[test]
    fn nulls_names_and_strings_for_numbers_are_accepted() {
        let json = br#"{"resource_spans": [{"resource": null, "scopeSpans": [{"spans": [
            {"name": null, "traceId": null, "attributes": null, "kind": "SPAN_KIND_CLIENT", "droppedAttributesCount": "3",
             "status": {"code": "STATUS_CODE_OK"}}]}]}]}"#;
        let Data::Traces(got) = decode(Signal::Traces, json).unwrap() else { panic!() };
        let span = &got.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(span.dropped_attributes_count, 3);
        assert_eq!(span.status.as_ref().unwrap().code, 1);
        assert!(got.resource_spans[0].resource.is_none());
        assert_eq!(decode(Signal::Logs, b"{}").unwrap(), Data::Logs(Default::default()));
    }

    #[test]
    fn malformed_json_is_refused_with_the_field_named() {
        for (json, says) in [
            (&br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}"#[..], "traceId"),
            (
                br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}"#,
                "startTimeUnixNano",
            ),
            (br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_NOPE"}]}]}]}"#, "kind"),
            (
                br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"droppedAttributesCount": -1}]}]}]}"#,
                "droppedAttributesCount",
            ),
            (br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}"#, "name"),
            (br#"{"resourceSpans": {"scopeSpans": []}}"#, "resourceSpans"),
            (br#"{"resourceSpans": [null]}"#, "resourceSpans"),
            (br#"{"resourceSpans": []"#, "EOF"),
            (br#"{"resourceSpans": []} trailing"#, "trailing"),
            (br#"[]"#, "object"),
            (b"{\"resourceSpans\": [{\"scopeSpans\": [{\"spans\": [{\"name\": \"\xff\"}]}]}]}", "unicode"),
        ] {
            let e = decode(Signal::Traces, json).unwrap_err();
            assert!(e.contains(says), "{} -> {e}", String::from_utf8_lossy(json));
        }
    }

    /// A rich request of each signal, written by `opentelemetry-proto`'s own serde impls (an
    /// independent writer of OTLP/JSON), reads back equal.
    #[test]
    fn reads_what_the_opentelemetry_proto_serializer_writes() {
        let point = |v| NumberDataPoint {
            attributes: vec![kv("a", Value::StringValue("b".into()))],
            start_time_unix_nano: 1,
            time_unix_nano: u64::MAX,
            value: Some(v),
            exemplars: vec![Exemplar {
                time_unix_nano: 3,
                value: Some(opentelemetry_proto::tonic::metrics::v1::exemplar::Value::AsInt(i64::MIN)),
                span_id: vec![1; 8],
                trace_id: vec![2; 16],
                ..Default::default()
            }],
            flags: 1,
        };
        let metrics = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "g".into(),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: vec![point(number_data_point::Value::AsInt(-7))],
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "s".into(),
                            unit: "By".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: vec![point(number_data_point::Value::AsDouble(0.25))],
                                aggregation_temporality: 2,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "h".into(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint {
                                    count: 3,
                                    sum: Some(4.5),
                                    bucket_counts: vec![1, 2, u64::MAX],
                                    explicit_bounds: vec![1.0, 2.0],
                                    min: Some(-1.0),
                                    max: Some(9.0),
                                    ..Default::default()
                                }],
                                aggregation_temporality: 1,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "e".into(),
                            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    count: 4,
                                    scale: -3,
                                    zero_count: 1,
                                    positive: Some(Buckets { offset: -2, bucket_counts: vec![1, 2] }),
                                    zero_threshold: 1e-9,
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "q".into(),
                            data: Some(metric::Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    count: 2,
                                    sum: 3.0,
                                    quantile_values: vec![ValueAtQuantile { quantile: 0.5, value: 1.0 }],
                                    ..Default::default()
                                }],
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 1,
                        observed_time_unix_nano: 2,
                        severity_number: SeverityNumber::Warn as i32,
                        severity_text: "WARN".into(),
                        body: Some(AnyValue { value: Some(Value::StringValue("disk full".into())) }),
                        attributes: vec![kv("n", Value::IntValue(i64::MAX))],
                        flags: 1,
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        event_name: "ev".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let json = serde_json::to_vec(&metrics).unwrap();
        assert_eq!(
            decode(Signal::Metrics, &json).unwrap(),
            Data::Metrics(metrics),
            "{}",
            String::from_utf8_lossy(&json)
        );
        let json = serde_json::to_vec(&logs).unwrap();
        assert_eq!(decode(Signal::Logs, &json).unwrap(), Data::Logs(logs), "{}", String::from_utf8_lossy(&json));
    }

    /// Profiles, whose upstream serde impls cannot read spec JSON at all (missing fields,
    /// int64 as strings, hex link ids).
    #[test]
    fn reads_profiles_with_int64_strings_and_hex_ids() {
        let json = br#"{
          "resourceProfiles": [{"scopeProfiles": [{"profiles": [{
            "sampleType": {"typeStrindex": 1, "unitStrindex": 2},
            "samples": [{"stackIndex": 0, "values": ["5", 6], "timestampsUnixNano": ["7"], "linkIndex": 0}],
            "timeUnixNano": "10", "durationNano": "20", "period": "3",
            "profileId": "0102030405060708090A0B0C0D0E0F10",
            "originalPayloadFormat": "pprof", "originalPayload": "AQI="
          }]}]}],
          "dictionary": {
            "stringTable": ["", "cpu", "nanoseconds", "main"],
            "mappingTable": [{"memoryStart": "4096", "memoryLimit": 8192, "fileOffset": "0"}],
            "locationTable": [{"address": "4100", "lines": [{"functionIndex": 1, "line": "12", "column": 3}]}],
            "functionTable": [{}, {"nameStrindex": 3, "startLine": "4"}],
            "linkTable": [{"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174"}],
            "stackTable": [{"locationIndices": [0]}]
          }
        }"#;
        let Data::Profiles(got) = decode(Signal::Profiles, json).unwrap() else { panic!() };
        let p = &got.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(p.samples[0].values, [5, 6]);
        assert_eq!(p.samples[0].timestamps_unix_nano, [7]);
        assert_eq!((p.time_unix_nano, p.duration_nano, p.period), (10, 20, 3));
        assert_eq!(p.profile_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(p.original_payload, [1, 2]);
        assert_eq!(p.sample_type, Some(pp::ValueType { type_strindex: 1, unit_strindex: 2 }));
        let d = got.dictionary.as_ref().unwrap();
        assert_eq!(d.mapping_table[0].memory_start, 4096);
        assert_eq!(d.location_table[0].address, 4100);
        assert_eq!(d.location_table[0].lines[0], pp::Line { function_index: 1, line: 12, column: 3 });
        assert_eq!(d.function_table[1].start_line, 4);
        assert_eq!(d.link_table[0].span_id, [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]);
        assert_eq!(d.stack_table[0].location_indices, [0]);
        let _: &ExportProfilesServiceRequest = &got;
    }
}
