# The Worker's call on a room through workers-rs's Stub::fetch_with_request (a worker::Request,
# converted and converted back) instead of the raw stub's fetch with the web_sys::Request:
# prices that raw escape (docs/architecture.md).
p = 'src/glue/worker.rs'; s = open(p).read()
old = '''    let stub: worker_sys::DurableObject = ns
        .get_by_name(call.room().as_str())
        .map_err(internal)?
        .into_rpc();
    let req = Request::new_with_str_and_init(&call.url(), &init).map_err(internal)?;
    Ok(JsFuture::from(
        stub.fetch_with_request(&req).map_err(internal)?,
    ))'''
assert old in s, "call_room's raw stub fetch not found"
s = s.replace(old, '''    let stub = ns.get_by_name(call.room().as_str()).map_err(internal)?;
    let req = Request::new_with_str_and_init(&call.url(), &init).map_err(internal)?;
    let req = worker::Request::from(req);
    let fetched = async move {
        stub.fetch_with_request(req)
            .await
            .map(|r| wasm_bindgen::JsValue::from(web_sys::Response::from(r)))
            .map_err(wasm_bindgen::JsValue::from)
    };
    Ok(JsFuture::from(wasm_bindgen_futures::future_to_promise(fetched)))''')
open(p, 'w').write(s)
