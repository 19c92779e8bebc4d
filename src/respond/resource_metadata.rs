//! RFC 9728 OAuth 2.0 Protected Resource Metadata: the document a client
//! (an MCP client, a new OAuth client) fetches to learn which authorization
//! server issues tokens for this API and which scopes exist, and the
//! `resource_metadata` parameter our 401 challenges point it to.

use serde::{Deserialize, Serialize};

/// `[resource_metadata]`: off unless `resource` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceMetadataConfig {
    /// The protected resource's identifier (an https URL without fragment),
    /// e.g. `https://api.example.com`.
    pub resource: Option<String>,
    /// Issuer URLs of the authorization servers (Hydra's public URL).
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    /// Human-readable name, shown by clients.
    pub resource_name: Option<String>,
    /// Where developers read about the API.
    pub resource_documentation: Option<String>,
    /// The URL clients fetch the document from, named in 401 challenges.
    /// Default (RFC 9728 §3.1): `/.well-known/oauth-protected-resource`
    /// inserted between the resource's host and path.
    pub metadata_url: Option<String>,
}

/// Served on `server.http_addr`; route this path there from the proxy.
pub const WELL_KNOWN_PATH: &str = "/.well-known/oauth-protected-resource";

impl ResourceMetadataConfig {
    pub fn enabled(&self) -> bool {
        self.resource.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        let Some(resource) = &self.resource else {
            return Ok(());
        };
        // `Url::parse` drops CR, LF and tabs silently; these go into a
        // header and a JSON document as written, so the text itself is checked.
        for s in std::iter::once(resource)
            .chain(&self.authorization_servers)
            .chain(&self.metadata_url)
        {
            if !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{s:?}: a URL here is visible ASCII (no spaces or control characters)"
                ));
            }
        }
        let url = reqwest::Url::parse(resource).map_err(|e| format!("resource: {e}"))?;
        if url.fragment().is_some() || !matches!(url.scheme(), "https" | "http") {
            return Err("resource must be an http(s) URL without a fragment (RFC 9728 §1.2)".into());
        }
        for s in self.authorization_servers.iter().chain(&self.metadata_url) {
            reqwest::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        }
        if let Some(bad) = self
            .scopes_supported
            .iter()
            .find(|s| !crate::decision::scopes::is_scope_token(s))
        {
            return Err(format!("scopes_supported: {bad:?} is not a scope token"));
        }
        // The URL goes into a quoted WWW-Authenticate parameter.
        if self.url().is_some_and(|u| u.contains(['"', '\\'])) {
            return Err("metadata_url must not contain '\"' or '\\'".into());
        }
        Ok(())
    }

    /// Where the document is published (None when off).
    pub fn url(&self) -> Option<String> {
        if let Some(u) = &self.metadata_url {
            return Some(u.clone());
        }
        let mut url = reqwest::Url::parse(self.resource.as_deref()?).ok()?;
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{WELL_KNOWN_PATH}{path}"));
        url.set_query(None);
        Some(url.to_string())
    }

    /// The JSON document (RFC 9728 §2).
    pub fn document(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "resource": self.resource,
            "bearer_methods_supported": ["header"],
        });
        if !self.authorization_servers.is_empty() {
            doc["authorization_servers"] = self.authorization_servers.clone().into();
        }
        if !self.scopes_supported.is_empty() {
            doc["scopes_supported"] = self.scopes_supported.clone().into();
        }
        if let Some(n) = &self.resource_name {
            doc["resource_name"] = n.clone().into();
        }
        if let Some(d) = &self.resource_documentation {
            doc["resource_documentation"] = d.clone().into();
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(resource: &str) -> ResourceMetadataConfig {
        ResourceMetadataConfig {
            resource: Some(resource.into()),
            authorization_servers: vec!["https://hydra.example.com/".into()],
            scopes_supported: vec!["read_date".into(), "post_echo".into()],
            ..Default::default()
        }
    }

    #[test]
    fn well_known_url_goes_between_host_and_path() {
        assert_eq!(
            cfg("https://api.example.com").url().as_deref(),
            Some("https://api.example.com/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            cfg("https://api.example.com/v1/").url().as_deref(),
            Some("https://api.example.com/.well-known/oauth-protected-resource/v1")
        );
        assert_eq!(ResourceMetadataConfig::default().url(), None);
    }

    #[test]
    fn document_has_the_rfc_9728_fields() {
        let d = cfg("https://api.example.com").document();
        assert_eq!(d["resource"], "https://api.example.com");
        assert_eq!(d["authorization_servers"][0], "https://hydra.example.com/");
        assert_eq!(d["scopes_supported"][1], "post_echo");
        assert_eq!(d["bearer_methods_supported"][0], "header");
    }

    #[test]
    fn validation() {
        assert!(cfg("https://api.example.com").validate().is_ok());
        assert!(ResourceMetadataConfig::default().validate().is_ok(), "off");
        assert!(cfg("https://api.example.com#frag").validate().is_err());
        assert!(cfg("not a url").validate().is_err());
        let mut c = cfg("https://api.example.com");
        c.scopes_supported.push("a b".into());
        assert!(c.validate().is_err());
        // Url::parse would drop the CR/LF and pass it; it goes into a header.
        for bad in ["https://api.example.com/\r\nx: y", "https://api.example.com/a\tb"] {
            let mut c = cfg("https://api.example.com");
            c.metadata_url = Some(bad.into());
            assert!(c.validate().is_err(), "{bad:?}");
            assert!(cfg(bad).validate().is_err(), "{bad:?}");
        }
        let mut c = cfg("https://api.example.com");
        c.scopes_supported.push("a\"b".into());
        assert!(c.validate().is_err());
    }
}
