//! The `[[node]]` entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use super::{check_interface, check_name, integer, invalid, name_rule, required, unicast, ADDRESS};
use crate::locate::Source;
use crate::raw::RawNode;
use crate::{ConfigError, Farm, FarmConfig, Node, ValueError};

pub(super) fn check_nodes(
    nodes: Option<&Spanned<Vec<Spanned<RawNode>>>>,
    farm: &Farm,
    source: &Source<'_>,
) -> Result<Vec<Node>, ConfigError> {
    let expected = format!("1 to {} [[node]] entries", FarmConfig::MAX_NODES);
    let Some(nodes) = nodes else {
        return Err(
            source.error_at_start("node", format!("the farm has no node; expected {expected}"))
        );
    };
    let list = nodes.get_ref();
    if list.is_empty() {
        let error = ValueError::new("the farm has no node", expected);
        return Err(invalid(source, nodes.span(), "node", error));
    }
    if let Some(extra) = list.get(FarmConfig::MAX_NODES) {
        let error = ValueError::new(format!("{} nodes are too many", list.len()), expected);
        return Err(invalid(
            source,
            extra.span(),
            &format!("node[{}]", FarmConfig::MAX_NODES),
            error,
        ));
    }
    let vips: HashMap<IpAddr, usize> = farm
        .vips
        .iter()
        .enumerate()
        .map(|(index, &vip)| (vip, index))
        .collect();
    let mut names: HashMap<String, Range<usize>> = HashMap::new();
    let mut addresses: HashMap<IpAddr, Range<usize>> = HashMap::new();
    let mut checked = Vec::with_capacity(list.len());
    for (index, node) in list.iter().enumerate() {
        let raw = node.get_ref();
        let key = |field: &str| format!("node[{index}].{field}");

        let name = required(&raw.name, node, &key("name"), &name_rule(), source)?;
        let name_span = name.span();
        let name = check_name(name, &key("name"), source)?;
        if let Some(first) = names.get(&name) {
            let error = ValueError::new(
                format!(
                    "`{name}` is already the name of a node (line {})",
                    source.line(first.clone())
                ),
                "a name no other node has",
            );
            return Err(invalid(source, name_span, &key("name"), error));
        }
        names.insert(name.clone(), name_span);

        let address = required(&raw.address, node, &key("address"), ADDRESS, source)?;
        let address_span = address.span();
        let address = unicast(address.get_ref())
            .map_err(|error| invalid(source, address_span.clone(), &key("address"), error))?;
        if let Some(first) = addresses.get(&address) {
            let error = ValueError::new(
                format!(
                    "`{address}` is already the address of a node (line {})",
                    source.line(first.clone())
                ),
                "an address no other node has",
            );
            return Err(invalid(source, address_span, &key("address"), error));
        }
        if let Some(vip) = vips.get(&address) {
            let error = ValueError::new(
                format!("`{address}` is also farm.vip[{vip}]"),
                "a node address that is not a VIP: every node holds the VIPs, so they cannot tell nodes apart",
            );
            return Err(invalid(source, address_span, &key("address"), error));
        }
        addresses.insert(address, address_span);

        let weight = match &raw.weight {
            Some(weight) => integer(
                weight,
                0..=i128::from(Node::MAX_WEIGHT),
                &key("weight"),
                source,
            )?,
            None => Node::DEFAULT_WEIGHT,
        };
        let interface = match &raw.interface {
            Some(interface) => Some(check_interface(interface, &key("interface"), source)?),
            None if farm.interface.is_none() => {
                return Err(source.error(
                    node.span(),
                    key("interface"),
                    format!(
                        "node `{name}` has no `interface` and [farm] sets no default; \
                         expected an `interface` key in this [[node]] entry or in [farm]"
                    ),
                ));
            }
            None => None,
        };
        checked.push(Node {
            name,
            address,
            weight,
            interface,
        });
    }
    Ok(checked)
}
