//! Editing a warden file in place (for `warden approve`): the document is changed
//! through kdl's format-preserving tree, so every comment and every line not touched
//! stays byte for byte as it was.

use kdl::{KdlDocument, KdlNode};

/// Append `rule` (one KDL node, such as `allow "x.example" port=443 reason="..."`) to the
/// `egress` block of sandbox `sandbox` in `text`, creating the block if the sandbox has
/// none. Errors name what was not found.
pub fn add_egress_rule(text: &str, sandbox: &str, rule: &str) -> Result<String, String> {
    let mut doc = KdlDocument::parse_v2(text).map_err(|_| "the file does not parse".to_string())?;
    let rule_node = KdlNode::parse(rule).map_err(|_| format!("`{rule}` is not a KDL node"))?;
    let sb = doc
        .nodes_mut()
        .iter_mut()
        .find(|n| {
            n.name().value() == "sandbox"
                && n.entries().first().and_then(|e| e.value().as_string()) == Some(sandbox)
        })
        .ok_or_else(|| format!("sandbox `{sandbox}` is not declared in this file (a layout may declare it; add the rule there)"))?;
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
    let eg_indent = indent_of(eg);
    let rules = eg.ensure_children();
    let rule_indent = rules
        .nodes()
        .iter()
        .rfind(|n| n.name().value() != "test")
        .or(rules.nodes().first())
        .map(indent_of)
        .unwrap_or_else(|| format!("{eg_indent}    "));
    let mut node = rule_node;
    set_line(&mut node, &rule_indent);
    // New rules go after the last rule, before the inline tests.
    let at = rules
        .nodes()
        .iter()
        .rposition(|n| n.name().value() != "test")
        .map(|i| i + 1)
        .unwrap_or(0);
    rules.nodes_mut().insert(at, node);
    close_block(rules, &eg_indent);
    Ok(doc.to_string())
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
