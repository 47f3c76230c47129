//! JSON renderings for `--json` outputs (`ls`, `inspect`): the library's [`Report`]s as
//! objects, so scripts can read them. The library itself has no JSON dependency.

use serde_json::{json, Value};
use shmlane::format::MAGIC;
use shmlane::inspect::{utc_text, Report};
use shmlane::Kind;

/// The report as a JSON object: every field (`magic` as hex, `kind` and `wait` by
/// name, `kind_raw` as stored), plus `layout_matches`, `fill`, `created` (UTC text),
/// `status` and `check`.
pub fn report(r: &Report) -> Value {
    let f = &r.fields;
    let endpoints: Vec<Value> = r
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "index": e.index,
                "role": e.role,
                "pid": e.pid,
                "state": e.state,
                "start_time": e.start_time,
                "liveness": e.liveness.as_str(),
            })
        })
        .collect();
    let fill = r.fill().map(|fl| {
        json!({
            "used": fl.used,
            "total": fl.total,
            "unit": if fl.slots { "slots" } else { "bytes" },
            "percent": (fl.percent() * 100.0).round() / 100.0,
        })
    });
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("name", json!(r.name));
    put("backing", json!(r.backing.to_string()));
    put("sysv_key", json!(r.sysv_key));
    put("sysv_id", json!(r.sysv_id));
    put("sysv_nattch", json!(r.sysv_nattch));
    put("sysv_removed", json!(r.sysv_removed));
    put("len", json!(r.len));
    put("class", json!(r.class.as_str()));
    put("status", json!(r.status()));
    put("valid", json!(r.valid()));
    put("check", json!(r.check.as_str()));
    put("validation", json!(r.validation));
    put("magic_ok", json!(r.magic == Some(MAGIC)));
    put(
        "magic",
        json!(r
            .magic
            .map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<String>())),
    );
    put("version", json!(f.version));
    put("kind", json!(r.kind().map(Kind::as_str)));
    put("kind_raw", json!(f.kind));
    put(
        "layout_hash",
        json!(f.layout_hash.map(|h| format!("{h:#018x}"))),
    );
    put("layout_matches", json!(r.layout_matches()));
    put("segment_len", json!(f.segment_len));
    put("data_offset", json!(f.data_offset));
    put("capacity", json!(f.capacity));
    put("max_message", json!(f.max_message));
    put("slot_size", json!(f.slot_size));
    put("slot_count", json!(f.slot_count));
    put("wait", json!(r.wait().map(|w| w.to_string())));
    put("created_unix_ns", json!(f.created_unix_ns));
    put("created", json!(r.created().map(utc_text)));
    put("creator_pid", json!(f.creator_pid));
    put("stored_name", json!(f.stored_name));
    put("state", json!(f.state));
    put("write_pos", json!(f.write_pos));
    put("read_pos", json!(f.read_pos));
    put("fill", json!(fill));
    put("data_waiters", json!(f.data_waiters));
    put("space_waiters", json!(f.space_waiters));
    put("light_wakers", json!(f.light_wakers));
    put("mpmc_live_senders", json!(r.alive("sender")));
    put("mpmc_live_receivers", json!(r.alive("receiver")));
    put("mpmc_open_senders", json!(f.mpmc_live[0]));
    put("mpmc_open_receivers", json!(f.mpmc_live[1]));
    put("mpmc_ever", json!(f.mpmc_ever));
    put("lost", json!(f.lost));
    put("flags", json!(f.flags));
    put("type", json!(r.message_type()));
    put("type_name", json!(f.type_name));
    put(
        "type_hash",
        json!(f.type_hash.map(|h| format!("{h:#018x}"))),
    );
    put("type_size", json!(f.type_size));
    put("type_align", json!(f.type_align));
    put("type_schema", json!(f.type_schema));
    put("persistent", json!(r.persistent()));
    put("unread", json!(r.unread));
    put("pending", json!(r.pending()));
    put("endpoints", json!(endpoints));
    Value::Object(m)
}
