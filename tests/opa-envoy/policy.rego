# The seed API's two rules for OPA-Envoy (bench-peers.sh), written the way
# OPA's Envoy tutorial does token checks: the bearer token is introspected
# at Hydra with http.send; the route names the scope it needs.
#   GET  /date  needs read_date      POST /echo  needs post_echo
# Allow: the identity headers hydra-authz sets (x-client-id, x-subject,
# x-scopes). Deny: 401 without an active, unexpired access token (Hydra also
# calls refresh tokens active; token_use tells them apart, as hydra-authz
# checks), 403 without the scope, 503 when Hydra does not answer 200.
# Environment: HYDRA_INTROSPECT_URL; HYDRA_INTROSPECT_CACHE_S (0 = every
# check introspects; N = http.send keeps Hydra's answer N seconds, and the
# exp check below still ends a cached token's life on time).
package envoy.authz

import rego.v1

env := opa.runtime().env

cache_seconds := to_number(object.get(env, "HYDRA_INTROSPECT_CACHE_S", "0"))

required_scope := {"GET": {"date": "read_date"}, "POST": {"echo": "post_echo"}}

authorization := object.get(input.attributes.request.http.headers, "authorization", "")

token := t if {
	parts := split(authorization, " ")
	count(parts) == 2
	lower(parts[0]) == "bearer"
	t := parts[1]
	t != ""
}

response := http.send({
	"method": "POST",
	"url": env.HYDRA_INTROSPECT_URL,
	"headers": {"content-type": "application/x-www-form-urlencoded"},
	"raw_body": concat("", ["token=", urlquery.encode(token)]),
	"force_cache": cache_seconds > 0,
	"force_cache_duration_seconds": cache_seconds,
	"timeout": "2s",
})

unavailable if response.status_code != 200

introspection := response.body if response.status_code == 200

active if {
	introspection.active == true
	introspection.token_use == "access_token"
	time.now_ns() < introspection.exp * 1000000000
}

scope_needed := required_scope[input.attributes.request.http.method][concat("/", input.parsed_path)]

granted if scope_needed in split(object.get(introspection, "scope", ""), " ")

default result := {"allowed": false, "http_status": 401, "headers": {"www-authenticate": "Bearer"}}

result := {
	"allowed": true,
	"headers": {
		"x-client-id": object.get(introspection, "client_id", ""),
		"x-subject": object.get(introspection, "sub", ""),
		"x-scopes": object.get(introspection, "scope", ""),
	},
} if {
	active
	granted
}

result := {"allowed": false, "http_status": 403} if {
	active
	not granted
}

result := {"allowed": false, "http_status": 503} if unavailable
