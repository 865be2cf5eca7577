//! Start-up checks that catch a host on which the datapath would silently
//! forward nothing.
//!
//! The XDP program forwards with `bpf_fib_lookup`, and the kernel answers
//! every lookup on a device whose IPv4 forwarding is off with
//! `BPF_FIB_LKUP_RET_FWD_DISABLED`: each service packet is dropped (and
//! counted) and nothing else says so. Forwarding is off on a stock host
//! (`net.ipv4.ip_forward=0`) and in a fresh network namespace. The lookup
//! device is `--fib-lookup-iface` when given, else each ingress `--iface`;
//! [`check_forwarding`] refuses to start when forwarding is off on one of
//! them, with one line that names the sysctl and both fixes.

use std::path::{Path, PathBuf};

/// Where the per-device IPv4 sysctls live.
pub const IPV4_CONF: &str = "/proc/sys/net/ipv4/conf";

/// Why the agent refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "IPv4 forwarding is off on {dev} (net.ipv4.conf.{dev}.forwarding=0): the datapath's FIB \
         lookups would fail and every service packet would be dropped. Fix: enable forwarding \
         (sysctl -w net.ipv4.conf.{dev}.forwarding=1, or net.ipv4.ip_forward=1), or keep it off \
         and run with --fib-lookup-iface lo after sysctl -w net.ipv4.conf.lo.forwarding=1"
    )]
    ForwardingOff { dev: String },
    #[error("cannot read {path} (is {dev} an interface in this network namespace?): {source}")]
    Read {
        dev: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The devices the datapath's FIB lookups run on.
pub fn lookup_devices<'a>(ifaces: &'a [String], fib_lookup_iface: Option<&'a str>) -> Vec<&'a str> {
    match fib_lookup_iface {
        Some(dev) => vec![dev],
        None => ifaces.iter().map(String::as_str).collect(),
    }
}

/// Checks that IPv4 forwarding is on for every lookup device, reading the
/// sysctls under `conf_root` ([`IPV4_CONF`] outside tests).
pub fn check_forwarding(
    ifaces: &[String],
    fib_lookup_iface: Option<&str>,
    conf_root: &Path,
) -> Result<(), PreflightError> {
    for dev in lookup_devices(ifaces, fib_lookup_iface) {
        let path = conf_root.join(dev).join("forwarding");
        let value = std::fs::read_to_string(&path).map_err(|source| PreflightError::Read {
            dev: dev.to_string(),
            path: path.clone(),
            source,
        })?;
        if value.trim() == "0" {
            return Err(PreflightError::ForwardingOff {
                dev: dev.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `conf` directory, removed on drop.
    struct Conf(PathBuf);

    impl Conf {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Conf {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn conf(devs: &[(&str, &str)]) -> Conf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "floatlb-preflight-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        for (dev, v) in devs {
            std::fs::create_dir_all(d.join(dev)).unwrap();
            std::fs::write(d.join(dev).join("forwarding"), format!("{v}\n")).unwrap();
        }
        Conf(d)
    }

    #[test]
    fn forwarding_off_on_the_ingress_iface_is_refused_naming_both_fixes() {
        let d = conf(&[("eth0", "0"), ("lo", "1")]);
        let err = check_forwarding(&["eth0".into()], None, d.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("net.ipv4.conf.eth0.forwarding=0"), "{msg}");
        assert!(msg.contains("--fib-lookup-iface lo"), "{msg}");
        assert!(msg.contains("net.ipv4.conf.lo.forwarding=1"), "{msg}");
        assert!(!msg.contains('\n'));
        // The lookup device decides, not the ingress interface.
        check_forwarding(&["eth0".into()], Some("lo"), d.path()).unwrap();
        let d = conf(&[("eth0", "1"), ("lo", "0")]);
        check_forwarding(&["eth0".into()], None, d.path()).unwrap();
        assert!(check_forwarding(&["eth0".into()], Some("lo"), d.path()).is_err());
    }

    #[test]
    fn an_unknown_device_is_named() {
        let d = conf(&[]);
        let err = check_forwarding(&["eth9".into()], None, d.path()).unwrap_err();
        assert!(err.to_string().contains("eth9"), "{err}");
    }
}
