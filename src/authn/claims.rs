//! Local re-checks of an introspection answer. Hydra already says `active`;
//! we still check time bounds (a clock or cache may be stale), the token's
//! kind, and optionally issuer and audience, because an active token from the
//! wrong issuer or for another API must not pass.

use super::introspection::Introspection;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimFailure {
    Inactive,
    Expired,
    NotYetValid,
    WrongTokenUse(String),
    IssuerNotAllowed,
    AudienceMismatch,
    /// JWT mode: not a well-formed JWS, or unusable claims.
    MalformedJwt,
    /// JWT mode: `alg` not in the allow-list (or not the key's).
    AlgorithmNotAllowed,
    /// JWT mode: no key in the JWKS with the token's `kid`.
    UnknownKey,
    /// JWT mode: the signature does not verify.
    BadSignature,
    /// JWT mode: no access-token evidence (`typ`, `client_id`/`scp`), or
    /// ID-token claims (`nonce`, `at_hash`): e.g. an ID token.
    NotAnAccessToken,
}

impl ClaimFailure {
    /// Stable label for logs, metrics and `error_description`.
    pub fn label(&self) -> &'static str {
        match self {
            ClaimFailure::Inactive => "inactive",
            ClaimFailure::Expired => "expired",
            ClaimFailure::NotYetValid => "not_yet_valid",
            ClaimFailure::WrongTokenUse(_) => "wrong_token_use",
            ClaimFailure::IssuerNotAllowed => "issuer_not_allowed",
            ClaimFailure::AudienceMismatch => "audience_mismatch",
            ClaimFailure::MalformedJwt => "malformed_jwt",
            ClaimFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            ClaimFailure::UnknownKey => "unknown_key",
            ClaimFailure::BadSignature => "bad_signature",
            ClaimFailure::NotAnAccessToken => "not_an_access_token",
        }
    }
}

impl fmt::Display for ClaimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimFailure::Inactive => f.write_str("the token is not active (unknown, expired or revoked)"),
            ClaimFailure::Expired => f.write_str("the token has expired"),
            ClaimFailure::NotYetValid => f.write_str("the token is not valid yet"),
            ClaimFailure::WrongTokenUse(u) => write!(f, "the token is a {u}, not an access_token"),
            ClaimFailure::IssuerNotAllowed => f.write_str("the token was issued by an issuer that is not allowed"),
            ClaimFailure::AudienceMismatch => f.write_str("the token is not meant for this audience"),
            ClaimFailure::MalformedJwt => f.write_str("the token is not a well-formed JWT"),
            ClaimFailure::AlgorithmNotAllowed => f.write_str("the token's signing algorithm is not allowed"),
            ClaimFailure::UnknownKey => f.write_str("the token was signed with an unknown key"),
            ClaimFailure::BadSignature => f.write_str("the token's signature is invalid"),
            ClaimFailure::NotAnAccessToken => f.write_str("the token is not an access token"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClaimChecks {
    pub leeway_s: i64,
    pub allowed_issuers: Vec<String>,
    pub required_audience: Vec<String>,
}

impl ClaimChecks {
    /// Both verifiers (introspection and JWT) apply the `[introspection]` claim policy.
    pub fn from_config(cfg: &crate::authn::config::IntrospectionConfig) -> ClaimChecks {
        ClaimChecks {
            leeway_s: i64::try_from(cfg.leeway_s).unwrap_or(i64::MAX),
            allowed_issuers: cfg.allowed_issuers.clone(),
            required_audience: cfg.required_audience.clone(),
        }
    }

    /// The checks an accepted identity passed, one line, for explanations:
    /// says which checks ran and which the config leaves off.
    pub fn describe(&self, i: &super::Identity, now_unix: i64) -> String {
        let how = if i.verified_locally {
            "signature ok (JWT verified locally)"
        } else {
            "active ok (introspected)"
        };
        let exp = match i.expires_at {
            Some(exp) => format!(
                "exp ok (expires in {} s, leeway {} s)",
                exp.saturating_sub(now_unix),
                self.leeway_s
            ),
            None => "exp absent (no expiry to check)".to_owned(),
        };
        let token_use = match i.token_use.as_deref() {
            Some(u) => format!("token_use {u:?} ok"),
            None => "token_use absent (allowed)".to_owned(),
        };
        let iss = match (i.issuer.as_deref(), self.allowed_issuers.is_empty()) {
            (iss, true) => format!("iss {iss:?} not checked (allowed_issuers is empty)"),
            (iss, false) => format!("iss {iss:?} in allowed_issuers"),
        };
        let aud = if self.required_audience.is_empty() {
            format!("aud {:?} not checked (required_audience is empty)", i.audience)
        } else {
            format!("aud {:?} overlaps required_audience", i.audience)
        };
        format!("{how}; {exp}; {token_use}; {iss}; {aud}")
    }

    /// First failing check, in the order a human would ask them.
    pub fn check(&self, i: &Introspection, now_unix: i64) -> Result<(), ClaimFailure> {
        if !i.active {
            return Err(ClaimFailure::Inactive);
        }
        if let Some(exp) = i.exp {
            if now_unix > exp.saturating_add(self.leeway_s) {
                return Err(ClaimFailure::Expired);
            }
        }
        if let Some(nbf) = i.nbf {
            if now_unix.saturating_add(self.leeway_s) < nbf {
                return Err(ClaimFailure::NotYetValid);
            }
        }
        if let Some(use_) = &i.token_use {
            if use_ != "access_token" {
                return Err(ClaimFailure::WrongTokenUse(use_.clone()));
            }
        }
        // RFC 7662's token_type is a type hint ("Bearer"); some servers put
        // the token's kind there. A refresh or ID token is never an allow.
        if let Some(t) = &i.token_type {
            let t = t.to_ascii_lowercase();
            if t.contains("refresh") || t.contains("id_token") || t.contains("id-token") {
                return Err(ClaimFailure::WrongTokenUse(t));
            }
        }
        if !self.allowed_issuers.is_empty() && !i.iss.as_ref().is_some_and(|iss| self.allowed_issuers.contains(iss)) {
            return Err(ClaimFailure::IssuerNotAllowed);
        }
        if !self.required_audience.is_empty() && !i.aud.iter().any(|a| self.required_audience.contains(a)) {
            return Err(ClaimFailure::AudienceMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> Introspection {
        Introspection {
            active: true,
            exp: Some(1_000),
            nbf: Some(500),
            iss: Some("https://issuer".into()),
            aud: vec!["api".into()],
            token_use: Some("access_token".into()),
            ..Default::default()
        }
    }

    #[test]
    fn describe_says_which_checks_ran() {
        let id = crate::authn::Identity {
            issuer: Some("https://issuer".into()),
            expires_at: Some(1_000),
            ..Default::default()
        };
        let off = ClaimChecks::default().describe(&id, 900);
        assert!(off.contains("active ok (introspected)"), "{off}");
        assert!(off.contains("exp ok (expires in 100 s"), "{off}");
        assert!(off.contains("iss Some(\"https://issuer\") not checked"), "{off}");
        assert!(off.contains("aud [] not checked"), "{off}");
        let on = ClaimChecks {
            allowed_issuers: vec!["https://issuer".into()],
            required_audience: vec!["api".into()],
            ..Default::default()
        }
        .describe(&id, 900);
        assert!(
            on.contains("in allowed_issuers") && on.contains("overlaps required_audience"),
            "{on}"
        );
    }

    #[test]
    fn active_in_window_passes() {
        assert_eq!(ClaimChecks::default().check(&active(), 700), Ok(()));
    }

    #[test]
    fn each_failure_is_detected() {
        let c = ClaimChecks {
            leeway_s: 5,
            ..Default::default()
        };
        assert_eq!(c.check(&Introspection::default(), 700), Err(ClaimFailure::Inactive));
        assert_eq!(c.check(&active(), 1_005), Ok(()), "within leeway");
        assert_eq!(c.check(&active(), 1_006), Err(ClaimFailure::Expired));
        assert_eq!(c.check(&active(), 495), Ok(()), "within leeway");
        assert_eq!(c.check(&active(), 494), Err(ClaimFailure::NotYetValid));
        let refresh = Introspection {
            token_use: Some("refresh_token".into()),
            ..active()
        };
        assert_eq!(
            c.check(&refresh, 700),
            Err(ClaimFailure::WrongTokenUse("refresh_token".into()))
        );
        for kind in [
            "refresh_token",
            "Refresh_Token",
            "urn:ietf:params:oauth:token-type:refresh_token",
            "urn:ietf:params:oauth:token-type:id_token",
        ] {
            let typed = Introspection {
                token_use: None,
                token_type: Some(kind.into()),
                ..active()
            };
            assert!(
                matches!(c.check(&typed, 700), Err(ClaimFailure::WrongTokenUse(_))),
                "{kind}"
            );
        }
        for fine in ["Bearer", "bearer", "access_token", "N_A"] {
            let typed = Introspection {
                token_type: Some(fine.into()),
                ..active()
            };
            assert_eq!(c.check(&typed, 700), Ok(()), "{fine}");
        }
    }

    #[test]
    fn issuer_and_audience_only_when_configured() {
        let c = ClaimChecks {
            allowed_issuers: vec!["https://other".into()],
            ..Default::default()
        };
        assert_eq!(c.check(&active(), 700), Err(ClaimFailure::IssuerNotAllowed));
        let no_iss = Introspection { iss: None, ..active() };
        assert_eq!(c.check(&no_iss, 700), Err(ClaimFailure::IssuerNotAllowed));
        let c = ClaimChecks {
            required_audience: vec!["billing".into(), "api".into()],
            ..Default::default()
        };
        assert_eq!(c.check(&active(), 700), Ok(()));
        let c = ClaimChecks {
            required_audience: vec!["billing".into()],
            ..Default::default()
        };
        assert_eq!(c.check(&active(), 700), Err(ClaimFailure::AudienceMismatch));
    }
}
