#!/usr/bin/env bash
# Build (once per machine) the pinned Ory Hydra from tests/hydra/go.mod and
# print the binary's absolute path; see scripts/install-ory.sh.
#
# Usage:  HYDRA="$(scripts/install-hydra.sh)"
exec "$(dirname "${BASH_SOURCE[0]}")/install-ory.sh" hydra "$@"
