#!/usr/bin/env bash
# Build (once per machine) the pinned Ory Oathkeeper from tests/oathkeeper/go.mod and
# print the binary's absolute path; see scripts/install-ory.sh.
#
# Usage:  OATHKEEPER="$(scripts/install-oathkeeper.sh)"
exec "$(dirname "${BASH_SOURCE[0]}")/install-ory.sh" oathkeeper "$@"
