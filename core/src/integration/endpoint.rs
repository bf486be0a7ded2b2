//! Webhook endpoints: where integration events go, which routing keys they want, and the secret
//! their messages are signed with.
//!
//! An endpoint is created valid ([`EndpointDraft::validate`]): an absolute `http`/`https` URL
//! with a host, 1–64 filter patterns, a `whsec_` secret. Ids are `wh_` + a UUIDv7 in hex, so
//! they sort by creation time.

use serde::{Deserialize, Serialize};

use super::signing::{generate_secret, secret_key};
use crate::event::time::format_rfc3339_micros;
use crate::event::ValidationError;
use crate::routing::validate_pattern;

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// Most patterns in one filter.
pub const MAX_FILTER_PATTERNS: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// A registered endpoint, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub filter: Vec<String>,
    pub description: String,
    pub secret: String,
    pub enabled: bool,
    pub created_ns: u64,
}

impl Endpoint {
    /// The API's JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "url": self.url,
            "filter": self.filter,
            "description": self.description,
            "secret": self.secret,
            "enabled": self.enabled,
            "created_at": format_rfc3339_micros(self.created_ns),
        })
    }

    /// Applies a change (PATCH): each `Some` replaces the field. Validates the result.
    pub fn apply(&mut self, change: EndpointChange) -> Result<(), ValidationError> {
        let mut next = self.clone();
        if let Some(url) = change.url {
            next.url = url;
        }
        if let Some(filter) = change.filter {
            next.filter = filter;
        }
        if let Some(description) = change.description {
            next.description = description;
        }
        if let Some(enabled) = change.enabled {
            next.enabled = enabled;
        }
        validate_fields(&next.url, &next.filter, &next.description)?;
        *self = next;
        Ok(())
    }

    /// The URL's host and port (for the SSRF guard).
    pub fn host_and_port(&self) -> Result<(String, u16), ValidationError> {
        host_and_port(&self.url)
    }
}

/// A create request (`POST /v1/webhooks`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointDraft {
    pub url: Option<String>,
    pub filter: Option<Vec<String>>,
    pub description: Option<String>,
    pub secret: Option<String>,
}

/// A change request (`PATCH /v1/webhooks/{id}`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub filter: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

impl EndpointDraft {
    /// The endpoint this draft creates, with a new id (and secret, unless one was given).
    pub fn into_endpoint(self, now_ns: u64) -> Result<Endpoint, ValidationError> {
        let url = self.url.ok_or_else(|| ValidationError::new("url", "is required"))?;
        let filter = self.filter.ok_or_else(|| ValidationError::new("filter", "is required"))?;
        let description = self.description.unwrap_or_default();
        validate_fields(&url, &filter, &description)?;
        let secret = match self.secret {
            Some(secret) => {
                secret_key(&secret).map_err(|reason| ValidationError::new("secret", reason))?;
                secret
            }
            None => generate_secret(),
        };
        Ok(Endpoint {
            id: format!("wh_{}", uuid::Uuid::now_v7().simple()),
            url,
            filter,
            description,
            secret,
            enabled: true,
            created_ns: now_ns,
        })
    }
}

fn validate_fields(url: &str, filter: &[String], description: &str) -> Result<(), ValidationError> {
    host_and_port(url)?;
    if filter.is_empty() || filter.len() > MAX_FILTER_PATTERNS {
        return Err(ValidationError::new("filter", format!("must hold 1–{MAX_FILTER_PATTERNS} patterns")));
    }
    for (index, pattern) in filter.iter().enumerate() {
        validate_pattern(pattern)
            .map_err(|error| ValidationError::new(format!("filter[{index}]"), error.to_string()))?;
    }
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(ValidationError::new("description", format!("must be at most {MAX_DESCRIPTION_BYTES} bytes")));
    }
    Ok(())
}

/// Checks `url` is an absolute `http` or `https` URL with a host; returns the host (IPv6 without
/// brackets) and the port (the scheme's default when absent).
pub fn host_and_port(url: &str) -> Result<(String, u16), ValidationError> {
    let bad = |reason: &str| ValidationError::new("url", format!("`{url}` {reason}"));
    if url.len() > MAX_URL_BYTES {
        return Err(ValidationError::new("url", format!("must be at most {MAX_URL_BYTES} bytes")));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad("is not a valid URL"))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err(bad("must be an http:// or https:// URL")),
    };
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok((host.to_owned(), authority.port_u16().unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(url: &str, filter: &[&str]) -> EndpointDraft {
        EndpointDraft {
            url: Some(url.into()),
            filter: Some(filter.iter().map(|p| p.to_string()).collect()),
            ..EndpointDraft::default()
        }
    }

    #[test]
    fn a_valid_draft_becomes_an_endpoint_with_an_id_and_a_secret() {
        // Ids and secrets are generated; the URL's host and port are read.
        let endpoint = draft("https://example.com/hooks", &["task.*"]).into_endpoint(1).unwrap();
        assert!(endpoint.id.starts_with("wh_") && endpoint.secret.starts_with("whsec_"));
        assert!(endpoint.enabled);
        assert_eq!(endpoint.host_and_port().unwrap(), ("example.com".into(), 443));
        assert_eq!(host_and_port("http://[::1]:8080/x").unwrap(), ("::1".into(), 8080));
    }

    #[test]
    fn bad_urls_filters_and_secrets_name_their_field() {
        // Each rule's refusal names the field the API reports.
        let field = |d: EndpointDraft| d.into_endpoint(0).unwrap_err().field;
        assert_eq!(field(draft("ftp://example.com", &["a"])), "url");
        assert_eq!(field(draft("not a url", &["a"])), "url");
        assert_eq!(field(draft("/relative", &["a"])), "url");
        assert_eq!(field(draft("http://user:pw@example.com/", &["a"])), "url");
        assert_eq!(field(draft("http://example.com", &[])), "filter");
        assert_eq!(field(draft("http://example.com", &["a", "task.a*"])), "filter[1]");
        assert_eq!(field(draft("http://example.com", &["Task"])), "filter[0]");
        let with_secret = EndpointDraft { secret: Some("nope".into()), ..draft("http://e.com", &["a"]) };
        assert_eq!(field(with_secret), "secret");
        assert_eq!(field(EndpointDraft::default()), "url");
    }

    #[test]
    fn a_change_applies_only_when_the_result_is_valid() {
        // PATCH with a bad filter leaves the endpoint as it was.
        let mut endpoint = draft("http://example.com", &["a"]).into_endpoint(0).unwrap();
        let before = endpoint.clone();
        let bad = EndpointChange { filter: Some(vec!["A".into()]), enabled: Some(false), ..Default::default() };
        assert!(endpoint.apply(bad).is_err());
        assert_eq!(endpoint, before);
        endpoint.apply(EndpointChange { enabled: Some(false), ..Default::default() }).unwrap();
        assert!(!endpoint.enabled);
    }
}
