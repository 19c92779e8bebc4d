//! An [`Outcome`] as Envoy's `CheckResponse`: the gRPC status, identity
//! headers with overwrite semantics, `headers_to_remove`, the denied HTTP
//! response and dynamic metadata for Envoy's access log.

use super::{Responder, UpstreamHeaders};
use crate::authn::Identity;
use crate::decision::verdict::{Decision, DenyReason};
use crate::decision::Outcome;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;

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
        status: Some(rpc::Status {
            code: tonic::Code::Ok as i32,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: h
                .set
                .into_iter()
                .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                .collect(),
            headers_to_remove: h.remove,
            query_parameters_to_remove: h.query_remove,
            ..Default::default()
        })),
        dynamic_metadata: Some(metadata),
    }
}

fn denied(responder: &Responder, reason: &DenyReason) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
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
                .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
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

fn header(key: String, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn dynamic_metadata(identity: Option<&Identity>, rule_id: Option<&str>, claims: &[(String, String)]) -> Struct {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_owned())),
    };
    // Straight into the map prost encodes (at most five entries).
    let mut fields = std::collections::HashMap::with_capacity(5);
    if let Some(id) = rule_id {
        fields.insert("rule_id".to_owned(), s(id));
    }
    if let Some(i) = identity {
        if let Some(c) = &i.client_id {
            fields.insert("client_id".to_owned(), s(c));
        }
        if let Some(sub) = &i.subject {
            fields.insert("subject".to_owned(), s(sub));
        }
        fields.insert("scopes".to_owned(), s(&i.scopes.join(" ")));
    }
    if !claims.is_empty() {
        // The claim headers' values, keyed by header name, for access logs
        // and later filters.
        let claims = Struct {
            fields: claims.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
        };
        fields.insert(
            "claims".to_owned(),
            Value {
                kind: Some(Kind::StructValue(claims)),
            },
        );
    }
    Struct { fields }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::{ClaimFailure, FailureKind};
    use crate::respond::tests::{reader, responder};

    #[test]
    fn allow_overwrites_every_identity_header() {
        let r = render(&responder(), &Decision::Allow, Some(&reader()), Some("date"));
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

    fn denied(reason: DenyReason) -> (i32, i32, Vec<(String, String)>, serde_json::Value) {
        let r = render(&responder(), &Decision::Deny(reason), None, None);
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
