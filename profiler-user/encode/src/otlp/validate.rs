//! Invariants of an export request that consumers rely on (OTLP profiles 1.10).

use std::collections::HashSet;

use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest, profiles::v1development as pb,
};
use prost::Message;

/// Collected violations.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    /// Records `what = i` when it is not an index into a table of `len` entries.
    fn index(&mut self, what: impl FnOnce() -> String, i: i32, len: usize) {
        if i < 0 || i as usize >= len {
            self.0.push(format!("{} = {i} is out of range (table has {len})", what()));
        }
    }

    /// Records a table whose first entry is missing or not the zero value.
    fn zero_first<T: Message + Default>(&mut self, name: &str, table: &[T]) {
        match table.first() {
            None => self.0.push(format!("{name} is empty: index 0 must hold the zero value")),
            Some(first) if first.encode_to_vec() != T::default().encode_to_vec() => {
                self.0.push(format!("{name}[0] is not the zero value"))
            }
            _ => {}
        }
    }

    /// The dictionary rules every message table follows: zero value first, no duplicates.
    fn table<T: Message + Default>(&mut self, name: &str, table: &[T]) {
        self.zero_first(name, table);
        self.no_dupes(name, table);
    }

    /// Records entries equal to an earlier one.
    fn no_dupes<T: Message>(&mut self, name: &str, table: &[T]) {
        let mut seen = HashSet::new();
        for (i, it) in table.iter().enumerate() {
            if !seen.insert(it.encode_to_vec()) {
                self.0.push(format!("{name}[{i}] duplicates an earlier entry"));
            }
        }
    }
}

/// Every violation found, as readable sentences; empty means valid.
pub fn validate(req: &ExportProfilesServiceRequest) -> Vec<String> {
    let Some(d) = &req.dictionary else {
        return vec!["no dictionary".into()];
    };
    let mut e = Errors::default();
    e.table("mapping_table", &d.mapping_table);
    e.table("location_table", &d.location_table);
    e.table("function_table", &d.function_table);
    e.table("link_table", &d.link_table);
    e.table("attribute_table", &d.attribute_table);
    e.table("stack_table", &d.stack_table);
    if d.string_table.first().map(String::as_str) != Some("") {
        e.0.push("string_table[0] must be \"\"".into());
    }
    if d.string_table.iter().collect::<HashSet<_>>().len() != d.string_table.len() {
        e.0.push("string_table has duplicates".into());
    }

    for (i, l) in d.link_table.iter().enumerate().skip(1) {
        if l.trace_id.len() != 16 || l.span_id.len() != 8 || l.trace_id.iter().all(|&b| b == 0) {
            e.0.push(format!("link_table[{i}] needs a 16-byte non-zero trace_id and an 8-byte span_id"));
        }
    }

    let (s, a) = (d.string_table.len(), d.attribute_table.len());
    for (i, m) in d.mapping_table.iter().enumerate() {
        e.index(|| format!("mapping_table[{i}].filename_strindex"), m.filename_strindex, s);
        for &x in &m.attribute_indices {
            e.index(|| format!("mapping_table[{i}].attribute_indices"), x, a);
        }
    }
    for (i, l) in d.location_table.iter().enumerate() {
        e.index(|| format!("location_table[{i}].mapping_index"), l.mapping_index, d.mapping_table.len());
        for ln in &l.lines {
            e.index(|| format!("location_table[{i}].lines.function_index"), ln.function_index, d.function_table.len());
        }
        for &x in &l.attribute_indices {
            e.index(|| format!("location_table[{i}].attribute_indices"), x, a);
        }
    }
    for (i, f) in d.function_table.iter().enumerate() {
        e.index(|| format!("function_table[{i}].name_strindex"), f.name_strindex, s);
        e.index(|| format!("function_table[{i}].system_name_strindex"), f.system_name_strindex, s);
        e.index(|| format!("function_table[{i}].filename_strindex"), f.filename_strindex, s);
    }
    for (i, at) in d.attribute_table.iter().enumerate() {
        e.index(|| format!("attribute_table[{i}].key_strindex"), at.key_strindex, s);
    }
    for (i, st) in d.stack_table.iter().enumerate() {
        for &x in &st.location_indices {
            e.index(|| format!("stack_table[{i}].location_indices"), x, d.location_table.len());
        }
    }
    for (r, rp) in req.resource_profiles.iter().enumerate() {
        for p in rp.scope_profiles.iter().flat_map(|sp| &sp.profiles) {
            profile(&mut e, r, p, d);
        }
    }
    e.0
}

fn profile(e: &mut Errors, r: usize, p: &pb::Profile, d: &pb::ProfilesDictionary) {
    if p.profile_id.len() != 16 || p.profile_id.iter().all(|&b| b == 0) {
        e.0.push(format!("resource {r}: profile_id must be 16 bytes, not all zero"));
    }
    if p.sample_type.is_none() || p.period_type.is_none() {
        e.0.push(format!("resource {r}: sample_type and period_type must be set"));
    }
    for &x in &p.attribute_indices {
        e.index(|| format!("resource {r} profile attribute_indices"), x, d.attribute_table.len());
    }
    let end = p.time_unix_nano.saturating_add(p.duration_nano);
    for (i, s) in p.samples.iter().enumerate() {
        e.index(|| format!("resource {r} sample {i} stack_index"), s.stack_index, d.stack_table.len());
        e.index(|| format!("resource {r} sample {i} link_index"), s.link_index, d.link_table.len());
        let mut keys = HashSet::new();
        for &x in &s.attribute_indices {
            e.index(|| format!("resource {r} sample {i} attribute_indices"), x, d.attribute_table.len());
            if let Some(at) = d.attribute_table.get(x as usize) {
                if !keys.insert(at.key_strindex) {
                    e.0.push(format!("resource {r} sample {i}: attribute key repeated"));
                }
            }
        }
        if s.values.is_empty() && s.timestamps_unix_nano.is_empty() {
            e.0.push(format!("resource {r} sample {i}: neither values nor timestamps"));
        }
        if !s.values.is_empty() && !s.timestamps_unix_nano.is_empty() && s.values.len() != s.timestamps_unix_nano.len()
        {
            e.0.push(format!(
                "resource {r} sample {i}: {} values but {} timestamps",
                s.values.len(),
                s.timestamps_unix_nano.len()
            ));
        }
        if let Some(t) = s.timestamps_unix_nano.iter().find(|&&t| t < p.time_unix_nano || t > end) {
            e.0.push(format!("resource {r} sample {i}: timestamp {t} outside the profile's time range"));
        }
    }
}
