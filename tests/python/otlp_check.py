#!/usr/bin/env python3
"""Independent reader of otelprof's OTLP Profiles output (opentelemetry-proto 1.45.2).

Usage: otlp_check.py (request|data) FILE

Decodes FILE as an ExportProfilesServiceRequest or a ProfilesData with the Python protobuf
runtime, checks the dictionary invariants of OTLP profiles 1.10 on its own, and prints a JSON
summary (resources, their attributes, samples as leaf-first function names) for the Rust tests
to assert on. Exits 1 with the list of violations when an invariant does not hold.
"""
import json
import sys

from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
from opentelemetry.proto.profiles.v1development import profiles_pb2


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    val = getattr(v, kind)
    return int(val) if kind == "int_value" else val


def main():
    kind, path = sys.argv[1], sys.argv[2]
    msg = profiles_service_pb2.ExportProfilesServiceRequest() if kind == "request" else profiles_pb2.ProfilesData()
    with open(path, "rb") as f:
        msg.ParseFromString(f.read())
    d = msg.dictionary
    errors = []

    tables = {
        "mapping_table": (d.mapping_table, profiles_pb2.Mapping),
        "location_table": (d.location_table, profiles_pb2.Location),
        "function_table": (d.function_table, profiles_pb2.Function),
        "link_table": (d.link_table, profiles_pb2.Link),
        "attribute_table": (d.attribute_table, profiles_pb2.KeyValueAndUnit),
        "stack_table": (d.stack_table, profiles_pb2.Stack),
    }
    for name, (table, cls) in tables.items():
        if len(table) == 0 or table[0] != cls():
            errors.append(f"{name}[0] must be the zero value")
        seen = set()
        for i, item in enumerate(table):
            key = item.SerializeToString(deterministic=True)
            if key in seen:
                errors.append(f"{name}[{i}] is a duplicate")
            seen.add(key)
    if len(d.string_table) == 0 or d.string_table[0] != "":
        errors.append('string_table[0] must be ""')
    if len(set(d.string_table)) != len(d.string_table):
        errors.append("string_table has duplicates")

    def idx(what, i, table):
        if not 0 <= i < len(table):
            errors.append(f"{what}={i} out of range ({len(table)})")
            return False
        return True

    s = d.string_table

    def attrs(indices):
        out = {}
        for i in indices:
            if idx("attribute_index", i, d.attribute_table):
                a = d.attribute_table[i]
                if idx("key_strindex", a.key_strindex, s):
                    out[s[a.key_strindex]] = any_value(a.value)
        return out

    for m in d.mapping_table:
        idx("filename_strindex", m.filename_strindex, s)
    for f in d.function_table:
        for field in ("name_strindex", "system_name_strindex", "filename_strindex"):
            idx(field, getattr(f, field), s)

    def location(i):
        loc = d.location_table[i]
        idx("mapping_index", loc.mapping_index, d.mapping_table)
        names = []
        for line in loc.lines:
            if idx("function_index", line.function_index, d.function_table):
                names.append(s[d.function_table[line.function_index].name_strindex])
        return names, attrs(loc.attribute_indices).get("profile.frame.type"), loc.mapping_index, loc.address

    resources = []
    for rp in msg.resource_profiles:
        res = {"attributes": {kv.key: any_value(kv.value) for kv in rp.resource.attributes}, "profiles": []}
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                prof = {
                    "scope": sp.scope.name,
                    "sample_type": [s[p.sample_type.type_strindex], s[p.sample_type.unit_strindex]],
                    "period_type": [s[p.period_type.type_strindex], s[p.period_type.unit_strindex]],
                    "period": p.period,
                    "profile_id": p.profile_id.hex(),
                    "samples": [],
                }
                for smp in p.samples:
                    if not idx("stack_index", smp.stack_index, d.stack_table):
                        continue
                    if len(smp.values) == 0 and len(smp.timestamps_unix_nano) == 0:
                        errors.append("sample without values or timestamps")
                    if smp.values and smp.timestamps_unix_nano and len(smp.values) != len(smp.timestamps_unix_nano):
                        errors.append("values and timestamps differ in length")
                    for t in smp.timestamps_unix_nano:
                        if not p.time_unix_nano <= t <= p.time_unix_nano + p.duration_nano:
                            errors.append(f"timestamp {t} outside the profile")
                            break
                    functions, frame_types, mappings, addresses = [], [], [], []
                    for li in d.stack_table[smp.stack_index].location_indices:
                        if idx("location_index", li, d.location_table):
                            names, ftype, mapping, address = location(li)
                            functions += names
                            frame_types.append(ftype)
                            mappings.append(mapping)
                            addresses.append(address)
                    prof["samples"].append({
                        "functions": functions,
                        "frame_types": frame_types,
                        "mappings": mappings,
                        "addresses": addresses,
                        "count": sum(smp.values) if smp.values else len(smp.timestamps_unix_nano),
                        "timestamps": len(smp.timestamps_unix_nano),
                        "attributes": attrs(smp.attribute_indices),
                        "link_index": smp.link_index,
                        "trace_id": d.link_table[smp.link_index].trace_id.hex()
                        if idx("link_index", smp.link_index, d.link_table) else "",
                        "span_id": d.link_table[smp.link_index].span_id.hex()
                        if idx("link_index", smp.link_index, d.link_table) else "",
                    })
                res["profiles"].append(prof)
        resources.append(res)

    mappings = [
        {"filename": s[m.filename_strindex], "attributes": attrs(m.attribute_indices)} for m in d.mapping_table
    ]
    if errors:
        print("\n".join(sorted(set(errors))), file=sys.stderr)
        sys.exit(1)
    json.dump({"resources": resources, "mappings": mappings, "functions": len(d.function_table)}, sys.stdout)


if __name__ == "__main__":
    main()
