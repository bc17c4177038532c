//! Editing a warden file in place (for `warden approve`): the document is changed
//! through kdl's format-preserving tree, so every comment and every line not touched
//! stays byte for byte as it was.

use kdl::{KdlDocument, KdlNode};

/// Append `rule` (one KDL node, such as `allow "x.example" port=443 reason="..."`) to the
/// `egress` block of sandbox `sandbox` in `text`, creating the block if the sandbox has
/// none. Errors name what was not found.
pub fn add_egress_rule(text: &str, sandbox: &str, rule: &str) -> Result<String, String> {
    insert_egress_rule(text, sandbox, rule, Place::Last)
}

/// Where a new rule goes among a sandbox's egress rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Before every rule: it decides before the rules that follow (allow rules are
    /// tried in order; deny rules win wherever they are).
    First,
    /// After the last rule, before the inline tests.
    Last,
}

/// [`add_egress_rule`] with a choice of [`Place`].
pub fn insert_egress_rule(
    text: &str,
    sandbox: &str,
    rule: &str,
    place: Place,
) -> Result<String, String> {
    let mut doc = KdlDocument::parse_v2(text).map_err(|_| "the file does not parse".to_string())?;
    let rule_node = KdlNode::parse(rule).map_err(|_| format!("`{rule}` is not a KDL node"))?;
    let sb = sandbox_mut(&mut doc, sandbox)?;
    let sb_indent = indent_of(sb);
    let children = sb.ensure_children();
    let child_indent = children
        .nodes()
        .first()
        .map(indent_of)
        .unwrap_or_else(|| format!("{sb_indent}    "));
    let has_egress = children
        .nodes()
        .iter()
        .any(|n| n.name().value() == "egress");
    if !has_egress {
        let mut eg = KdlNode::new("egress");
        eg.set_children(KdlDocument::new());
        set_line(&mut eg, &child_indent);
        children.nodes_mut().push(eg);
        close_block(children, &sb_indent);
    }
    let eg = children
        .nodes_mut()
        .iter_mut()
        .rfind(|n| n.name().value() == "egress")
        .ok_or("no egress block")?;
    // New rules go after the last rule, before the inline tests, or before all rules.
    let is_rule = |n: &KdlNode| n.name().value() != "test";
    insert_child(eg, rule_node, is_rule, place);
    Ok(doc.to_string())
}

/// The `sandbox NAME` node of the file.
fn sandbox_mut<'d>(doc: &'d mut KdlDocument, sandbox: &str) -> Result<&'d mut KdlNode, String> {
    doc.nodes_mut()
        .iter_mut()
        .find(|n| {
            n.name().value() == "sandbox"
                && n.entries().first().and_then(|e| e.value().as_string()) == Some(sandbox)
        })
        .ok_or_else(|| format!("sandbox `{sandbox}` is not declared in this file (a layout may declare it; change it there)"))
}

/// Inserts `node` into `block`'s children, indented like its siblings: first, or after
/// the last child that `kin` accepts (first when there is none).
fn insert_child(
    block: &mut KdlNode,
    mut node: KdlNode,
    kin: impl Fn(&KdlNode) -> bool,
    place: Place,
) {
    let outer = indent_of(block);
    let children = block.ensure_children();
    let indent = children
        .nodes()
        .iter()
        .rfind(|n| kin(n))
        .or(children.nodes().first())
        .map(indent_of)
        .unwrap_or_else(|| format!("{outer}    "));
    set_line(&mut node, &indent);
    let at = match place {
        Place::First => 0,
        Place::Last => children
            .nodes()
            .iter()
            .rposition(&kin)
            .map(|i| i + 1)
            .unwrap_or(0),
    };
    children.nodes_mut().insert(at, node);
    close_block(children, &outer);
}

/// In sandbox `sandbox`'s egress block, the `allow HOST port=PORT order=ORDER` rule loses
/// its `order=` and gets `reason=REASON`: one line of the file changes, and the
/// destination no longer waits for a human. Errors when no such rule is there.
pub fn approve_order_rule(
    text: &str,
    sandbox: &str,
    host: &str,
    port: u16,
    order: &str,
    reason: &str,
) -> Result<String, String> {
    let mut doc = KdlDocument::parse_v2(text).map_err(|_| "the file does not parse".to_string())?;
    let sb = sandbox_mut(&mut doc, sandbox)?;
    let rule = sb
        .children_mut()
        .as_mut()
        .and_then(|c| {
            c.nodes_mut()
                .iter_mut()
                .filter(|n| n.name().value() == "egress")
                .filter_map(|e| e.children_mut().as_mut())
                .flat_map(|c| c.nodes_mut().iter_mut())
                .find(|n| {
                    let port_of = |n: &KdlNode| {
                        n.get("port")
                            .and_then(|v| v.as_integer())
                            .map_or(443, |p| p as i64)
                    };
                    n.name().value() == "allow"
                        && n.entries().first().and_then(|e| e.value().as_string()) == Some(host)
                        && port_of(n) == i64::from(port)
                        && n.get("order").and_then(|v| v.as_string()) == Some(order)
                })
        })
        .ok_or_else(|| {
            format!(
                "no `allow \"{host}\" port={port} order=\"{order}\"` rule in sandbox `{sandbox}`"
            )
        })?;
    // By name, not through `KdlNode::remove`: a parsed name keeps its source form and
    // does not compare equal to a fresh one.
    let named = |rule: &KdlNode, key: &str| {
        rule.entries()
            .iter()
            .position(|e| e.name().is_some_and(|n| n.value() == key))
    };
    if let Some(i) = named(rule, "order") {
        rule.entries_mut().remove(i);
    }
    let entry = quoted_prop("reason", reason)?;
    match named(rule, "reason") {
        Some(i) => rule.entries_mut()[i] = entry,
        None => rule.entries_mut().push(entry),
    }
    Ok(doc.to_string())
}

/// Sets the autonomy of standing order `order` in `text` (`autonomy="auto"` or
/// `"ask"`...): one line changes when the file declares the order. When it does not (a
/// layout does), `fallback` (the order as declared there, one KDL node without
/// `autonomy`) is added to the file's `standing-orders` block with the new autonomy,
/// which replaces the layout's order; one line is added (the block is made if the file
/// has none).
pub fn set_order_autonomy(
    text: &str,
    order: &str,
    autonomy: &str,
    fallback: &str,
) -> Result<String, String> {
    let mut doc = KdlDocument::parse_v2(text).map_err(|_| "the file does not parse".to_string())?;
    let found = doc
        .nodes_mut()
        .iter_mut()
        .filter(|n| n.name().value() == "standing-orders")
        .filter_map(|n| n.children_mut().as_mut())
        .flat_map(|c| c.nodes_mut().iter_mut())
        .find(|n| {
            n.name().value() == "order"
                && n.entries().first().and_then(|e| e.value().as_string()) == Some(order)
        });
    let entry = quoted_prop("autonomy", autonomy)?;
    if let Some(node) = found {
        let at = node
            .entries()
            .iter()
            .position(|e| e.name().is_some_and(|n| n.value() == "autonomy"));
        match at {
            Some(i) => node.entries_mut()[i] = entry,
            None => node.entries_mut().push(entry),
        }
        return Ok(doc.to_string());
    }
    let mut node =
        KdlNode::parse(fallback).map_err(|_| format!("`{fallback}` is not a KDL node"))?;
    node.entries_mut().push(entry);
    let has_block = doc
        .nodes()
        .iter()
        .any(|n| n.name().value() == "standing-orders");
    if !has_block {
        let mut block = KdlNode::new("standing-orders");
        block.set_children(KdlDocument::new());
        let mut f = block.format().cloned().unwrap_or_default();
        f.leading = "\n".to_string();
        f.terminator = String::new();
        f.before_children = " ".to_string();
        block.set_format(f);
        doc.nodes_mut().push(block);
    }
    let block = doc
        .nodes_mut()
        .iter_mut()
        .rfind(|n| n.name().value() == "standing-orders")
        .ok_or("no standing-orders block")?;
    insert_child(block, node, |n| n.name().value() == "order", Place::Last);
    let mut out = doc.to_string();
    if !has_block && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// `key="value"`, always quoted, as the rest of a warden file is written.
fn quoted_prop(key: &str, value: &str) -> Result<kdl::KdlEntry, String> {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    let node = KdlNode::parse(&format!("x {key}=\"{escaped}\""))
        .map_err(|_| format!("cannot write {key}={value:?}"))?;
    node.entries()
        .first()
        .cloned()
        .ok_or_else(|| format!("cannot write {key}={value:?}"))
}

/// The indentation of a node: the whitespace after the last newline of its leading text.
fn indent_of(n: &KdlNode) -> String {
    let leading = n.format().map(|f| f.leading.as_str()).unwrap_or("");
    let last = leading.rsplit('\n').next().unwrap_or("");
    last.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

fn set_line(n: &mut KdlNode, indent: &str) {
    let mut f = n.format().cloned().unwrap_or_default();
    f.leading = indent.to_string();
    // kdl ends a node that has a block with a newline of its own.
    f.terminator = if n.children().is_some() {
        String::new()
    } else {
        "\n".to_string()
    };
    f.before_children = " ".to_string();
    n.set_format(f);
}

/// Make sure a block's closing brace sits on its own line at `indent`.
fn close_block(doc: &mut KdlDocument, indent: &str) {
    let fresh = doc.format().is_none();
    let mut f = doc.format().cloned().unwrap_or_default();
    if fresh {
        f.leading = "\n".to_string();
    }
    if f.trailing.trim().is_empty() {
        f.trailing = indent.to_string();
    } else if !f.trailing.ends_with(indent) {
        let comments = f.trailing.trim_end_matches([' ', '\t']).to_string();
        f.trailing = format!("{comments}{indent}");
    }
    doc.set_format(f);
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "// orders\nstanding-orders {\n    order \"deploy\" bounds=\"Staging first.\" autonomy=\"ask\" // keep\n    order \"read\" bounds=\"Anything.\"\n}\n";

    fn changed(a: &str, b: &str) -> Vec<String> {
        b.lines()
            .filter(|l| !a.lines().any(|o| o == *l))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn grant_and_revoke_change_one_line() {
        let granted = set_order_autonomy(FILE, "deploy", "auto", "").unwrap();
        assert_eq!(
            changed(FILE, &granted),
            vec!["    order \"deploy\" bounds=\"Staging first.\" autonomy=\"auto\" // keep"]
        );
        assert_eq!(granted.lines().count(), FILE.lines().count());
        let revoked = set_order_autonomy(&granted, "deploy", "ask", "").unwrap();
        assert_eq!(revoked, FILE);
        let read = set_order_autonomy(FILE, "read", "ask", "").unwrap();
        assert_eq!(
            changed(FILE, &read),
            vec!["    order \"read\" bounds=\"Anything.\" autonomy=\"ask\""]
        );
    }

    #[test]
    fn an_order_of_a_layout_is_overridden_in_the_file() {
        let text = "layout \"solo\"\n";
        let out = set_order_autonomy(
            text,
            "git-commit",
            "ask",
            "order \"git-commit\" bounds=\"Feature branches.\"",
        )
        .unwrap();
        assert_eq!(
            out,
            "layout \"solo\"\n\nstanding-orders {\n    order \"git-commit\" bounds=\"Feature branches.\" autonomy=\"ask\"\n}\n"
        );
        let again = set_order_autonomy(FILE, "new", "auto", "order \"new\" bounds=\"x\"").unwrap();
        assert_eq!(
            changed(FILE, &again),
            vec!["    order \"new\" bounds=\"x\" autonomy=\"auto\""]
        );
    }
}
