//! Per-rule claim conditions: `audiences`, `issuers`, `clients` and
//! `claims = { "ext.tenant" = ["acme"] }`, each an allow-list that one of
//! the token's values must be on. A token that fails one is 403
//! `claim_mismatch`, naming the claim, never its value.

use crate::authn::Identity;
use serde_json::Value;

/// One condition: the value at `path` (or, for a list, one of its items)
/// must be one of `accepted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub path: String,
    pub accepted: Vec<String>,
}

/// A rule's conditions, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions(Vec<Condition>);

/// The outcome of one condition, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Met,
    /// The token carries no such claim.
    Missing,
    /// It does, with no accepted value.
    NotAccepted,
}

impl Conditions {
    pub fn from_rule(rule: &crate::decision::config::RuleConfig) -> Conditions {
        let mut all = Vec::new();
        for (path, accepted) in [
            ("aud", &rule.audiences),
            ("iss", &rule.issuers),
            ("client_id", &rule.clients),
        ] {
            if !accepted.is_empty() {
                all.push(Condition {
                    path: path.to_owned(),
                    accepted: accepted.clone(),
                });
            }
        }
        all.extend(rule.claims.iter().map(|(path, accepted)| Condition {
            path: path.clone(),
            accepted: accepted.clone(),
        }));
        Conditions(all)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Condition> {
        self.0.iter()
    }

    /// The first condition the identity fails, if any.
    pub fn first_unmet(&self, identity: &Identity) -> Option<&Condition> {
        self.0.iter().find(|c| c.check(identity) != Check::Met)
    }
}

impl Condition {
    pub fn check(&self, identity: &Identity) -> Check {
        let Some(value) = identity.claim(&self.path) else {
            return Check::Missing;
        };
        let accepted = |v: &Value| match v {
            Value::String(s) => self.accepted.iter().any(|a| a == s),
            Value::Number(_) | Value::Bool(_) => {
                let text = v.to_string();
                self.accepted.contains(&text)
            }
            _ => false,
        };
        let met = match &value {
            Value::Array(items) => items.iter().any(accepted),
            other => accepted(other),
        };
        if met {
            Check::Met
        } else {
            Check::NotAccepted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::config::RuleConfig;
    use std::sync::Arc;

    fn identity() -> Identity {
        Identity {
            client_id: Some("reader".into()),
            issuer: Some("https://hydra/".into()),
            audience: vec!["api".into(), "web".into()].into(),
            ext: Some(Arc::new(
                serde_json::json!({"tenant": "acme", "tier": 2, "groups": ["ops"]}),
            )),
            ..Default::default()
        }
    }

    fn rule(f: impl FnOnce(&mut RuleConfig)) -> Conditions {
        let mut r = RuleConfig::default();
        f(&mut r);
        Conditions::from_rule(&r)
    }

    #[test]
    fn every_condition_must_hold() {
        let i = identity();
        assert!(rule(|_| {}).first_unmet(&i).is_none(), "no conditions");
        let c = rule(|r| {
            r.audiences = vec!["api".into()];
            r.issuers = vec!["https://hydra/".into()];
            r.clients = vec!["reader".into(), "writer".into()];
            r.claims.insert("ext.tenant".into(), vec!["acme".into()]);
            r.claims.insert("ext.tier".into(), vec!["2".into()]);
            r.claims.insert("ext.groups".into(), vec!["ops".into()]);
        });
        assert_eq!(c.first_unmet(&i), None);
        let c = rule(|r| {
            r.claims
                .insert("ext.tenant".into(), vec!["globex".into()])
                .map(|_| ())
                .unwrap_or(())
        });
        assert_eq!(c.first_unmet(&i).map(|c| c.path.as_str()), Some("ext.tenant"));
        let c = rule(|r| r.audiences = vec!["admin".into()]);
        assert_eq!(c.iter().next().map(|c| c.check(&i)), Some(Check::NotAccepted));
        let c = rule(|r| {
            r.claims.insert("ext.region".into(), vec!["eu".into()]);
        });
        assert_eq!(c.iter().next().map(|c| c.check(&i)), Some(Check::Missing));
    }
}
