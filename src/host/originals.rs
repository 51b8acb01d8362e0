//! The interface's settings as herd found them before it changed any, kept in a file of the
//! state directory so that they survive a herd that is killed: the next herd finds the file
//! and puts back what it says, not what the killed one had set.
//!
//! Each setting is recorded before herd changes it, and only the first time: a herd that finds
//! a record keeps its values. The file is replaced whole (written beside it and renamed), so a
//! crash leaves the old record or the new one, never a torn one. It goes once the settings are
//! back. A file herd cannot read as a record of the interface is an error naming it: restoring
//! from a guess could leave the interface as the killed herd had set it, without a word.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What herd changed on one interface, with the value each setting had before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Originals {
    /// The interface.
    pub interface: String,
    /// Whether promiscuous mode was on, once herd has set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promiscuous: Option<bool>,
    /// The IPv4 sysctls of the interface (`net/ipv4/conf/<interface>/<name>`) herd has set,
    /// with the values they had.
    #[serde(default)]
    pub ipv4_conf: BTreeMap<String, String>,
    /// The interface's own settings (`/sys/class/net/<interface>/<name>`) herd has set, with
    /// the values they had.
    #[serde(default)]
    pub device: BTreeMap<String, String>,
    /// The VIP addresses herd added: the interface had none of them.
    #[serde(default)]
    pub vips_added: Vec<IpAddr>,
}

impl Originals {
    /// A record of `interface` with nothing changed yet.
    pub fn new(interface: &str) -> Self {
        Self {
            interface: interface.to_owned(),
            ..Self::default()
        }
    }

    /// The record of `interface` kept in `path`, or `None` when there is no file.
    pub fn load(path: &Path, interface: &str) -> anyhow::Result<Option<Self>> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()))
            }
        };
        let corrupt = |why: String| {
            anyhow::anyhow!(
                "{}: not a record of {interface}'s original settings ({why}); check the \
                 interface's promiscuous mode, arp_announce, NAPI settings and addresses, then \
                 remove the file",
                path.display()
            )
        };
        let originals: Self =
            serde_json::from_str(&text).map_err(|error| corrupt(error.to_string()))?;
        if originals.interface != interface {
            return Err(corrupt(format!(
                "it names interface {:?}",
                originals.interface
            )));
        }
        // The names become paths under /proc/sys and /sys/class/net.
        if let Some(name) = originals
            .ipv4_conf
            .keys()
            .chain(originals.device.keys())
            .find(|name| !is_sysctl_name(name))
        {
            return Err(corrupt(format!("{name:?} is not a setting's name")));
        }
        Ok(Some(originals))
    }

    /// Keeps the record in `path`, replacing what was there; the directory is created if
    /// needed.
    pub fn store(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let temporary = temporary(path);
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&temporary)?;
            serde_json::to_writer_pretty(&mut file, self)?;
            writeln!(file)?;
            file.sync_all()?;
            fs::rename(&temporary, path)?;
            // The rename itself must reach the disk before herd changes the interface.
            fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    /// Removes the record kept in `path` (the settings are back); no file is no error.
    pub fn remove(path: &Path) -> anyhow::Result<()> {
        match fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// The record in words, for the log: `promiscuous off, arp_announce 0, VIPs added
    /// 198.18.1.100`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(on) = self.promiscuous {
            parts.push(format!("promiscuous {}", if on { "on" } else { "off" }));
        }
        for (name, value) in self.ipv4_conf.iter().chain(&self.device) {
            parts.push(format!("{name} {value}"));
        }
        if !self.vips_added.is_empty() {
            let vips: Vec<String> = self.vips_added.iter().map(IpAddr::to_string).collect();
            parts.push(format!("VIPs added {}", vips.join(" ")));
        }
        if parts.is_empty() {
            return "nothing changed".to_owned();
        }
        parts.join(", ")
    }
}

/// Where the record of `interface` for node `node` is kept in `state_dir`.
pub fn file(state_dir: &Path, node: &str, interface: &str) -> PathBuf {
    state_dir.join(format!("{node}.{interface}.originals.json"))
}

/// Where a new record is written before it replaces the old one.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Whether `name` can be a sysctl of `net/ipv4/conf/<interface>/`: lower-case letters,
/// digits and underscores.
fn is_sysctl_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("herd-originals-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn changed() -> Originals {
        Originals {
            interface: "eth0".to_owned(),
            promiscuous: Some(false),
            ipv4_conf: BTreeMap::from([("arp_announce".to_owned(), "0".to_owned())]),
            device: BTreeMap::from([("gro_flush_timeout".to_owned(), "0".to_owned())]),
            vips_added: vec!["198.18.1.100".parse().unwrap(), "fd00::64".parse().unwrap()],
        }
    }

    #[test]
    fn a_record_is_read_back_as_written_and_then_removed() {
        let dir = scratch("round");
        let path = file(&dir.join("state"), "alpha", "eth0");
        assert_eq!(Originals::load(&path, "eth0").unwrap(), None, "no file yet");
        let originals = changed();
        originals.store(&path).unwrap();
        assert_eq!(Originals::load(&path, "eth0").unwrap(), Some(originals));
        assert!(!temporary(&path).exists(), "renamed into place");

        let mut more = changed();
        more.vips_added.pop();
        more.store(&path).unwrap();
        assert_eq!(
            Originals::load(&path, "eth0").unwrap(),
            Some(more),
            "replaced whole"
        );

        Originals::remove(&path).unwrap();
        assert_eq!(Originals::load(&path, "eth0").unwrap(), None);
        Originals::remove(&path).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_file_is_named_for_the_node_and_the_interface() {
        assert_eq!(
            file(Path::new("/var/lib/herd"), "alpha", "eth0"),
            Path::new("/var/lib/herd/alpha.eth0.originals.json")
        );
    }

    #[test]
    fn a_record_says_what_it_holds() {
        assert_eq!(
            changed().describe(),
            "promiscuous off, arp_announce 0, gro_flush_timeout 0, VIPs added 198.18.1.100 fd00::64"
        );
        assert_eq!(Originals::new("eth0").describe(), "nothing changed");
    }

    #[test]
    fn a_file_that_is_not_a_record_of_the_interface_is_refused_by_name() {
        let dir = scratch("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let path = file(&dir, "alpha", "eth0");
        let refused = |text: &str| {
            fs::write(&path, text).unwrap();
            let error = Originals::load(&path, "eth0").unwrap_err();
            format!("{error:#}")
        };
        for (text, why) in [
            ("", "EOF while parsing"),
            (
                "{\"interface\": \"eth0\", \"promiscuous\": ",
                "EOF while parsing",
            ),
            ("[1, 2]", "invalid type"),
            ("{\"interface\": \"eth1\"}", "it names interface \"eth1\""),
            (
                "{\"interface\": \"eth0\", \"mtu\": 1500}",
                "unknown field `mtu`",
            ),
            (
                "{\"interface\": \"eth0\", \"vips_added\": [\"not an address\"]}",
                "invalid IP address",
            ),
            (
                "{\"interface\": \"eth0\", \"ipv4_conf\": {\"../../../../etc/passwd\": \"x\"}}",
                "\"../../../../etc/passwd\" is not a setting's name",
            ),
            (
                "{\"interface\": \"eth0\", \"device\": {\"../../../etc/passwd\": \"x\"}}",
                "\"../../../etc/passwd\" is not a setting's name",
            ),
        ] {
            let message = refused(text);
            assert!(
                message.starts_with(&format!(
                    "{}: not a record of eth0's original settings (",
                    path.display()
                )),
                "{text:?}: {message}"
            );
            assert!(message.contains(why), "{text:?}: {message}");
            assert!(message.ends_with("then remove the file"), "{message}");
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn settings_herd_has_not_changed_may_be_left_out() {
        let dir = scratch("partial");
        fs::create_dir_all(&dir).unwrap();
        let path = file(&dir, "alpha", "eth0");
        fs::write(&path, "{\"interface\": \"eth0\", \"promiscuous\": false}").unwrap();
        let originals = Originals::load(&path, "eth0").unwrap().unwrap();
        assert_eq!(originals.promiscuous, Some(false));
        assert!(originals.ipv4_conf.is_empty() && originals.vips_added.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
