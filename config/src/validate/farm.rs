//! The `[farm]` table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::{check_interface, check_name, integer, invalid, name_rule, required, unicast};
use crate::keyword::Keyword;
use crate::locate::Source;
use crate::raw::{RawFarm, RawInt};
use crate::{ConfigError, Farm, MacMode, ValueError};

/// What the hash key may be.
const HASH_KEY: &str =
    "exactly 32 hex digits (a 128-bit secret, such as the output of `openssl rand -hex 16`)";

pub(super) fn check_farm(
    farm: &Spanned<RawFarm>,
    source: &Source<'_>,
) -> Result<Farm, ConfigError> {
    let raw = farm.get_ref();
    let name = required(&raw.name, farm, "farm.name", &name_rule(), source)?;
    let name = check_name(name, "farm.name", source)?;
    let vips = required(
        &raw.vip,
        farm,
        "farm.vip",
        &format!("an array of {}", vip_count()),
        source,
    )?;
    let vips = check_vips(vips, source)?;
    let interface = match &raw.interface {
        Some(interface) => Some(check_interface(interface, "farm.interface", source)?),
        None => None,
    };
    let buckets = match &raw.buckets {
        Some(buckets) => check_buckets(buckets, source)?,
        None => Farm::DEFAULT_BUCKETS,
    };
    let hash_key = required(&raw.hash_key, farm, "farm.hash_key", HASH_KEY, source)?;
    let hash_key = check_hash_key(&hash_key.get_ref().0)
        .map_err(|error| invalid(source, hash_key.span(), "farm.hash_key", error))?;
    let port = match &raw.port {
        Some(port) => integer(port, 1..=i128::from(u16::MAX), "farm.port", source)?,
        None => Farm::DEFAULT_PORT,
    };
    let announce_interval_s = match &raw.announce_interval_s {
        Some(interval) => integer(
            interval,
            0..=i128::from(Farm::MAX_ANNOUNCE_INTERVAL_S),
            "farm.announce_interval_s",
            source,
        )?,
        None => Farm::DEFAULT_ANNOUNCE_INTERVAL_S,
    };
    let auth_key_file = match &raw.auth_key_file {
        Some(path) if path.get_ref().is_empty() => {
            let error = ValueError::new("the path is empty", "the path of the heartbeat key file");
            return Err(invalid(source, path.span(), "farm.auth_key_file", error));
        }
        Some(path) => PathBuf::from(path.get_ref()),
        None => PathBuf::from(Farm::DEFAULT_AUTH_KEY_FILE),
    };
    let mac = match &raw.mac {
        Some(mac) => mac.get_ref().parse::<MacMode>().map_err(|error| {
            let error = error.suggesting(mac.get_ref(), MacMode::NAMES);
            invalid(source, mac.span(), "farm.mac", error)
        })?,
        None => MacMode::default(),
    };
    Ok(Farm {
        name,
        vips,
        interface,
        buckets,
        hash_key,
        port,
        announce_interval_s,
        auth_key_file,
        mac,
    })
}

/// How many VIPs a farm may have: "1 to 16 unicast IP addresses".
fn vip_count() -> String {
    format!("1 to {} unicast IP addresses", Farm::MAX_VIPS)
}

fn check_vips(
    vips: &Spanned<Vec<Spanned<String>>>,
    source: &Source<'_>,
) -> Result<Vec<IpAddr>, ConfigError> {
    let list = vips.get_ref();
    if list.is_empty() {
        let error = ValueError::new("no VIP", vip_count());
        return Err(invalid(source, vips.span(), "farm.vip", error));
    }
    if let Some(extra) = list.get(Farm::MAX_VIPS) {
        let error = ValueError::new(
            format!("{} VIPs are too many", list.len()),
            format!("at most {} VIPs", Farm::MAX_VIPS),
        );
        return Err(invalid(
            source,
            extra.span(),
            &format!("farm.vip[{}]", Farm::MAX_VIPS),
            error,
        ));
    }
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    let mut addresses = Vec::with_capacity(list.len());
    for (index, vip) in list.iter().enumerate() {
        let key = format!("farm.vip[{index}]");
        let address =
            unicast(vip.get_ref()).map_err(|error| invalid(source, vip.span(), &key, error))?;
        if let Some(first) = seen.insert(address, index) {
            let error = ValueError::new(
                format!("`{address}` is already farm.vip[{first}]"),
                "every VIP once",
            );
            return Err(invalid(source, vip.span(), &key, error));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

fn check_buckets(buckets: &Spanned<RawInt>, source: &Source<'_>) -> Result<u32, ConfigError> {
    let count = buckets.get_ref().0;
    let expected = format!(
        "a power of two from {} to {}",
        Farm::MIN_BUCKETS,
        Farm::MAX_BUCKETS
    );
    let problem = match u32::try_from(count) {
        Ok(count) if !(Farm::MIN_BUCKETS..=Farm::MAX_BUCKETS).contains(&count) => "is out of range",
        Ok(count) if !count.is_power_of_two() => "is not a power of two",
        Ok(count) => return Ok(count),
        Err(_) => "is out of range",
    };
    let error = ValueError::new(format!("{count} {problem}"), expected);
    Err(invalid(source, buckets.span(), "farm.buckets", error))
}

/// The 16 bytes of the hash key. The key is a secret, so messages never quote it.
fn check_hash_key(text: &str) -> Result<[u8; 16], ValueError> {
    if let Some((index, bad)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(ValueError::new(
            format!(
                "character {} of the key, {bad:?}, is not a hex digit",
                index + 1
            ),
            HASH_KEY,
        ));
    }
    let mut key = [0; 16];
    hex::decode_to_slice(text, &mut key).map_err(|_| {
        let digits = text.len();
        let amount = if digits < 32 { "too few" } else { "too many" };
        ValueError::new(
            format!("the key has {digits} hex digits, {amount}"),
            HASH_KEY,
        )
    })?;
    Ok(key)
}
