# Unit tests of policy.rego (http.send and the environment mocked);
# scripts/bench-peers.sh runs them with `opa test tests/opa-envoy/` before its rows.
package envoy.authz_test

import rego.v1
import data.envoy.authz

req(method, path, auth) := {"attributes": {"request": {"http": {"method": method, "headers": {"authorization": auth}}}}, "parsed_path": [path]}

ok_body := {"active": true, "token_use": "access_token", "exp": 4102444800, "scope": "read_date", "client_id": "reader", "sub": "reader"}

send_ok(_) := {"status_code": 200, "body": ok_body}
send_refresh(_) := {"status_code": 200, "body": object.union(ok_body, {"token_use": "refresh_token"})}
send_expired(_) := {"status_code": 200, "body": object.union(ok_body, {"exp": 1})}
send_inactive(_) := {"status_code": 200, "body": {"active": false}}
send_down(_) := {"status_code": 0}

test_allow if {
	r := authz.result with input as req("GET", "date", "Bearer t") with http.send as send_ok with opa.runtime as {"env": {"HYDRA_INTROSPECT_URL": "x"}}
	r.allowed == true
	r.headers["x-client-id"] == "reader"
}
test_scope if {
	r := authz.result with input as req("POST", "echo", "Bearer t") with http.send as send_ok with opa.runtime as {"env": {"HYDRA_INTROSPECT_URL": "x"}}
	r.http_status == 403
}
test_refresh if {
	r := authz.result with input as req("GET", "date", "Bearer t") with http.send as send_refresh with opa.runtime as {"env": {"HYDRA_INTROSPECT_URL": "x"}}
	r.http_status == 401
}
test_expired if {
	r := authz.result with input as req("GET", "date", "Bearer t") with http.send as send_expired with opa.runtime as {"env": {"HYDRA_INTROSPECT_URL": "x"}}
	r.http_status == 401
}
test_inactive if {
	r := authz.result with input as req("GET", "date", "Bearer t") with http.send as send_inactive with opa.runtime as {"env": {"HYDRA_INTROSPECT_URL": "x"}}
	r.http_status == 401
}
test_down if {
	r := authz.result with input as req("GET", "date", "Bearer t") with http.send as send_down with opa.runtime as {"env": {"HYDRA_INTROSPECT_URL": "x"}}
	r.http_status == 503
}
test_no_token if {
	r := authz.result with input as req("GET", "date", "") with http.send as send_ok with opa.runtime as {"env": {"HYDRA_INTROSPECT_URL": "x"}}
	r.http_status == 401
}
