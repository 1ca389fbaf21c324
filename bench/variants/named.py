# Keep the wasm name section (strip = false), so profiles name Rust functions.
p='Cargo.toml'; s=open(p).read()
s=s.replace('strip = true','strip = false')
open(p,'w').write(s)
