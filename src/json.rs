//! JSON objects written straight into one string, members in order: frames, results and log
//! lines are built on every event, and a `serde_json::Value` tree (a map node and a copied key
//! per member) costs more than the text itself.

use std::fmt::Display;

/// A JSON object being written: `Object::new().str("type", "pong").num("seq", 3).finish()`.
#[derive(Debug, Clone)]
pub struct Object(String);

impl Default for Object {
    fn default() -> Self {
        Object::new()
    }
}

impl Object {
    pub fn new() -> Object {
        let mut s = String::with_capacity(160);
        s.push('{');
        Object(s)
    }

    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_str(&mut self.0, k);
        self.0.push(':');
    }

    /// A string member.
    pub fn str(mut self, k: &str, v: &str) -> Object {
        self.key(k);
        push_str(&mut self.0, v);
        self
    }

    /// A number member (integers: their `Display` is valid JSON).
    pub fn num(mut self, k: &str, v: impl Display) -> Object {
        self.key(k);
        self.0.push_str(&v.to_string());
        self
    }

    /// A number member, or `null`.
    pub fn opt_num(self, k: &str, v: Option<impl Display>) -> Object {
        match v {
            Some(v) => self.num(k, v),
            None => self.raw(k, "null"),
        }
    }

    pub fn bool(self, k: &str, v: bool) -> Object {
        self.raw(k, if v { "true" } else { "false" })
    }

    /// An array of strings.
    pub fn strs<S: AsRef<str>>(mut self, k: &str, v: &[S]) -> Object {
        self.key(k);
        self.0.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            push_str(&mut self.0, s.as_ref());
        }
        self.0.push(']');
        self
    }

    /// A member whose value is already JSON text.
    pub fn raw(mut self, k: &str, json: &str) -> Object {
        self.key(k);
        self.0.push_str(json);
        self
    }

    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn writes_what_serde_json_reads() {
        let tricky = "quote\" back\\slash \n\r\t \u{1} \u{1f} ünï ✓ </script>";
        let text = Object::new()
            .str("s", tricky)
            .str(tricky, "as key")
            .num("n", 42u64)
            .num("neg", -7i64)
            .opt_num("none", None::<u32>)
            .bool("t", true)
            .strs("list", &["a", "b\"c"])
            .strs::<&str>("empty", &[])
            .raw("obj", r#"{"k":[1,2]}"#)
            .finish();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"s": tricky, tricky: "as key", "n": 42, "neg": -7, "none": null,
                   "t": true, "list": ["a", "b\"c"],
                   "empty": [], "obj": {"k": [1, 2]}})
        );
        assert_eq!(Object::new().finish(), "{}");
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u8..0x20).map(char::from) {
            let mut out = String::new();
            push_str(&mut out, &c.to_string());
            assert!(out.bytes().all(|b| b >= 0x20), "{out:?}");
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), c.to_string());
        }
    }
}
