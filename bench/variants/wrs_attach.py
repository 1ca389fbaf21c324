# Socket attachments through workers-rs's WebSocket::serialize_attachment /
# deserialize_attachment (serde-wasm-bindgen objects) instead of JSON text through the raw
# WebSocketExt: prices that raw escape (docs/architecture.md).
p = 'src/glue/socket.rs'; s = open(p).read()
old_get = '''        let text = self.raw().deserialize_attachment().ok()?.as_string()?;
        Attachment::from_json(&text)'''
old_set = '''        self.raw()
            .serialize_attachment(JsValue::from_str(&a.to_json()))'''
assert old_get in s and old_set in s, "socket attachment code not found"
s = s.replace(old_get, '''        self.0.deserialize_attachment::<Attachment>().ok().flatten()''')
s = s.replace(old_set, '''        self.0
            .serialize_attachment(a)
            .map_err(|e| JsValue::from_str(&e.to_string()))''')
s = s.replace('use worker::worker_sys::ext::WebSocketExt;\n', '')
open(p, 'w').write(s)
