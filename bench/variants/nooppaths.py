# Diagnostic: GET /noop answers 204 before any future; GET /noop2 answers 204 from inside the
# future; GET /noop3 reads url, method and origin and resolves the route first (prices the entry).
p = 'src/worker.rs'; s = open(p).read()
old = '''pub fn fetch(req: Request, env: JsValue, _ctx: JsValue) -> Promise {
    future_to_promise(async move {'''
assert old in s
s = s.replace(old, '''pub fn fetch(req: Request, env: JsValue, _ctx: JsValue) -> Promise {
    let u = req.url();
    if u.ends_with("/noop") {
        let init = web_sys::ResponseInit::new();
        init.set_status(204);
        let v: JsValue = Response::new_with_opt_str_and_init(None, &init).unwrap().into(); return Promise::resolve(&v);
    }
    future_to_promise(async move {
        if u.ends_with("/noop2") || u.ends_with("/noop3") {
            if u.ends_with("/noop3") {
                let url = req.url();
                let (path, _query) = split_url(&url);
                let method = req.method();
                let _ = Route::resolve(&method, path);
                let _ = header(&req, "origin");
            }
            let init = web_sys::ResponseInit::new();
            init.set_status(204);
            return Ok(Response::new_with_opt_str_and_init(None, &init)?.into());
        }''', 1)
open(p, 'w').write(s)
