//! What tar 0.4.46's own writer emits for a long path, a long link target and a binary
//! extended attribute (see src/volume/archive.rs): `tar-builder > t.tar; tar tvf t.tar`.
use std::io::Write;
use tar::{Builder, EntryType, Header};

fn main() -> std::io::Result<()> {
    let mut b = Builder::new(Vec::new());
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    // pax: binary xattr value, via append_pax_extensions
    b.append_pax_extensions([("SCHILY.xattr.user.bin", &b"\x00binary\xff=\n"[..])])?;
    let mut h = Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(3);
    h.set_entry_type(EntryType::Regular);
    b.append_data(&mut h, &long, &b"abc"[..])?;
    let mut l = Header::new_ustar();
    l.set_entry_type(EntryType::Symlink);
    l.set_mode(0o777);
    l.set_size(0);
    b.append_link(&mut l, "link", "t/".repeat(80))?;
    let mut d = Header::new_ustar();
    d.set_entry_type(EntryType::Directory);
    d.set_mode(0o755);
    d.set_size(0);
    b.append_data(&mut d, "some/dir/", std::io::empty())?;
    let out = b.into_inner()?;
    std::io::stdout().write_all(&out)
}
