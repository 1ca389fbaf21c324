//! URL parts and query strings, as the Worker reads them from `request.url` (already normalized
//! by the runtime's URL parser) and as the internal API writes them.

/// `(path, query)` of an absolute URL: the path still percent-encoded, the query without `?`,
/// the fragment dropped.
pub fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let rest = after_scheme
        .find(['/', '?', '#'])
        .map_or("", |i| &after_scheme[i..]);
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    match rest.split_once('?') {
        Some((path, query)) => (path, query),
        None => (rest, ""),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs the way browsers and `URLSearchParams` do:
/// `+` is a space, `%XX` a byte, invalid UTF-8 becomes U+FFFD, a pair without `=` has an empty
/// value, empty pairs are skipped.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push(hex(b[i + 1]).unwrap_or(0) << 4 | hex(b[i + 2]).unwrap_or(0));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The length of `s` percent-encoded by [`encode_into`].
pub fn encoded_len(s: &str) -> usize {
    s.bytes().map(|b| if unreserved(b) { 1 } else { 3 }).sum()
}

/// Appends `s` percent-encoded: everything but `A-Z a-z 0-9 - . _ ~` (safe in any URL part).
pub fn encode_into(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("https://h.example/rooms/a/subscribe?token=x&since=3"),
            ("/rooms/a/subscribe", "token=x&since=3")
        );
        assert_eq!(split_url("http://127.0.0.1:8787/"), ("/", ""));
        assert_eq!(split_url("http://127.0.0.1:8787"), ("", ""));
        assert_eq!(split_url("https://h/p?q=1#frag"), ("/p", "q=1"));
        assert_eq!(split_url("https://h/p#f?x"), ("/p", ""));
        assert_eq!(split_url("https://h?q=1"), ("", "q=1"));
        assert_eq!(split_url("https://h/a%2Fb?"), ("/a%2Fb", ""));
    }

    #[test]
    fn decodes_like_url_search_params() {
        assert_eq!(
            pairs("a=1&b=&c&&d=x=y"),
            owned(&[("a", "1"), ("b", ""), ("c", ""), ("d", "x=y")])
        );
        assert_eq!(pairs("t=a+b%20c%2Bd"), owned(&[("t", "a b c+d")]));
        assert_eq!(pairs("k%3D=%E2%9C%93"), owned(&[("k=", "✓")]));
        // Malformed escapes stay as they are; invalid UTF-8 becomes U+FFFD.
        assert_eq!(
            pairs("x=%zz%4&y=%ff"),
            owned(&[("x", "%zz%4"), ("y", "\u{fffd}")])
        );
        assert_eq!(pairs("z=%"), owned(&[("z", "%")]));
        assert_eq!(pairs(""), Vec::<(String, String)>::new());
    }

    #[test]
    fn encoding_round_trips() {
        for s in [
            "plain-id_1.2~",
            "job.*",
            "a b&c=d%e+f",
            "ünïcödé ✓",
            "\t\n\"'<>",
            "",
        ] {
            let mut q = String::from("v=");
            encode_into(&mut q, s);
            assert_eq!(encoded_len(s), q.len() - 2);
            assert!(q[2..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            assert_eq!(pairs(&q), owned(&[("v", s)]), "{s:?} as {q}");
        }
    }
}
