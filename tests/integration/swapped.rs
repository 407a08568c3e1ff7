//! Files swapped for FIFOs, symlinks or deep trees (issue 11, "nothing lost, nothing hangs"):
//! every run here has a deadline, so a tool that blocks on a FIFO fails the test instead of
//! hanging the suite.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cwbackup::error::ErrorKind;
use serde_json::{Value, json};

use crate::common::*;

/// Runs the binary with `task`, killing it (and failing the test) after `secs` seconds.
pub fn run_within(task: &Value, secs: u64) -> cwbackup::result::TaskResult {
    let mut child = start(task, &[], Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cwbackup hung: still running after {secs} s on {task}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

pub fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_as_a_sets_manifest_is_a_broken_set_not_a_hang() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let set = only_set(&f.repo);
    fs::remove_file(set.join("manifest.json")).unwrap();
    mkfifo(&set.join("manifest.json"));
    let list = run_within(&json!({"operation": "list", "repository": f.repo}), 20);
    assert!(list.sets.unwrap_or_default().is_empty());
    let verify = run_within(&json!({"operation": "verify", "repository": f.repo}), 20);
    assert!(!verify.ok, "a broken set is a verify error");
    let restore = run_within(&f.task("restore"), 20);
    assert!(!restore.ok);
}

#[test]
fn a_symlink_to_dev_zero_as_a_sets_manifest_is_refused() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let set = only_set(&f.repo);
    fs::remove_file(set.join("manifest.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", set.join("manifest.json")).unwrap();
    let list = run_within(&json!({"operation": "list", "repository": f.repo}), 20);
    assert!(list.sets.unwrap_or_default().is_empty());
    let verify = run_within(&json!({"operation": "verify", "repository": f.repo}), 20);
    assert!(!verify.ok);
}

#[test]
fn a_fifo_or_symlink_as_a_sets_archive_is_an_integrity_error_not_a_hang() {
    for swap in ["fifo", "symlink"] {
        let f = Fixture::sample();
        run_ok(&f.task("backup"));
        let archive = only_set(&f.repo).join("volume.tar.gz");
        fs::remove_file(&archive).unwrap();
        if swap == "fifo" {
            mkfifo(&archive);
        } else {
            std::os::unix::fs::symlink("/dev/zero", &archive).unwrap();
        }
        let verify = run_within(
            &json!({"operation": "verify", "repository": f.repo, "deep": true}),
            20,
        );
        assert_eq!(
            verify.error.as_ref().map(|e| e.kind),
            Some(ErrorKind::IntegrityError),
            "{swap}: {verify:?}"
        );
        let before = listing(&f.vol);
        fs::write(f.vol.join("changed"), "x").unwrap();
        let restore = run_within(&f.task("restore"), 20);
        assert!(!restore.ok, "{swap}: {restore:?}");
        fs::remove_file(f.vol.join("changed")).unwrap();
        assert_eq!(listing(&f.vol), before, "{swap}: the volume was touched");
    }
}

#[test]
fn a_fifo_in_the_volume_does_not_hang_a_backup() {
    let f = Fixture::sample();
    mkfifo(&f.vol.join("pipe"));
    let r = run_within(&f.task("backup"), 30);
    assert!(r.ok, "{r:?}");
}

/// A tar stream: a header of type `etype` announcing `size` bytes, `data` (maybe less than
/// announced: a reader that trusts the size fails on a short stream, one that checks it first
/// refuses it as unsafe), then a small regular file.
fn extension_archive(etype: tar::EntryType, size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path("././@PaxHeader").unwrap();
    h.set_entry_type(etype);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let mut f = tar::Header::new_ustar();
    f.set_path("file").unwrap();
    f.set_size(0);
    f.set_mode(0o644);
    f.set_uid(0);
    f.set_gid(0);
    f.set_mtime(0);
    f.set_cksum();
    out.extend_from_slice(f.as_bytes());
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn pax_headers_and_gnu_long_names_over_1_mib_are_unsafe_archives() {
    use cwbackup::volume::extract::{Limits, read_archive};
    let limits = Limits {
        max_bytes: 1 << 30,
        max_entries: 10,
    };
    // 1.5 GB announced (the reported 6.5 MB archive reached 1.2 GB RSS): refused before reading.
    for etype in [
        tar::EntryType::XHeader,
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
    ] {
        let tar = extension_archive(etype, 1_500_000_000, b"");
        let e = read_archive(&tar[..], None, limits).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsafeArchive, "{etype:?}: {}", e.message);
        assert!(e.message.contains("1048576"), "{}", e.message);
    }
    // 2 MiB of real pax records: also refused.
    let mut records = Vec::new();
    while records.len() < 2 << 20 {
        records.extend_from_slice(format!("{} comment={}\n", 1014, "x".repeat(1000)).as_bytes());
    }
    let tar = extension_archive(tar::EntryType::XHeader, records.len() as u64, &records);
    let e = read_archive(&tar[..], None, limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsafeArchive, "{}", e.message);
    // A small pax path still names the entry.
    let record = b"16 path=renamed\n";
    let tar = extension_archive(tar::EntryType::XHeader, record.len() as u64, record);
    let c = read_archive(&tar[..], None, limits).unwrap();
    assert_eq!(c.entries.get(0).path, b"renamed");
}

#[test]
fn a_manifest_over_16_mib_is_refused_and_read_no_further() {
    let f = Fixture::sample();
    run_ok(&f.task("backup"));
    let manifest = only_set(&f.repo).join("manifest.json");
    let file = fs::File::options().write(true).open(&manifest).unwrap();
    file.set_len(17 << 20).unwrap(); // sparse: cheap
    let list = run_within(&json!({"operation": "list", "repository": f.repo}), 20);
    assert!(list.sets.unwrap_or_default().is_empty());
    let verify = run_within(&json!({"operation": "verify", "repository": f.repo}), 20);
    assert!(!verify.ok);
    let text = serde_json::to_string(&verify).unwrap();
    assert!(text.contains("more than the 16777216"), "{text}");
}

#[test]
fn a_sparse_file_restores_sparse_and_the_backup_warns() {
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::empty_in(Path::new("/tmp"));
    let sparse = f.vol.join("disk.img");
    let file = fs::File::create(&sparse).unwrap();
    file.set_len(1 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"header", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"middle", 512 << 20).unwrap();
    drop(file);
    let r = run_ok(&f.task("backup"));
    let warnings = serde_json::to_string(&r.warnings).unwrap();
    assert!(
        warnings.contains("disk.img") && warnings.contains("sparse"),
        "{warnings}"
    );
    fs::remove_file(&sparse).unwrap();
    run_ok(&f.task("restore"));
    let meta = fs::metadata(&sparse).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    assert!(
        meta.blocks() * 512 < 4 << 20,
        "restored with {} bytes allocated",
        meta.blocks() * 512
    );
    let file = fs::File::open(&sparse).unwrap();
    let mut bytes = [0u8; 6];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).unwrap();
    assert_eq!(&bytes, b"header");
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 512 << 20).unwrap();
    assert_eq!(&bytes, b"middle");
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name}: {}",
        std::io::Error::last_os_error()
    );
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and buffer.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

#[test]
fn extended_attributes_and_capabilities_survive_a_round_trip_and_gnu_tar_sees_them() {
    let f = Fixture::empty_in(Path::new("/tmp"));
    write(&f.vol.join("d/tool"), b"#!/bin/sh\n", 0o755);
    write(&f.vol.join("plain"), b"x", 0o644);
    setxattr(&f.vol.join("d/tool"), "user.test", b"x");
    setxattr(&f.vol.join("d"), "user.dir", b"\x00binary\xff");
    let setcap = Command::new("setcap")
        .args(["cap_net_bind_service=+ep"])
        .arg(f.vol.join("d/tool"))
        .status()
        .is_ok_and(|s| s.success());
    let digest_before = spec_digest(&f.vol);
    run_ok(&f.task("backup"));

    // GNU tar reads them from the archive.
    let dest = f.path("gnu");
    fs::create_dir(&dest).unwrap();
    let archive = only_set(&f.repo).join("volume.tar.gz");
    gnu_tar_extract(&archive, &dest, &["--xattrs", "--xattrs-include=*"]);
    assert_eq!(
        getxattr(&dest.join("d/tool"), "user.test").as_deref(),
        Some(&b"x"[..])
    );

    // A restore sets them again (the volume lost them meanwhile, and changed: xattrs alone
    // are not in the digest, so a volume differing only in them is left as it is).
    fs::remove_dir_all(f.vol.join("d")).unwrap();
    write(&f.vol.join("d/tool"), b"#!/bin/sh\n", 0o755);
    write(&f.vol.join("plain"), b"changed", 0o644);
    run_ok(&f.task("restore"));
    assert_eq!(
        spec_digest(&f.vol),
        digest_before,
        "xattrs are not in the digest"
    );
    assert_eq!(
        getxattr(&f.vol.join("d/tool"), "user.test").as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        getxattr(&f.vol.join("d"), "user.dir").as_deref(),
        Some(&b"\x00binary\xff"[..])
    );
    assert_eq!(getxattr(&f.vol.join("plain"), "user.test"), None);
    if setcap {
        let out = Command::new("getcap")
            .arg(f.vol.join("d/tool"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("cap_net_bind_service"), "getcap: {text}");
    }
}

/// Opens (making it, with `create`) the directory `levels` levels of `name` below `root`, fd
/// by fd: its path is longer than PATH_MAX, so no path-based call can reach it.
fn deep_dir(root: &Path, name: &str, levels: usize, create: bool) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let open = |dir: i32, c: &CString| {
        // SAFETY: valid fd and C string.
        let fd = unsafe { libc::openat(dir, c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: just opened.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let mut cur = open(
        libc::AT_FDCWD,
        &CString::new(root.as_os_str().as_bytes()).unwrap(),
    );
    let c = CString::new(name).unwrap();
    for _ in 0..levels {
        if create {
            // SAFETY: valid fd and C string.
            assert_eq!(
                unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), 0o755) },
                0
            );
        }
        cur = open(cur.as_raw_fd(), &c);
    }
    cur
}

#[test]
fn a_tree_deeper_than_path_max_backs_up_verifies_and_restores() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let f = Fixture::empty();
    let name = "n".repeat(100);
    let levels = 50; // 50 * 101 bytes: beyond PATH_MAX (4096)
    let bottom = deep_dir(&f.vol, &name, levels, true);
    let c = CString::new("deep.txt").unwrap();
    // SAFETY: valid fd and C string.
    let fd = unsafe {
        libc::openat(
            bottom.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT,
            0o644,
        )
    };
    assert!(fd >= 0);
    // SAFETY: valid fd and buffer; closed once.
    unsafe {
        assert_eq!(libc::write(fd, b"bottom".as_ptr().cast(), 6), 6);
        libc::close(fd);
    }
    fs::write(f.vol.join("top.txt"), "top").unwrap();

    let backup = run_within(&f.task("backup"), 60);
    assert!(backup.ok, "{backup:?}");
    let verify = run_within(
        &json!({"operation": "verify", "repository": f.repo, "deep": true}),
        60,
    );
    assert!(verify.ok, "{verify:?}");

    // Change the volume (top level only), then restore: the deep tree is extracted anew.
    fs::write(f.vol.join("top.txt"), "changed").unwrap();
    let restore = run_within(&f.task("restore"), 60);
    assert!(restore.ok, "{restore:?}");
    assert_eq!(fs::read_to_string(f.vol.join("top.txt")).unwrap(), "top");
    let bottom = deep_dir(&f.vol, &name, levels, false);
    // SAFETY: valid fd and C string.
    let fd = unsafe { libc::openat(bottom.as_raw_fd(), c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "the deep file was restored");
    // SAFETY: just opened.
    let mut file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "bottom");
}
