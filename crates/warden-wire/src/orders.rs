//! Standing orders: what the agent may do on its own and what needs a human first.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Autonomy {
    /// The agent acts on its own within the bounds.
    #[default]
    Auto,
    /// A human approves each action first.
    Ask,
    /// Never, whoever asks.
    Never,
}

impl Autonomy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Autonomy::Auto => "auto",
            Autonomy::Ask => "ask",
            Autonomy::Never => "never",
        }
    }
    pub fn parse(s: &str) -> Option<Autonomy> {
        match s {
            "auto" => Some(Autonomy::Auto),
            "ask" => Some(Autonomy::Ask),
            "never" => Some(Autonomy::Never),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrdersPolicy {
    pub version: u32,
    pub orders: Vec<Order>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub name: String,
    pub bounds: String,
    #[serde(rename = "override")]
    pub override_: Option<String>,
    pub autonomy: Autonomy,
}

impl OrdersPolicy {
    /// The autonomy for an action named by its order; an action no order covers needs a
    /// human first.
    pub fn autonomy(&self, order: &str) -> Autonomy {
        self.orders
            .iter()
            .find(|o| o.name == order)
            .map(|o| o.autonomy)
            .unwrap_or(Autonomy::Ask)
    }

    /// The Markdown table (Order | Bounds | Override | Autonomy) rendered for the agent.
    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = String::from(
            "# Standing orders\n\n| Order | Bounds | Override | Autonomy |\n|---|---|---|---|\n",
        );
        for o in &self.orders {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                cell(&o.name),
                cell(&o.bounds),
                cell(o.override_.as_deref().unwrap_or("")),
                o.autonomy.as_str()
            ));
        }
        out.push_str("\nAnything not listed here needs a human first.\n");
        out
    }
}
