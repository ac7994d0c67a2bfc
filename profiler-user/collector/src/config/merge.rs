//! Several YAML documents as one config, as the Collector merges repeated `--config` flags and
//! as a remote config is laid over the local file: maps merge key by key, anything else
//! (lists, scalars) is replaced by the later document; a `null` leaves the earlier value.

use serde_yaml::{Mapping, Value};

use super::ConfigError;

/// Deep-merges `over` into `base`.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (b, o) => *b = o,
    }
}

/// The config files `(name, text)`, later ones merged over earlier ones, as one YAML text. A
/// file that is not YAML is an error naming it (positions then refer to that file).
pub fn merge_files(files: &[(String, String)]) -> Result<String, ConfigError> {
    let mut all = Value::Mapping(Mapping::new());
    for (name, text) in files {
        let v: Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::new(name.clone(), format!("not YAML: {e}")))?;
        merge(&mut all, v);
    }
    serde_yaml::to_string(&all).map_err(|e| ConfigError::new("config", format!("writing the merged config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_merge_lists_and_scalars_replace_null_keeps() {
        let a = "receivers: {otlp: {protocols: {grpc: {endpoint: a:1}}}}\nexporters: {debug: {}}\nservice: {extensions: [x], pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\n";
        let b = "receivers: {otlp: {protocols: {http: {endpoint: b:2}}}}\nexporters: {debug: }\nservice: {extensions: [opamp]}\n";
        let m: Value =
            serde_yaml::from_str(&merge_files(&[("a".into(), a.into()), ("b".into(), b.into())]).unwrap()).unwrap();
        assert_eq!(m["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(), Some("a:1"));
        assert_eq!(m["receivers"]["otlp"]["protocols"]["http"]["endpoint"].as_str(), Some("b:2"));
        assert!(m["exporters"]["debug"].is_mapping(), "null keeps the earlier value");
        assert_eq!(m["service"]["extensions"], serde_yaml::from_str::<Value>("[opamp]").unwrap(), "lists replace");
        assert!(m["service"]["pipelines"]["traces"].is_mapping());
        let e = merge_files(&[("a.yaml".into(), a.into()), ("b.yaml".into(), "x: [".into())]).unwrap_err();
        assert_eq!(e.path, "b.yaml");
        assert!(e.message.starts_with("not YAML: ") && e.message.contains("line"), "{e}");
    }
}
