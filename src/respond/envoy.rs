//! An [`Outcome`] as Envoy's `CheckResponse`: the gRPC status, identity
//! headers with overwrite semantics, `headers_to_remove`, the denied HTTP
//! response and dynamic metadata for Envoy's access log.

use super::envoy_wire::{tag, CheckResponse, Writer};
use super::{Responder, UpstreamHeaders};
use crate::authn::Identity;
use crate::decision::verdict::{Decision, DenyReason};
use crate::decision::Outcome;

/// The `CheckResponse` for an outcome.
pub fn check_response(responder: &Responder, o: &Outcome) -> CheckResponse {
    match &o.decision {
        Decision::Allow => {
            let identity = responder.identity_of(o);
            let h = responder.upstream_headers_for(o);
            responder.log_refused(&h, o);
            allowed(&h, identity, o.rule_id.as_deref())
        }
        Decision::Deny(reason) => denied(responder, reason),
    }
}

/// [`check_response`] from loose parts (benchmarks, tests).
pub fn render(
    responder: &Responder,
    decision: &Decision,
    identity: Option<&Identity>,
    rule_id: Option<&str>,
) -> CheckResponse {
    match decision {
        Decision::Allow => allowed(&responder.upstream_headers(identity), identity, rule_id),
        Decision::Deny(reason) => denied(responder, reason),
    }
}

/// OK, the identity headers set and the rest removed, and the dynamic
/// metadata for Envoy's access log.
fn allowed(h: &UpstreamHeaders<'_>, identity: Option<&Identity>, rule_id: Option<&str>) -> CheckResponse {
    let names = |list: &[std::borrow::Cow<'_, str>]| list.iter().map(|n| n.len() + 2).sum::<usize>();
    let mut w = Writer::with_capacity(
        128 + 2 * pairs_len(&h.set) + pairs_len(&h.claims) + names(&h.remove) + names(&h.query_remove),
    );
    // An OK status is an empty one.
    w.message(tag::STATUS, |_| {});
    w.message(tag::OK_RESPONSE, |w| {
        for (k, v) in &h.set {
            w.overwrite_header(tag::OK_HEADERS, k, v);
        }
        for name in &h.remove {
            w.string(tag::OK_HEADERS_TO_REMOVE, name);
        }
        for name in &h.query_remove {
            w.string(tag::OK_QUERY_PARAMETERS_TO_REMOVE, name);
        }
    });
    w.message(tag::DYNAMIC_METADATA, |w| {
        dynamic_metadata(w, identity, rule_id, &h.claims)
    });
    w.finish()
}

/// Room for name/value pairs in an answer: their text, and about eight
/// bytes each for field keys and lengths (one allocation for most answers).
fn pairs_len<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> usize {
    pairs.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 8).sum()
}

fn denied(responder: &Responder, reason: &DenyReason) -> CheckResponse {
    let headers = responder.deny_headers(reason);
    let body = Responder::problem_body(reason);
    let mut w = Writer::with_capacity(128 + body.len() + pairs_len(&headers));
    w.message(tag::STATUS, |w| {
        w.int32(tag::STATUS_CODE, grpc_code(reason) as i32);
        w.singular(tag::STATUS_MESSAGE, reason.label());
    });
    w.message(tag::DENIED_RESPONSE, |w| {
        w.message(tag::DENIED_STATUS, |w| {
            w.int32(tag::HTTP_STATUS_CODE, i32::from(reason.http_status()))
        });
        for (k, v) in &headers {
            w.overwrite_header(tag::DENIED_HEADERS, k, v);
        }
        w.singular(tag::DENIED_BODY, &body);
    });
    w.finish()
}

pub fn grpc_code(reason: &DenyReason) -> tonic::Code {
    match reason {
        DenyReason::InvalidRequest(_)
        | DenyReason::InvalidPath(_)
        | DenyReason::BadRequest(_)
        | DenyReason::TooLarge(_) => tonic::Code::InvalidArgument,
        DenyReason::MissingToken | DenyReason::InvalidToken(_) => tonic::Code::Unauthenticated,
        DenyReason::InsufficientScope(_) | DenyReason::NoRule | DenyReason::ClaimMismatch(_) => {
            tonic::Code::PermissionDenied
        }
        DenyReason::RouteMisconfigured(_) => tonic::Code::Internal,
        DenyReason::Unavailable(_) => tonic::Code::Unavailable,
    }
}

/// The `Struct`'s entries: the rule, who called and with which scopes, and
/// the claim headers' values keyed by header name (a nested struct) for
/// access logs and later filters.
fn dynamic_metadata<K: AsRef<str>, V: AsRef<str>>(
    w: &mut Writer,
    identity: Option<&Identity>,
    rule_id: Option<&str>,
    claims: &[(K, V)],
) {
    if let Some(id) = rule_id {
        w.string_entry("rule_id", id);
    }
    if let Some(i) = identity {
        // Envoy's access log prints metadata as it is: a value with CR/LF
        // could forge a line, so it is left out (non-ASCII stays).
        if let Some(c) = i.client_id.as_deref().filter(|c| super::is_metadata_text(c)) {
            w.string_entry("client_id", c);
        }
        if let Some(sub) = i.subject.as_deref().filter(|s| super::is_metadata_text(s)) {
            w.string_entry("subject", sub);
        }
        if super::scopes_join_unambiguously(&i.scopes) {
            w.entry("scopes", |w| w.joined(tag::VALUE_STRING, &i.scopes, " "));
        }
    }
    if !claims.is_empty() {
        w.entry("claims", |w| {
            w.message(tag::VALUE_STRUCT, |w| {
                for (k, v) in claims {
                    w.string_entry(k.as_ref(), v.as_ref());
                }
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::{ClaimFailure, FailureKind};
    use crate::respond::tests::{reader, responder};
    use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HttpResponse};
    use envoy_types::pb::google::protobuf::value::Kind;

    /// Envoy's access log prints dynamic metadata as it is: an identity
    /// value that is not plain text stays out of it (and of the headers).
    #[test]
    fn unsafe_identity_values_stay_out_of_the_metadata() {
        let identity = Identity {
            subject: Some("a\r\nforged access log line".into()),
            scopes: vec!["read_date post_echo".into()].into(),
            ..reader()
        };
        let r = render(&responder(), &Decision::Allow, Some(&identity), Some("date")).to_envoy();
        let meta = r.dynamic_metadata.expect("metadata");
        assert!(!meta.fields.contains_key("subject"), "{meta:?}");
        assert!(!meta.fields.contains_key("scopes"), "{meta:?}");
        assert!(matches!(meta.fields["client_id"].kind, Some(Kind::StringValue(ref v)) if v == "reader"));
        // Non-ASCII is text: kept (a metadata-keyed rate limit must see it).
        let identity = Identity {
            subject: Some("jos\u{e9}@example.com".into()),
            scopes: vec!["lecture_\u{e9}t\u{e9}".into()].into(),
            ..reader()
        };
        let r = render(&responder(), &Decision::Allow, Some(&identity), Some("date")).to_envoy();
        let meta = r.dynamic_metadata.expect("metadata");
        assert!(matches!(meta.fields["subject"].kind, Some(Kind::StringValue(ref v)) if v == "jos\u{e9}@example.com"));
        assert!(meta.fields.contains_key("scopes"), "{meta:?}");
    }

    #[test]
    fn allow_overwrites_every_identity_header() {
        let r = render(&responder(), &Decision::Allow, Some(&reader()), Some("date")).to_envoy();
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("ok response")
        };
        let set: Vec<_> = ok
            .headers
            .iter()
            .map(|h| {
                assert_eq!(h.append_action, HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
                let hv = h.header.as_ref().expect("header");
                (hv.key.as_str(), hv.value.as_str())
            })
            .collect();
        assert_eq!(
            set,
            vec![
                ("x-client-id", "reader"),
                ("x-scopes", "read_date x"),
                ("x-subject", "reader")
            ]
        );
        assert_eq!(
            ok.headers_to_remove,
            ["x-client-id", "x-scopes", "x-subject"]
                .iter()
                .flat_map(|n| crate::respond::header_twins(n))
                .collect::<Vec<_>>(),
            "only the underscore twins are removed when every header is set"
        );
        let meta = r.dynamic_metadata.expect("metadata");
        assert!(matches!(meta.fields["client_id"].kind, Some(Kind::StringValue(ref v)) if v == "reader"));
        assert!(matches!(meta.fields["rule_id"].kind, Some(Kind::StringValue(ref v)) if v == "date"));
    }

    /// Every field we write decodes as Envoy's own message: claims as a
    /// nested struct, the query parameter stripped, the deny's status
    /// message; a field number or type mirrored wrong fails here.
    #[test]
    fn the_answer_decodes_as_envoys_message() {
        use prost::Message as _;
        let mut cfg = crate::respond::headers::HeadersConfig::default();
        cfg.claims.insert("x-tenant".into(), "ext.tenant".into());
        let responder = Responder::new(cfg, "api".into());
        let identity = Identity {
            ext: Some(std::sync::Arc::new(serde_json::json!({"tenant": "acme"}))),
            ..reader()
        };
        let mut h = responder.upstream_headers(Some(&identity));
        h.query_remove.push("access_token".into());
        let bytes = allowed(&h, Some(&identity), Some("date")).encode_to_vec();
        let r =
            envoy_types::ext_authz::v3::pb::CheckResponse::decode(bytes.as_slice()).expect("Envoy's type decodes it");
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("ok response")
        };
        assert_eq!(ok.query_parameters_to_remove, ["access_token"]);
        assert!(ok.headers.iter().any(|h| h
            .header
            .as_ref()
            .is_some_and(|h| h.key == "x-tenant" && h.value == "acme")));
        assert!(ok
            .headers
            .iter()
            .all(|h| h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32));
        for twin in ["x_tenant", "x_client_id", "x_scopes", "x_subject"] {
            assert!(ok.headers_to_remove.iter().any(|r| r == twin), "{twin}");
        }
        let meta = r.dynamic_metadata.expect("metadata");
        assert_eq!(meta.fields.len(), 5, "{meta:?}");
        assert!(matches!(meta.fields["scopes"].kind, Some(Kind::StringValue(ref v)) if v == "read_date x"));
        let Some(Kind::StructValue(claims)) = &meta.fields["claims"].kind else {
            panic!("claims struct: {meta:?}")
        };
        assert!(matches!(claims.fields["x-tenant"].kind, Some(Kind::StringValue(ref v)) if v == "acme"));

        let deny = render(&responder, &Decision::Deny(DenyReason::NoRule), None, None).encode_to_vec();
        let r = envoy_types::ext_authz::v3::pb::CheckResponse::decode(deny.as_slice()).expect("decodes");
        let status = r.status.expect("status");
        assert_eq!((status.code, status.message.as_str()), (7, "no_rule"));
        assert!(r.dynamic_metadata.is_none());
    }

    /// The same parts built with Envoy's own message types: what every
    /// answer we write must decode to, and (prost writes canonically; a
    /// map's entry order does not change the length) as many bytes.
    fn envoys_own(
        responder: &Responder,
        decision: &Decision,
        identity: Option<&Identity>,
        rule_id: Option<&str>,
    ) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        use envoy_types::ext_authz::v3::pb::{
            CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption, HttpStatus, OkHttpResponse,
        };
        use envoy_types::pb::google::protobuf::{Struct, Value};
        let header = |(k, v): (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into_owned(),
                value: v.into_owned(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        };
        let text = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_owned())),
        };
        match decision {
            Decision::Allow => {
                let h = responder.upstream_headers(identity);
                let mut meta = std::collections::HashMap::new();
                if let Some(id) = rule_id {
                    meta.insert("rule_id".to_owned(), text(id));
                }
                if let Some(i) = identity {
                    let safe = |v: &&std::sync::Arc<str>| crate::respond::is_metadata_text(v);
                    if let Some(c) = i.client_id.as_ref().filter(safe) {
                        meta.insert("client_id".to_owned(), text(c));
                    }
                    if let Some(s) = i.subject.as_ref().filter(safe) {
                        meta.insert("subject".to_owned(), text(s));
                    }
                    if crate::respond::scopes_join_unambiguously(&i.scopes) {
                        meta.insert("scopes".to_owned(), text(&i.scopes.join(" ")));
                    }
                }
                if !h.claims.is_empty() {
                    let fields = h.claims.iter().map(|(k, v)| (k.to_string(), text(v))).collect();
                    meta.insert(
                        "claims".to_owned(),
                        Value {
                            kind: Some(Kind::StructValue(Struct { fields })),
                        },
                    );
                }
                CheckResponse {
                    status: Some(Default::default()),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: h.set.into_iter().map(header).collect(),
                        headers_to_remove: h.remove.into_iter().map(Into::into).collect(),
                        query_parameters_to_remove: h.query_remove.into_iter().map(Into::into).collect(),
                        ..Default::default()
                    })),
                    dynamic_metadata: Some(Struct { fields: meta }),
                }
            }
            Decision::Deny(reason) => CheckResponse {
                status: Some(envoy_types::pb::google::rpc::Status {
                    code: grpc_code(reason) as i32,
                    message: reason.label().to_owned(),
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(reason.http_status()),
                    }),
                    headers: responder
                        .deny_headers(reason)
                        .into_iter()
                        .map(|(k, v)| header((k.into(), v.into())))
                        .collect(),
                    body: Responder::problem_body(reason),
                })),
                dynamic_metadata: None,
            },
        }
    }

    #[test]
    fn every_answer_is_what_envoys_own_types_would_send() {
        use prost::Message as _;
        let mut cfg = crate::respond::headers::HeadersConfig::default();
        cfg.claims.insert("x-tenant".into(), "ext.tenant".into());
        cfg.claims.insert("x-groups".into(), "ext.groups".into());
        let with_claims = Responder::new(cfg, "api".into())
            .with_resource_metadata(Some("https://api.example/.well-known/oauth-protected-resource".into()));
        let rich = Identity {
            ext: Some(std::sync::Arc::new(
                serde_json::json!({"tenant": "acme", "groups": ["a", "b"]}),
            )),
            ..reader()
        };
        let no_scopes = Identity {
            client_id: Some("c".into()),
            ..Default::default()
        };
        let long = Identity {
            client_id: Some("c".repeat(300).into()),
            subject: Some("s".repeat(20_000).into()),
            ..reader()
        };
        let allows: [(&Responder, Option<&Identity>, Option<&str>); 6] = [
            (&with_claims, Some(&rich), Some("date")),
            (&with_claims, None, Some("public")),
            (&with_claims, Some(&no_scopes), None),
            (&with_claims, Some(&long), Some("")),
            (&responder(), Some(&reader()), Some("date")),
            (&responder(), None, None),
        ];
        let reasons = [
            DenyReason::MissingToken,
            DenyReason::InvalidToken(ClaimFailure::Inactive),
            DenyReason::InsufficientScope(vec!["read_date".into(), "x".into()]),
            DenyReason::ClaimMismatch("ext.tenant".into()),
            DenyReason::NoRule,
            DenyReason::RouteMisconfigured("r".into()),
            DenyReason::Unavailable(FailureKind::Timeout),
            DenyReason::InvalidRequest(crate::extract::refusal::CredentialProblem::EmptyToken),
        ];
        let cases = allows.iter().map(|&(r, i, id)| (r, Decision::Allow, i, id)).chain(
            reasons
                .into_iter()
                .map(|d| (&with_claims, Decision::Deny(d), None, None)),
        );
        for (responder, decision, identity, rule_id) in cases {
            let ours = render(responder, &decision, identity, rule_id);
            let theirs = envoys_own(responder, &decision, identity, rule_id);
            assert_eq!(ours.to_envoy(), theirs, "{decision:?} {identity:?}");
            assert_eq!(
                ours.as_bytes().len(),
                theirs.encoded_len(),
                "{decision:?}: canonical length"
            );
        }
    }

    /// An allow with nothing to say (a public route: no identity) is still
    /// an OK answer with an `ok_response` and (empty) metadata, and still
    /// removes every identity header a client could have sent.
    #[test]
    fn an_empty_allow_keeps_its_ok_response() {
        let r = render(&responder(), &Decision::Allow, None, None).to_envoy();
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("ok response: {r:?}")
        };
        assert!(ok.headers.is_empty());
        for name in ["x-client-id", "x-scopes", "x-subject", "x_client_id"] {
            assert!(ok.headers_to_remove.iter().any(|r| r == name), "{name}");
        }
        assert_eq!(r.dynamic_metadata.map(|m| m.fields.len()), Some(0));
    }

    fn denied(reason: DenyReason) -> (i32, i32, Vec<(String, String)>, serde_json::Value) {
        let r = render(&responder(), &Decision::Deny(reason), None, None).to_envoy();
        let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
            panic!("denied response")
        };
        let headers = d
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
            .collect();
        let body = serde_json::from_str(&d.body).expect("problem json");
        (
            r.status.map_or(0, |s| s.code),
            d.status.map_or(0, |s| s.code),
            headers,
            body,
        )
    }

    fn www(headers: &[(String, String)]) -> Option<&str> {
        headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn deny_statuses_and_challenges() {
        let (grpc, http, h, body) = denied(DenyReason::MissingToken);
        assert_eq!((grpc, http), (16, 401));
        assert_eq!(www(&h), Some("Bearer realm=\"api\""));
        assert_eq!(body["status"], 401);
        assert_eq!(body["type"], "urn:hydra-authz:problem:missing_token");

        let (grpc, http, h, _) = denied(DenyReason::InvalidToken(ClaimFailure::Inactive));
        assert_eq!((grpc, http), (16, 401));
        assert_eq!(
            www(&h),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"inactive\"")
        );

        let (grpc, http, h, _) = denied(DenyReason::InsufficientScope(vec!["read_date".into()]));
        assert_eq!((grpc, http), (7, 403));
        assert_eq!(
            www(&h),
            Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read_date\"")
        );

        let (grpc, http, h, _) = denied(DenyReason::InvalidRequest(
            crate::extract::refusal::CredentialProblem::EmptyToken,
        ));
        assert_eq!((grpc, http), (3, 400));
        assert_eq!(www(&h), Some("Bearer realm=\"api\", error=\"invalid_request\""));

        let (grpc, http, h, _) = denied(DenyReason::NoRule);
        assert_eq!((grpc, http, www(&h)), (7, 403, None));
        let (grpc, http, h, body) = denied(DenyReason::Unavailable(FailureKind::Timeout));
        assert_eq!((grpc, http, www(&h)), (14, 503, None));
        assert_eq!(body["title"], "Authorization unavailable");
        assert!(h.contains(&("content-type".into(), "application/problem+json".into())));
    }
}
