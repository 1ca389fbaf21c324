# SQL through workers-rs's SqlStorage::exec (bindings pushed one by one, each a SqlStorageValue)
# and SqlCursor::raw (every value converted to a SqlStorageValue) instead of the raw
# worker_sys::SqlStorage (bindings in one Array::of, rows as arrays in one Array::from):
# prices that raw escape (docs/architecture.md).
p = 'src/glue/storage.rs'; s = open(p).read()
old = '''    fn exec(&self, query: &str, bindings: &[JsValue]) -> Result<Vec<Array>> {
        let cursor: SqlStorageCursor = self.sql.exec(query, Array::of(bindings))?;
        let rows = Array::from(&cursor.raw());
        let mut stats = self.rows.get();
        stats.read += cursor.rows_read() as u64;
        stats.written += cursor.rows_written() as u64;
        self.rows.set(stats);
        Ok(rows.iter().map(JsCast::unchecked_into).collect())
    }'''
assert old in s, "RoomLog::exec not found"
s = s.replace(old, '''    fn exec(&self, query: &str, bindings: &[JsValue]) -> Result<Vec<Array>> {
        use worker::SqlStorageValue as V;
        let sql = &self.wsql;
        let values: Vec<V> = bindings
            .iter()
            .map(|b| V::try_from(b.clone()).unwrap_or(V::Null))
            .collect();
        let cursor = sql
            .exec(query, values)
            .map_err(|e| JsValue::from_str(&e.to_string()))?;
        let mut out = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(|e| JsValue::from_str(&e.to_string()))?;
            out.push(row.into_iter().map(JsValue::from).collect::<Array>());
        }
        let mut stats = self.rows.get();
        stats.read += cursor.rows_read() as u64;
        stats.written += cursor.rows_written() as u64;
        self.rows.set(stats);
        Ok(out)
    }''')
old_struct = """pub struct RoomLog {
    sql: SqlStorage,"""
assert old_struct in s
s = s.replace(old_struct, """pub struct RoomLog {
    #[allow(dead_code)]
    sql: SqlStorage,
    wsql: worker::SqlStorage,""")
old_open = """            sql: storage.as_raw().sql(),"""
assert old_open in s
s = s.replace(old_open, """            sql: storage.as_raw().sql(),
            wsql: storage.sql(),""")
open(p, 'w').write(s)
