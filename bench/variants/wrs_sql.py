# SQL through workers-rs's SqlStorage::exec_raw (the bindings pushed into an array one call at a
# time) and SqlCursor::raw (every value read converted to a SqlStorageValue) instead of the raw
# worker_sys::SqlStorage (bindings in one Array::of, rows as arrays in one Array::from): prices
# that raw escape (docs/architecture.md). The rows are turned back into arrays for the rest of
# the code, which a workers-rs-native log would not do: that part overstates reads a little.
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
        let cursor = self
            .wsql
            .exec_raw(query, bindings.to_vec())
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
