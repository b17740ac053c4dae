#!/usr/bin/env bash
# Makes sure protoc and protobuf's well-known .proto files are installed (Debian/Ubuntu:
# apt): building redshard needs them, for the gRPC code the etcd client crate generates at
# build time (the fleet's coordination; compiled into every build).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
scripts/apt-install.sh "protoc (to build redshard's etcd client)" "${missing[@]}"
