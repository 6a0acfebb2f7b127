//! Round trips between `strongroomctl` and the Linux kernel's eCryptfs (Debian's 6.1,
//! in the `cargo xtask vm` test VM): what one side encrypts, the other must decrypt
//! to the identical tree. Needs `cargo xtask vm-setup`; without it the tests print
//! SKIPPED, or fail when STRONGROOM_REQUIRE_VM=1.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::*;

/// The harness alone (no Strongroom code): ecryptfs-utils adds the keys, the kernel
/// encrypts the plaintext tree and decrypts it again after a remount. A failure here
/// means the VM, the kernel or the tree is broken, not strongroomctl.
#[test]
fn kernel_selfcheck() {
    if !vm_available("kernel_selfcheck") {
        return;
    }
    let work = workdir("selfcheck.");
    let w = work.path();
    make_plain_tree(&w.join("plain")).expect("plaintext tree");
    fs::write(w.join("passphrase"), format!("{PASSPHRASE}\n")).expect("passphrase file");
    let cases = [
        Case::new("aes", 16, Fnek::None, false),
        Case::new("blowfish", 56, Fnek::Same, false),
        Case::new("aes", 32, Fnek::Separate, true),
    ];
    let jobs: Vec<(&Case, Op)> = cases.iter().map(|c| (c, Op::Check)).collect();
    let results = run_guest_cases(w, &jobs);
    let lines: Vec<(String, CaseResult)> = results
        .into_iter()
        .map(|((name, _), r)| (format!("{name}: kernel encrypt + decrypt"), r))
        .collect();
    let failures = report("kernel self-check", &lines);
    assert!(
        failures.is_empty(),
        "{} kernel self-check case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn ctl(bin: &Path, args: &[&str], paths: [&Path; 3]) -> Result<(), String> {
    let [pass, from, to] = paths;
    let out = Command::new(bin)
        .args(&args[..1])
        .arg("--passphrase-file")
        .arg(pass)
        .args(&args[1..])
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "strongroomctl {} exited with {}:\n{}",
            args[0],
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every cipher / key size / FNEK / xattr combination, both directions, in one VM boot:
/// (a) host `strongroomctl encrypt` → kernel mount + diff; (b) kernel encrypt → host
/// `strongroomctl decrypt` → compare. The kernel also re-reads its own encryption in
/// (b), which tells a kernel/harness problem from a strongroomctl one.
#[test]
fn strongroomctl_and_kernel_roundtrip() {
    if !vm_available("strongroomctl_and_kernel_roundtrip") {
        return;
    }
    let bin = strongroomctl();
    let work = workdir("roundtrip.");
    let w = work.path();
    let plain = w.join("plain");
    make_plain_tree(&plain).expect("plaintext tree");
    let pass = w.join("passphrase");
    fs::write(&pass, format!("{PASSPHRASE}\n")).expect("passphrase file");
    let cases = full_matrix();

    // (a) host side first, so that one boot serves both directions
    let mut host: Vec<(String, CaseResult)> = Vec::new();
    let mut jobs: Vec<(&Case, Op)> = Vec::new();
    for c in &cases {
        let kb = c.key_bytes.to_string();
        let mut args = vec!["encrypt", "--cipher", c.cipher, "--key-bytes", &kb];
        args.extend(c.ctl_mode_args());
        let lower = w.join("host-lower").join(&c.name);
        fs::create_dir_all(lower.parent().expect("has a parent")).expect("host-lower dir");
        let r = ctl(&bin, &args, [&pass, &plain, &lower]);
        if r.is_ok() {
            jobs.push((c, Op::Decrypt));
        }
        host.push((format!("{}: strongroomctl encrypt", c.name), r));
        jobs.push((c, Op::Encrypt));
    }
    let guest = run_guest_cases(w, &jobs);

    // (b) decrypt what the kernel wrote
    let mut lines = host;
    for c in &cases {
        if let Some(r) = guest.get(&(c.name.clone(), Op::Decrypt)) {
            lines.push((
                format!("{}: kernel decrypts strongroomctl's files", c.name),
                r.clone(),
            ));
        }
        let kernel = guest
            .get(&(c.name.clone(), Op::Encrypt))
            .cloned()
            .unwrap_or(Err("no result".into()));
        let kernel_ok = kernel.is_ok();
        lines.push((
            format!("{}: kernel encrypt + decrypt (control)", c.name),
            kernel,
        ));
        if !kernel_ok {
            continue; // nothing trustworthy to decrypt
        }
        let mut args = vec!["decrypt"];
        args.extend(c.ctl_mode_args());
        let back = w.join("back").join(&c.name);
        fs::create_dir_all(back.parent().expect("has a parent")).expect("back dir");
        let r = ctl(
            &bin,
            &args,
            [&pass, &w.join("kernel-lower").join(&c.name), &back],
        )
        .and_then(|()| {
            let diffs = compare_trees(&plain, &back);
            if diffs.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "decrypted tree differs:\n    {}",
                    diffs.join("\n    ")
                ))
            }
        });
        lines.push((
            format!("{}: strongroomctl decrypts the kernel's files", c.name),
            r,
        ));
    }
    let failures = report("strongroomctl <-> kernel eCryptfs", &lines);
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        lines.len(),
        failures.join("\n")
    );
}
