//! An [`Outcome`] as Envoy's `CheckResponse`: the gRPC status, identity
//! headers with overwrite semantics, `headers_to_remove`, the denied HTTP
//! response and dynamic metadata for Envoy's access log.

use super::envoy_wire::{
    CheckResponse, DeniedHttpResponse, Field, HeaderValueOption, HttpResponse, HttpStatus, Kind, OkHttpResponse,
    Status, Struct, Value,
};
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
            allowed(h, identity, o.rule_id.as_deref())
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
        Decision::Allow => allowed(responder.upstream_headers(identity), identity, rule_id),
        Decision::Deny(reason) => denied(responder, reason),
    }
}

fn allowed(h: UpstreamHeaders, identity: Option<&Identity>, rule_id: Option<&str>) -> CheckResponse {
    let metadata = dynamic_metadata(identity, rule_id, &h.claims);
    CheckResponse {
        status: Some(Status {
            code: tonic::Code::Ok as i32,
            message: String::new(),
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: h
                .set
                .into_iter()
                .map(|(k, v)| HeaderValueOption::overwrite(k, v))
                .collect(),
            headers_to_remove: h.remove,
            query_parameters_to_remove: h.query_remove,
        })),
        dynamic_metadata: Some(metadata),
    }
}

fn denied(responder: &Responder, reason: &DenyReason) -> CheckResponse {
    CheckResponse {
        status: Some(Status {
            code: grpc_code(reason) as i32,
            message: reason.label().to_owned(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(reason.http_status()),
            }),
            headers: responder
                .deny_headers(reason)
                .into_iter()
                .map(|(k, v)| HeaderValueOption::overwrite(k, v))
                .collect(),
            body: Responder::problem_body(reason),
        })),
        dynamic_metadata: None,
    }
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

fn dynamic_metadata(identity: Option<&Identity>, rule_id: Option<&str>, claims: &[(String, String)]) -> Struct {
    let field = |key: &str, value: Value| Field {
        key: key.to_owned(),
        value: Some(value),
    };
    let text = |v: &str| Value::string(v.to_owned());
    let mut fields = Vec::with_capacity(5);
    if let Some(id) = rule_id {
        fields.push(field("rule_id", text(id)));
    }
    if let Some(i) = identity {
        if let Some(c) = &i.client_id {
            fields.push(field("client_id", text(c)));
        }
        if let Some(sub) = &i.subject {
            fields.push(field("subject", text(sub)));
        }
        fields.push(field("scopes", Value::string(i.scopes.join(" "))));
    }
    if !claims.is_empty() {
        // The claim headers' values, keyed by header name, for access logs
        // and later filters.
        let claims = Struct {
            fields: claims.iter().map(|(k, v)| field(k, text(v))).collect(),
        };
        fields.push(field(
            "claims",
            Value {
                kind: Some(Kind::StructValue(claims)),
            },
        ));
    }
    Struct { fields }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::{ClaimFailure, FailureKind};
    use crate::respond::tests::{reader, responder};
    use envoy_types::ext_authz::v3::pb::{HeaderAppendAction, HttpResponse};
    use envoy_types::pb::google::protobuf::value::Kind;

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
        let bytes = allowed(h, Some(&identity), Some("date")).encode_to_vec();
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
