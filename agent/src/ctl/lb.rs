//! Load-balancer rules on floatctl's side: the entry `create lb` sends, the
//! files `apply -f` reads and `save -f` writes.
//!
//! - `create lb` builds the rule in kube-loxilb's shape (every field it
//!   always sends: `privateIP` `""` when unset, `inactiveTimeOut` 1800,
//!   `block` 0, empty probe fields, endpoints with empty `state`/`counter`),
//!   with `managed: false`, since a person made it, not kube-loxilb.
//! - `apply -f` reads `{"lbAttr":[...]}` (what `save` and `floatlb
//!   --config` use) or one bare rule, as JSON or YAML by extension. The whole
//!   file is validated first with the same validation the agent runs
//!   (`floatlb_api::LbConfig`), so a bad file changes nothing; then each rule
//!   is POSTed in order, stopping at the first the agent refuses.
//! - `save -f` writes the agent's `{"lbAttr":[...]}` as indented JSON
//!   through a temporary file renamed into place, so an interrupted save
//!   never leaves half a file.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use floatlb_api::{
    LbConfig, Limits,
    wire::{AllowedSource, Format, LbEndpoint, LbEntry, LbList, LbServiceArgs, decode},
};

use super::cli::CreateLb;

/// Limits for checking a file before it is sent: the datapath's endpoint
/// slots; the service count is the agent's to judge (`--max-services`).
pub const FILE_LIMITS: Limits = Limits {
    max_endpoints: floatlb_common::MAX_ENDPOINTS,
    max_services: usize::MAX,
};

/// Errors reading or writing rule files.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The rule `create lb` POSTs.
pub fn entry_from(c: &CreateLb) -> LbEntry {
    LbEntry {
        service_arguments: LbServiceArgs {
            external_ip: c.external_ip.to_string(),
            private_ip: Some(c.private_ip.map_or_else(String::new, |ip| ip.to_string())),
            port: c.port.into(),
            protocol: c.protocol.as_str().into(),
            sel: c.sel.code(),
            mode: c.mode.code(),
            bgp: false,
            monitor: false,
            inactive_timeout: Some(c.inactive_timeout.into()),
            block: 0,
            managed: Some(false),
            name: c.name.clone(),
            ..LbServiceArgs::default()
        },
        secondary_ips: Vec::new(),
        allowed_sources: c
            .allowed_sources
            .iter()
            .map(|n| AllowedSource {
                prefix: n.to_string(),
            })
            .collect(),
        endpoints: c
            .endpoints
            .iter()
            .map(|e| LbEndpoint {
                endpoint_ip: e.ip.to_string(),
                target_port: e.port.into(),
                weight: e.weight.into(),
                state: Some(String::new()),
                counter: Some(String::new()),
            })
            .collect(),
    }
}

/// `ip:port/proto` of a rule, for messages.
pub fn describe(e: &LbEntry) -> String {
    let a = &e.service_arguments;
    let mut s = format!("{}:{}/{}", a.external_ip, a.port, a.protocol);
    if let Some(n) = a.name.as_deref().filter(|n| !n.is_empty()) {
        s.push_str(&format!(" ({n})"));
    }
    s
}

fn format_of(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => Format::Yaml,
        _ => Format::Json,
    }
}

/// Reads and validates a rule file. Nothing is sent when this fails.
pub fn read_rules(path: &Path) -> Result<LbList, FileError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| FileError::Read {
        path: shown.clone(),
        source,
    })?;
    let invalid = |message: String| FileError::Invalid {
        path: shown.clone(),
        message,
    };
    let format = format_of(path);
    let list: LbList = match bare_rule(&text, format) {
        true => LbList {
            lb_attr: vec![
                decode::<LbEntry>(&text, format, "").map_err(|e| invalid(e.to_string()))?,
            ],
        },
        false => decode(&text, format, "").map_err(|e| invalid(e.to_string()))?,
    };
    if list.lb_attr.is_empty() {
        return Err(invalid(
            "no rules (expected {\"lbAttr\":[...]} or one rule)".into(),
        ));
    }
    LbConfig::from_wire(&list, &FILE_LIMITS).map_err(|e| invalid(e.to_string()))?;
    Ok(list)
}

/// True when the text is one rule (`serviceArguments` at the top) rather
/// than a list. Unparsable text is left to the list decoder to report.
fn bare_rule(text: &[u8], format: Format) -> bool {
    let value: Option<serde_json::Value> = match format {
        Format::Json => serde_json::from_slice(text).ok(),
        Format::Yaml => serde_norway::from_slice(text).ok(),
    };
    value
        .as_ref()
        .and_then(serde_json::Value::as_object)
        .is_some_and(|m| {
            m.keys().any(|k| k.eq_ignore_ascii_case("serviceArguments"))
                && !m.keys().any(|k| k.eq_ignore_ascii_case("lbAttr"))
        })
}

/// Writes `list` as indented JSON to `path`, atomically (temporary file,
/// fsync, rename).
pub fn write_rules(path: &Path, list: &LbList) -> Result<(), FileError> {
    let shown = path.display().to_string();
    let werr = |source| FileError::Write {
        path: shown.clone(),
        source,
    };
    let mut text = serde_json::to_vec_pretty(list).map_err(|e| werr(std::io::Error::other(e)))?;
    text.push(b'\n');
    let name = path
        .file_name()
        .ok_or_else(|| werr(std::io::Error::other("not a file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".floatctl-{}.tmp", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::cli::{EndpointArg, Mode, Proto, Sel};

    fn create() -> CreateLb {
        CreateLb {
            external_ip: "13.208.10.20".parse().unwrap(),
            private_ip: None,
            port: 55002,
            protocol: Proto::Tcp,
            sel: Sel::Rr,
            mode: Mode::Fullnat,
            endpoints: vec![EndpointArg {
                ip: "192.168.218.101".parse().unwrap(),
                port: 32403,
                weight: 1,
            }],
            name: Some("default_nginx-lb1:llb-inst0".into()),
            inactive_timeout: 1800,
            allowed_sources: Vec::new(),
        }
    }

    #[test]
    fn create_builds_kube_loxilbs_body() {
        let body = serde_json::to_value(entry_from(&create())).unwrap();
        let want = serde_json::json!({
            "serviceArguments": {
                "externalIP": "13.208.10.20", "privateIP": "", "port": 55002,
                "protocol": "tcp", "sel": 0, "mode": 2, "bgp": false, "monitor": false,
                "inactiveTimeOut": 1800, "managed": false, "probetype": "", "probeport": 0,
                "probereq": "", "proberesp": "", "name": "default_nginx-lb1:llb-inst0"
            },
            "secondaryIPs": [], "allowedSources": [],
            "endpoints": [{"endpointIP": "192.168.218.101", "targetPort": 32403,
                           "weight": 1, "state": "", "counter": ""}]
        });
        assert_eq!(body, want);
        // ... and it is valid for the agent's own validation.
        let list = LbList {
            lb_attr: vec![entry_from(&create())],
        };
        LbConfig::from_wire(&list, &FILE_LIMITS).unwrap();
    }

    /// A directory of one test's files, removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("floatctl-lb-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn files_are_lists_or_one_rule_in_json_or_yaml() {
        let dir = Scratch::new("forms");
        let one = r#"{"serviceArguments":{"externalIP":"1.2.3.4","port":80,"mode":2},
                      "endpoints":[{"endpointIP":"10.0.0.1","targetPort":8080}]}"#;
        assert_eq!(
            read_rules(&dir.file("one.json", one))
                .unwrap()
                .lb_attr
                .len(),
            1
        );
        let yaml = "lbAttr:\n  - serviceArguments: {externalIP: 1.2.3.4, port: 80, mode: 2}\n    endpoints: [{endpointIP: 10.0.0.1, targetPort: 8080}]\n  - serviceArguments: {externalIP: 1.2.3.5, port: 80, mode: 2}\n    endpoints: [{endpointIP: 10.0.0.2, targetPort: 80}]\n";
        assert_eq!(
            read_rules(&dir.file("two.yaml", yaml))
                .unwrap()
                .lb_attr
                .len(),
            2
        );
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_entry_and_field() {
        let dir = Scratch::new("bad");
        let bad = r#"{"lbAttr":[
            {"serviceArguments":{"externalIP":"1.2.3.4","port":80,"mode":2},
             "endpoints":[{"endpointIP":"10.0.0.1","targetPort":8080}]},
            {"serviceArguments":{"externalIP":"1.2.3.5","port":80,"mode":2},
             "endpoints":[{"endpointIP":"10.0.0.1","targetPort":8080,"weight":0}]}]}"#;
        let err = read_rules(&dir.file("bad.json", bad))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lbAttr[1].endpoints[0].weight = 0"), "{err}");
        let err = read_rules(&dir.file("empty.json", r#"{"lbAttr":[]}"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no rules"), "{err}");
        let err = read_rules(&dir.file("syntax.json", "{"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("syntax.json") && err.contains("not valid JSON"),
            "{err}"
        );
        let err = read_rules(Path::new("/nonexistent/floatctl.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read /nonexistent/floatctl.json"),
            "{err}"
        );
    }

    #[test]
    fn save_writes_what_apply_reads() {
        let list = LbList {
            lb_attr: vec![entry_from(&create())],
        };
        let dir = Scratch::new("save");
        let path = dir.file("saved.json", "old contents");
        write_rules(&path, &list).unwrap();
        assert_eq!(read_rules(&path).unwrap(), list);
        let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
